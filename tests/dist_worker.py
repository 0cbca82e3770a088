"""One process of a multi-process training run, for tests/test_distributed.py: `torchrun --standalone
--nproc_per_node W tests/dist_worker.py OUT_DIR [options]`, or `python tests/dist_worker.py` for the one-process
reference. It trains a tiny GPT on a synthetic token stream whose global batch is `--batch` x the number of processes
(`RankShard` gives each process its rows) and leaves `final.pt` (weights) and `metrics.jsonl` in OUT_DIR."""
import argparse
import os
import sys

import torch

from tinyllm.core import TinyLLMError
from tinyllm.data import RandomBatches
from tinyllm.distributed import RankShard, full_model_state, init_distributed, shut_down
from tinyllm.model import GPT, GPTConfig
from tinyllm.trainer import Trainer, TrainConfig, default_loss
from helpers import learnable_stream

TOKENS = learnable_stream()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("out_dir")
    ap.add_argument("--batch", type=int, default=4, help="rows per process per micro-batch")
    ap.add_argument("--accum", type=int, default=2)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--stop-after", type=int, default=None)
    ap.add_argument("--resume", default=None)
    ap.add_argument("--dropout", type=float, default=0.0)
    ap.add_argument("--die-at", type=int, default=None, help="rank 1 exits at this training forward pass")
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--parallel", default="ddp", help="ddp or fsdp (FSDP2, sharded checkpoints)")
    ap.add_argument("--optimizer", default="adamw")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    try:
        rank, world = init_distributed(args.timeout, "cpu")
        torch.manual_seed(0)                                # the same initial weights in every process
        model = GPT(GPTConfig.from_preset("tiny", dropout=args.dropout))
        torch.manual_seed(1000 + rank)                      # each process its own dropout masks
        global_batch = RandomBatches(TOKENS, 32, args.batch * world, seed=0)
        batches = RankShard(global_batch, rank, world) if world > 1 else global_batch
        val = RandomBatches(TOKENS[-3000:], 32, 4, seed=1)
        cfg = TrainConfig(batch_size=args.batch, grad_accum=args.accum, max_steps=args.steps, lr=1e-3, min_lr=1e-4,
                          warmup_steps=1, eval_interval=2, eval_steps=2, checkpoint_interval=2, log_interval=1,
                          device="cpu", dtype="float32", compile=False, progress=False, peak_flops=1e12,
                          dist_timeout=args.timeout, parallel=args.parallel, optimizer=args.optimizer)
        calls = [0]
        def loss_fn(m, batch):
            calls[0] += 1
            if args.die_at is not None and rank == 1 and calls[0] == args.die_at: os._exit(17)
            return default_loss(m, batch)
        trainer = Trainer(model, batches, cfg, val_batches=[next(val) for _ in range(2)], out_dir=args.out_dir,
                          loss_fn=loss_fn)
        trainer.fit(resume=args.resume, stop_after=args.stop_after)
        weights = full_model_state(model) if trainer.sharded else model.state_dict()   # FSDP: gathered on rank 0
        if rank == 0: torch.save(weights, os.path.join(args.out_dir, "final.pt"))
        shut_down()
        return 0
    except TinyLLMError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
