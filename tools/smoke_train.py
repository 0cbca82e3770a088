"""A few training steps of a run configuration's model on its prepared tokens, then a sample: the end-to-end smoke
test that `bash run.sh` ends with until chapter 3's trainer (and `tinyllm train`) exists.

    python tools/smoke_train.py configs/cpu-smoke.toml [key=value ...] [--steps N]

It uses only what the chapters so far export: the run configuration (tinyllm.cli), the token files and batches
(tinyllm.data), the model with its default training step (tinyllm.model), and the tokenizer (tinyllm.bpe). No
schedule, checkpoints or logging here: those are the trainer's job.
"""
import argparse
import sys
import time

import torch

from tinyllm.bpe import Tokenizer
from tinyllm.cli import load_run_config
from tinyllm.config import format_config
from tinyllm.core import TinyLLMError
from tinyllm.data import RandomBatches, StreamBatches, load_tokens
from tinyllm.model import GPT, make_train_step


@torch.no_grad()
def mean_loss(model, batches, n):
    model.eval()
    losses = [model(x, y)[1].item() for x, y in (next(batches) for _ in range(n))]
    model.train()
    return sum(losses) / len(losses)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config")
    ap.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    ap.add_argument("--steps", type=int, default=None, help="training steps (default: the config's train.max_steps)")
    args = ap.parse_args(argv)
    cfg = load_run_config(args.config, args.overrides)
    print(format_config(cfg))
    torch.manual_seed(cfg.seed)
    tok = Tokenizer.load(cfg.data.tokenizer)
    train = load_tokens(cfg.data.tokens, "train", tokenizer=tok)
    valid = load_tokens(cfg.data.tokens, "valid", tokenizer=tok)
    if tok.vocab_size != cfg.model.vocab_size:
        raise TinyLLMError(f"the tokenizer in {cfg.data.tokenizer} has {tok.vocab_size} ids but model.vocab_size is "
                           f"{cfg.model.vocab_size}: pass model.vocab_size={tok.vocab_size}")
    model = GPT(cfg.model)
    t = cfg.train
    opt = model.configure_optimizers(t.weight_decay, t.lr, t.betas, "cpu")
    step = make_train_step(model, opt, grad_clip=t.grad_clip, compile=t.compile,
                                 amp_dtype=None if t.dtype == "float32" else getattr(torch, t.dtype))
    Sampler = RandomBatches if cfg.data.packing == "random" else StreamBatches
    batches = Sampler(train, cfg.model.block_size, t.batch_size, seed=cfg.seed)
    val = lambda: mean_loss(model, RandomBatches(valid, cfg.model.block_size, t.batch_size, seed=0), t.eval_steps)
    print(f"model: {model.num_params() / 1e6:.2f}M non-embedding parameters; train {len(train):,} tokens, "
          f"valid {len(valid):,}")
    print(f"valid loss before training: {val():.3f} (ln {tok.vocab_size} = {torch.tensor(tok.vocab_size).log():.3f})")
    steps, t0 = args.steps or t.max_steps, time.perf_counter()
    for i in range(1, steps + 1):
        x, y = next(batches)
        loss = step(x, y).item()
        if i % t.log_interval == 0 or i == steps:
            tps = i * t.batch_size * cfg.model.block_size / (time.perf_counter() - t0)
            print(f"step {i:4d}  loss {loss:.3f}  {tps:,.0f} tokens/s")
    print(f"valid loss after {steps} steps: {val():.3f}")
    prompt = torch.tensor([tok.encode("Once upon a time")])
    out = model.generate(prompt, 40, temperature=0.8, top_k=50, generator=torch.Generator().manual_seed(0))
    print("sample:", repr(tok.decode(out[0].tolist())))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except TinyLLMError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
