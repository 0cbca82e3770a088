"""Decoding speed: tokens/s of tinyllm.sampling's decoders, with and without the KV cache, and speculative decoding.

    python bench/sampling.py            # 256 new tokens, batch 1 and 8; speculative decoding if runs/ch04 exists
    python bench/sampling.py --quick    # 64 new tokens
    python bench/sampling.py --all      # also every decoder without the KV cache (several minutes)
    python bench/sampling.py --target CKPT --draft CKPT    # speculative decoding with these checkpoints

The model is the seed preset (6 layers, d_model 256, 8 heads, vocabulary 8,192) with block_size 512 so that a prompt
plus 256 new tokens fit, randomly initialised (speed does not depend on the weights; eot is disabled so every run
produces exactly the requested number of tokens). Each figure is the best of `--repeat` runs: the machine is shared,
and a slow run is someone else's load. Without the cache every step re-encodes the whole prefix, so the work grows
quadratically with the length; with it each step feeds one token.
Speculative decoding needs a draft that agrees with the target, i.e. trained models: by default the ones that
nbs/04g_decoding_study.ipynb trains into runs/ch04 (target: 4 layers, d 128; draft: 1 layer, d 64), prompt "Once upon a
time", temperature 1; speed-up = (target-only sampling time) / (speculative time), same number of new tokens.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from tinyllm.decode import beam_search, contrastive_search
from tinyllm.inference import load_checkpoint
from tinyllm.model import GPT, GPTConfig
from tinyllm.sampling import TopP, greedy, sample
from tinyllm.speculative import SpeculativeStats, speculative_decode


def best_time(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="64 new tokens instead of 256, one repeat")
    ap.add_argument("--new", type=int, default=256, help="new tokens per run (default 256)")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--target", help="target checkpoint for speculative decoding (default runs/ch04/target)")
    ap.add_argument("--draft", help="draft checkpoint (default runs/ch04/draft)")
    ap.add_argument("--gamma", type=int, default=4)
    ap.add_argument("--all", action="store_true", help="also time every decoder without the cache (slow: quadratic)")
    args = ap.parse_args()
    new, repeat = (64, 1) if args.quick else (args.new, args.repeat)
    torch.manual_seed(0)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model = GPT(GPTConfig.from_preset("seed", block_size=512)).eval()
    print(f"seed preset, block 512, {model.num_params() / 1e6:.1f}M params; {new} new tokens after an 8-token prompt; "
          f"best of {repeat}; {torch.get_num_threads()} threads")
    print(f"{'decoder':<28}{'batch':>6}{'cache':>7}{'tokens/s':>11}{'seconds':>9}")
    rows = {}
    g = lambda: torch.Generator().manual_seed(0)
    for batch in (1, 8):
        prompt = torch.randint(0, 8192, (batch, 8), generator=g())
        greedy(model, prompt, 8)                                   # warm-up: first calls allocate and pick kernels
        greedy(model, prompt, 8, use_cache=False)
        cases = [("greedy", lambda c, x=prompt: greedy(model, x, new, use_cache=c)),
                 ("multinomial (top-p 0.9)", lambda c, x=prompt: sample(model, x, new, [TopP(0.9)], g(), use_cache=c))]
        if batch == 1:
            cases += [("beam search (4 beams)", lambda c, x=prompt: beam_search(model, x, new, 4, use_cache=c)),
                      ("contrastive (k=4, a=0.6)",
                       lambda c, x=prompt: contrastive_search(model, x, new, 0.6, 4, use_cache=c))]
        for name, fn in cases:
            # without the cache the work is quadratic: by default only greedy (multinomial's forward passes are the same)
            for cache in (True, False) if (name == "greedy" or args.all) else (True,):
                sec = best_time(lambda f=fn, c=cache: f(c), repeat if cache else 1)
                rows[(name, batch, cache)] = sec
                print(f"{name:<28}{batch:>6}{'yes' if cache else 'no':>7}{batch * new / sec:>11.1f}{sec:>9.2f}", flush=True)
    print("\nKV-cache speed-up (time without / time with):")
    for (name, batch, cache), sec in rows.items():
        if cache and (name, batch, False) in rows:
            print(f"  {name:<28} batch {batch}: {rows[(name, batch, False)] / sec:.1f}x")
    speculative(args, new, repeat)


def speculative(args, new, repeat):
    root = Path(__file__).resolve().parents[1] / "runs" / "ch04"
    tp, dp = args.target or root / "target", args.draft or root / "draft"
    if not Path(tp).exists() or not Path(dp).exists():
        print(f"\nspeculative decoding: skipped (no trained target/draft at {tp} and {dp}: run nbs/04g_decoding_study.ipynb "
              "with its slow cells, or pass --target and --draft)")
        return
    target, tok, _ = load_checkpoint(tp)
    draft, _, _ = load_checkpoint(dp)
    n = min(new, target.config.block_size - 8)
    x = torch.tensor([tok.encode("Once upon a time")])
    g = lambda: torch.Generator().manual_seed(0)
    base = best_time(lambda: sample(target, x, n, [], g()), repeat)
    print(f"\nspeculative decoding, {n} new tokens, target {target.num_params() / 1e6:.2f}M / draft "
          f"{draft.num_params() / 1e6:.2f}M non-embedding params, batch 1, KV caches:")
    print(f"  target alone: {n / base:.1f} tokens/s")
    draft_only = best_time(lambda: sample(draft, x, n, [], g()), repeat)
    print(f"  draft alone:  {n / draft_only:.1f} tokens/s")
    for gamma in sorted({2, args.gamma, 6}):
        st = SpeculativeStats()
        sec = best_time(lambda k=gamma, s=st: speculative_decode(target, draft, x, n, k, generator=g(), stats=s), repeat)
        print(f"  gamma {gamma}: {n / sec:.1f} tokens/s, speed-up {base / sec:.2f}x, acceptance "
              f"{st.acceptance_rate:.2f}, {st.tokens_per_round:.2f} tokens per target pass")


if __name__ == "__main__":
    main()
