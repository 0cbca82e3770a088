"""What the training loop costs on top of the bare training step, and the default path against nanoGPT, in one process.

    python bench/trainer.py           # full run: 5 rounds x 3 steps per variant (about 3-4 minutes here)
    python bench/trainer.py --quick   # 3 rounds x 2 steps (a minute or two)

Seed preset (d_model 256, 6 layers, 8 heads, block 256) with an 8,192-token vocabulary, batch 16, on the CPU. Variants:
  trainer              `Trainer.train_step()` plus what `Trainer.fit` adds per step: the record written to
                       `metrics.jsonl` (the loggers `fit` opens, in a temporary out_dir), the (disabled) progress bar.
                       It draws its own batches from a `RandomBatches` sampler over random uint16 tokens in memory,
                       sets the scheduled lr, clips the gradient norm (TrainConfig.grad_clip = 1.0), calls
                       `.item()` on loss and norm, and computes tokens/s and MFU: all of it is timed.
  bare default step    `make_train_step(model, adamw(...)(model))` with its defaults (bf16 autocast, eager on CPU,
                       no clipping): the step the trainer adds bookkeeping to, on precomputed batches.
  bare step + clip     the same with `grad_clip=1.0`: the same arithmetic as the trainer's step, minus bookkeeping.
  bare step, compiled  the default step with `compile=True` (`train.compile = true`; on a CPU the default is eager,
                       which starts at once where compiling takes tens of seconds).
  nanoGPT ...          karpathy/nanoGPT's own model.py, unmodified, imported from ../shared/reference/nanogpt (or
                       $NANOGPT_DIR), stepped as its train.py does (forward, backward, clip_grad_norm_ 1.0, AdamW from
                       its configure_optimizers, zero_grad), under bf16 autocast, compiled and eager. Note: upstream
                       train.py itself uses no autocast on a CPU (float32); `--nano-fp32` adds that compiled row too.
Variants run interleaved (round-robin: one step of each in turn, `--steps` turns per round, the order reversed every
other round) because the machine is shared; we report each one's median and best step. Warm-up (the first two steps,
including compilation) is timed separately. MFU = `GPT.flops_per_token()` x tokens/s over the best bf16 2048^3 GEMM
rate measured between rounds.
On a CPU the trainer makes glibc keep freed memory (`tinyllm.step.keep_freed_memory`: a step's 64 MB buffers are reused
instead of being mapped and zeroed anew at every step); that setting is process-wide, so the bench applies it before
any variant runs and every variant, nanoGPT's included, gets it (`--malloc-default` leaves glibc's defaults for all).
Goals: trainer overhead (median trainer step / median bare default step - 1) < 3%; default path >= 1.3x nanoGPT
compiled bf16 by median tokens/s.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

from tinyllm.data import RandomBatches
from tinyllm.model import GPT, GPTConfig
from tinyllm.optimizers import adamw
from tinyllm.perf import gemm_peak_flops, machine, mfu
from tinyllm.trainer import TrainConfig, Trainer, keep_freed_memory, make_train_step

ROOT = Path(__file__).resolve().parent.parent
NANOGPT_DIR = Path(os.environ.get("NANOGPT_DIR", ROOT.parent / "shared" / "reference" / "nanogpt"))
LR = 3e-4
BUDGET = ("attention", "MLP", "head + loss", "optimizer", "rest")


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def load_nanogpt():
    "nanoGPT's model.py as a module, or None (with the reason) when it is not there."
    path = NANOGPT_DIR / "model.py"
    if not path.is_file(): return None, f"{path} not found (set NANOGPT_DIR to a folder holding nanoGPT's model.py)"
    spec = importlib.util.spec_from_file_location("nanogpt_model", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod                     # dataclasses look their module up in sys.modules
    spec.loader.exec_module(mod)
    return mod, str(path)


def nanogpt_step(mod, cfg: GPTConfig, bf16: bool, compiled: bool):
    "A `step(x, y)` doing what nanoGPT's train.py does per iteration (GradScaler disabled: not float16)."
    torch.manual_seed(0)
    with contextlib.redirect_stdout(io.StringIO()):      # it prints parameter counts and "using fused AdamW"
        model = mod.GPT(mod.GPTConfig(block_size=cfg.block_size, vocab_size=cfg.vocab_size, n_layer=cfg.n_layer,
                                      n_head=cfg.n_head, n_embd=cfg.n_embd, dropout=0.0, bias=True))
        opt = model.configure_optimizers(weight_decay=0.1, learning_rate=LR, betas=(0.9, 0.95), device_type="cpu")
    fwd = torch.compile(model) if compiled else model
    ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext

    def step(x, y):
        with ctx(): _, loss = fwd(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    step.model = model
    return step


def trainer_step(cfg: GPTConfig, tokens: np.ndarray, batch: int, out_dir: Path):
    "A no-argument callable: one `Trainer.train_step()` plus the per-step work `Trainer.fit` adds around it."
    from tqdm.auto import tqdm
    torch.manual_seed(0)
    tcfg = TrainConfig(batch_size=batch, device="cpu", dtype="auto", compile="auto", max_steps=1_000_000,
                       warmup_steps=10, lr=LR, progress=False)
    tr = Trainer(GPT(cfg), RandomBatches(tokens, cfg.block_size, batch, seed=0), tcfg, out_dir=out_dir,
                 print_fn=lambda s: None)
    loggers = tr._open_out_dir(None)                  # exactly what fit() opens: metrics.jsonl (no tb/wandb here)
    tr._setup_mfu()
    bar = tqdm(total=tcfg.max_steps, unit="step", disable=True)

    def step():
        rec = tr.train_step()
        for lg in loggers: lg.log(rec)
        bar.update(1)
        bar.set_postfix(loss=f"{rec['loss']:.3f}", refresh=False)
    step.trainer, step.loggers = tr, loggers
    return step


class TimeBudget:
    """Where an eager training step's time goes, from hooks on the model and the optimizer: the forward and backward
    of every block's attention and MLP module; the output head with the loss (from `lm_head`'s forward to the model's
    output, and from the loss's gradient to `lm_head`'s input gradient); the optimizer's step. The rest of the step
    (embeddings, norms, residual adds, gradient clipping, zero_grad, autograd's and Python's own work) is `rest`.
    Both nanoGPT's GPT and ours name these modules alike. Hooks do not survive torch.compile: eager steps only."""
    def __init__(self, model: torch.nn.Module):
        self.acc, self.t0, self.on = defaultdict(float), {}, False
        for block in model.transformer.h:
            for name, mod in (("attention", block.attn), ("MLP", block.mlp)):
                key = id(mod)
                mod.register_forward_pre_hook(lambda m, a, k=key: self._start((k, "fwd")))
                mod.register_forward_hook(lambda m, a, o, k=key, n=name: self._stop((k, "fwd"), n))
                mod.register_full_backward_pre_hook(lambda m, g, k=key: self._start((k, "bwd")))
                mod.register_full_backward_hook(lambda m, gi, go, k=key, n=name: self._stop((k, "bwd"), n))
        model.lm_head.register_forward_pre_hook(lambda m, a: self._start("head fwd"))
        model.register_forward_hook(self._model_output)
        model.lm_head.register_full_backward_hook(lambda m, gi, go: self._stop("head bwd", "head + loss"))
        self._handles = [register_optimizer_step_pre_hook(lambda o, a, k: self._start("opt")),
                         register_optimizer_step_post_hook(lambda o, a, k: self._stop("opt", "optimizer"))]

    def _start(self, key):
        if self.on: self.t0[key] = time.perf_counter()

    def _stop(self, key, name: str):
        if self.on and key in self.t0: self.acc[name] += time.perf_counter() - self.t0.pop(key)

    def _model_output(self, module, args, out):
        self._stop("head fwd", "head + loss")
        loss = out[1]
        if self.on and loss is not None and loss.requires_grad: loss.register_hook(lambda g: self._start("head bwd"))

    def measure(self, call, n: int) -> dict[str, float]:
        "Seconds per step in each part of `BUDGET`, over `n` calls of `call` (one training step each)."
        self.acc.clear()
        self.on, t0 = True, time.perf_counter()
        for _ in range(n): call()
        total, self.on = time.perf_counter() - t0, False
        parts = {k: self.acc[k] / n for k in BUDGET[:-1]}
        return {**parts, "rest": total / n - sum(parts.values()), "total": total / n}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3 rounds x 2 steps (a minute or two)")
    ap.add_argument("--rounds", type=int, default=None, help="round-robin rounds (default 5, quick 3)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per variant per round (default 3, quick 2)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    ap.add_argument("--no-compile", action="store_true", help="skip the compiled nanoGPT row(s)")
    ap.add_argument("--nano-fp32", action="store_true", help="also nanoGPT compiled float32 (its train.py on CPU)")
    ap.add_argument("--no-budget", action="store_true", help="skip the time budgets (where a step's time goes)")
    ap.add_argument("--malloc-default", action="store_true",
                    help="leave glibc's malloc as it is (TINYLLM_MALLOC=default; the trainer would otherwise tune it)")
    ap.add_argument("--json", default=str(ROOT / "bench" / "results" / "trainer.json"),
                    help="where every figure goes (default bench/results/trainer.json; '' for nowhere)")
    args = ap.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 5)
    steps = args.steps or (2 if args.quick else 3)
    if args.threads: torch.set_num_threads(args.threads)
    if args.malloc_default: os.environ["TINYLLM_MALLOC"] = "default"
    malloc = "freed memory kept (keep_freed_memory)" if keep_freed_memory() else "glibc's defaults"

    cfg = GPTConfig.from_preset("seed")
    tokens = np.random.default_rng(0).integers(0, cfg.vocab_size, size=2_000_000, dtype=np.uint16)
    sampler = RandomBatches(tokens, cfg.block_size, args.batch, seed=1)
    batches = [next(sampler) for _ in range(8)]       # precomputed (x, y) for the bare and nanoGPT steps
    ntok = args.batch * cfg.block_size
    fpt = GPT(cfg).flops_per_token()

    tmp = tempfile.TemporaryDirectory(prefix="bench-trainer-")
    variants = {"trainer (train_step + JSONL)": trainer_step(cfg, tokens, args.batch, Path(tmp.name) / "run")}
    for name, clip in (("bare default step", None), ("bare step + clip 1.0", 1.0)):
        torch.manual_seed(0)
        model = GPT(cfg)
        variants[name] = make_train_step(model, adamw(lr=LR, weight_decay=0.1)(model), grad_clip=clip)
    opts = variants["bare default step"].options
    if not args.no_compile:                           # the same step compiled (train.compile = true): opt-in on a CPU
        torch.manual_seed(0)
        model = GPT(cfg)
        variants["bare step, compiled"] = make_train_step(model, adamw(lr=LR, weight_decay=0.1)(model), compile=True)
    nano, where = load_nanogpt()
    if nano is None: print(f"nanoGPT rows skipped: {where}")
    else:
        specs = [] if args.no_compile else [("nanoGPT compiled bf16", True, True)]
        if args.nano_fp32 and not args.no_compile: specs.append(("nanoGPT compiled fp32", False, True))
        specs.append(("nanoGPT eager bf16", True, False))
        for name, bf16, compiled in specs: variants[name] = nanogpt_step(nano, cfg, bf16, compiled)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; seed preset V={cfg.vocab_size}, "
          f"T={cfg.block_size}, batch {args.batch} ({ntok} tokens/step), {fpt / 1e6:.1f} MFLOP/token")
    attention = "bmm" if opts["dtype"] == torch.bfloat16 else "SDPA"      # the model's rule: bmm under CPU bf16 autocast
    print(f"default path on CPU: dtype={opts['dtype']}, compile={opts['compile']}, fused AdamW, {attention} attention; "
          f"nanoGPT: {where if nano else '-'}")
    print(f"malloc: {malloc}, process-wide, so for every variant alike (the trainer sets it on a CPU)")

    calls, counter = {}, [0]
    for name, fn in variants.items():                 # a uniform no-argument call per variant
        if name.startswith("trainer"): calls[name] = fn
        else:
            def call(fn=fn):
                x, y = batches[counter[0] % len(batches)]
                counter[0] += 1
                fn(x, y)
            calls[name] = call
    warm = {name: _timed(lambda c=c: [c() for _ in range(2)]) for name, c in calls.items()}   # incl. compilation

    turns: list[dict[str, float]] = []               # one step time per variant per turn
    names = list(calls)
    dtype_of = {n: torch.float32 if "fp32" in n else torch.bfloat16 if "bf16" in n else opts["dtype"] for n in names}
    peak = {dt: 0.0 for dt in set(dtype_of.values())}   # MFU of each row against the GEMM peak of its own dtype
    for r in range(rounds):
        for dt in peak: peak[dt] = max(peak[dt], gemm_peak_flops("cpu", dt, n=2048))
        for _ in range(steps):                        # one step of each variant at a time: load bursts spread out
            turns.append({name: _timed(calls[name]) for name in (names if r % 2 == 0 else names[::-1])})
    times = {name: [t[name] for t in turns] for name in names}
    for lg in variants["trainer (train_step + JSONL)"].loggers: lg.close()
    logged = sum(1 for _ in open(Path(tmp.name) / "run" / "metrics.jsonl"))
    tmp.cleanup()

    peaks = ", ".join(f"{str(dt).removeprefix('torch.')} {p / 1e9:.0f}" for dt, p in sorted(peak.items(), key=str))
    print(f"GEMM peaks (2048^3, best over rounds): {peaks} GFLOP/s; {rounds} rounds x {steps} steps per "
          f"variant, interleaved step by step, order reversed every other round; trainer logged {logged} JSONL "
          "records\n")
    hdr = (f"{'variant':<30}{'warm-up s':>10}{'median tok/s':>14}{'best tok/s':>12}{'median ms/step':>16}"
           f"{'MFU (median)':>14}")
    print(hdr)
    print("-" * len(hdr))
    med = {n: statistics.median(t) for n, t in times.items()}
    for name in names:
        print(f"{name:<30}{warm[name]:>10.1f}{ntok / med[name]:>14.0f}{ntok / min(times[name]):>12.0f}"
              f"{med[name] * 1e3:>16.0f}{mfu(fpt, ntok / med[name], peak[dtype_of[name]]):>14.1%}")

    def paired(a, b):
        "Median over turns of the ratio of the two variants' steps in that turn, run back to back (robust to drifts)."
        return statistics.median(t[a] / t[b] for t in turns)
    tr, bare, clip = "trainer (train_step + JSONL)", "bare default step", "bare step + clip 1.0"
    over = med[tr] / med[bare] - 1
    print(f"\ntrainer overhead vs bare default step: {over:+.1%} by median ({paired(tr, bare) - 1:+.1%} paired per "
          f"turn); goal < 3%: {'met' if over < 0.03 else 'NOT met'}")
    print(f"  of which bookkeeping (vs bare step + clip 1.0, the same arithmetic): {med[tr] / med[clip] - 1:+.1%} "
          f"by median ({paired(tr, clip) - 1:+.1%} paired)")
    ref = "nanoGPT compiled bf16"
    if ref in med:
        speed = med[ref] / med[bare]
        print(f"default path vs {ref}: {speed:.2f}x by median tokens/s ({paired(ref, bare):.2f}x paired); "
              f"goal >= 1.3x: {'met' if speed >= 1.3 else 'NOT met'}; with clipping on both: "
              f"{med[ref] / med[clip]:.2f}x")
        print(f"  (nanoGPT compile + first two steps: {warm[ref]:.1f} s; Inductor caches kernels on disk, so a second "
              "run compiles faster)")
    else: print("default path vs nanoGPT compiled bf16: not measured (see above)")
    mine = "bare step, compiled"
    if ref in med and mine in med:
        print(f"our step compiled (train.compile = true) vs {ref}: {med[ref] / med[mine]:.2f}x by median tokens/s "
              f"({paired(ref, mine):.2f}x paired); compile + first two steps {warm[mine]:.1f} s")
    fair = "nanoGPT compiled fp32"
    if fair in med:
        print(f"default path vs {fair} (nanoGPT's faster CPU path where bf16 is not native): "
              f"{med[fair] / med[bare]:.2f}x by median tokens/s ({paired(fair, bare):.2f}x paired)")
    budgets = {} if args.no_budget else time_budgets(cfg, nano, batches, rounds, steps)
    rates = gemm_rates(cfg, ntok)
    bf16_peak = peak.get(torch.bfloat16, 0.0) or gemm_peak_flops("cpu", torch.bfloat16, n=2048)
    print("\nbf16 matrix products at this model's shapes (best of 5), against the 2048^3 peak: " +
          ", ".join(f"{k} {v['flops_per_s'] / 1e9:.0f} GFLOP/s ({v['flops_per_s'] / bf16_peak:.0%})" for k, v in rates.items()))
    print(f"at those rates the Linear layers' products take {1e3 * sum(v['step_s'] for v in rates.values()):.0f} ms of "
          f"a step (forward and backward), against {1e3 * med[bare]:.0f} ms for the whole default step")
    results = {"machine": machine(), "malloc": malloc, "batch": args.batch, "block_size": cfg.block_size,
               "tokens_per_step": ntok,
               "flops_per_token": fpt, "rounds": rounds, "steps": steps, "peak_flops": {str(k): v for k, v in peak.items()},
               "default": {k: str(v) for k, v in opts.items()},
               "rows": {n: {"warmup_s": warm[n], "median_s": med[n], "best_s": min(times[n]), "tokens_per_s": ntok / med[n],
                            "mfu": mfu(fpt, ntok / med[n], peak[dtype_of[n]])} for n in names},
               "speedup_vs_nanogpt_compiled_bf16": med[ref] / med[bare] if ref in med else None,
               "speedup_paired": paired(ref, bare) if ref in med else None,
               "speedup_with_clip": med[ref] / med[clip] if ref in med else None,
               "compiled_speedup_vs_nanogpt_compiled_bf16": med[ref] / med[mine] if ref in med and mine in med else None,
               "compiled_speedup_paired": paired(ref, mine) if ref in med and mine in med else None,
               "budgets": budgets,
               "gemm_rates_bf16": rates, "gemm_peak_bf16": bf16_peak}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=1))
        print(f"figures written to {args.json}")


def gemm_rates(cfg: GPTConfig, tokens: int, dtype=torch.bfloat16, reps: int = 5) -> dict[str, dict]:
    """Best FLOP/s of each forward matrix product of a step at this model's own shapes (tokens x in -> out) in `dtype`,
    and the seconds that product takes per training step at that rate (forward and the two backward products, every
    layer)."""
    shapes = {"qkv": (cfg.n_embd, 3 * cfg.n_embd, cfg.n_layer), "attn proj": (cfg.n_embd, cfg.n_embd, cfg.n_layer),
              "mlp in": (cfg.n_embd, 4 * cfg.n_embd, cfg.n_layer), "mlp out": (4 * cfg.n_embd, cfg.n_embd, cfg.n_layer),
              "head": (cfg.n_embd, cfg.vocab_size, 1)}
    g, out = torch.Generator().manual_seed(0), {}
    for name, (k, n, layers) in shapes.items():
        a, b = torch.randn(tokens, k, generator=g, dtype=dtype), torch.randn(k, n, generator=g, dtype=dtype)
        a @ b
        rate = 2 * tokens * k * n / min(_timed(lambda a=a, b=b: a @ b) for _ in range(reps))
        out[f"{tokens}x{k}x{n} ({name})"] = {"flops_per_s": rate, "step_s": 3 * layers * 2 * tokens * k * n / rate}
    return out


def time_budgets(cfg: GPTConfig, nano, batches, rounds: int, steps: int) -> dict:
    """`TimeBudget` of nanoGPT's eager bf16 step (before) and of our default path with the same clipping (after), on
    fresh models (hooks slow a step a little, so the timed rows above run without them); medians over rounds."""
    torch.manual_seed(0)
    ours = GPT(cfg)
    calls = {"tinyllm default path + clip 1.0": (ours, make_train_step(ours, adamw(lr=LR, weight_decay=0.1)(ours), grad_clip=1.0))}
    if nano is not None:
        st = nanogpt_step(nano, cfg, bf16=True, compiled=False)
        calls["nanoGPT eager bf16"] = (st.model, st)
    budgets, seen = {name: TimeBudget(m) for name, (m, _) in calls.items()}, {name: [] for name in calls}
    k = [0]
    def call(fn):
        x, y = batches[k[0] % len(batches)]
        k[0] += 1
        fn(x, y)
    for _, fn in calls.values(): call(fn), call(fn)                          # warm-up
    for r in range(rounds):
        for name, (_, fn) in (list(calls.items()) if r % 2 == 0 else list(calls.items())[::-1]):
            seen[name].append(budgets[name].measure(lambda fn=fn: call(fn), steps))
    for b in budgets.values():                                             # the optimizer hooks are global
        for h in b._handles: h.remove()
    out = {name: {part: statistics.median(b[part] for b in bs) for part in (*BUDGET, "total")} for name, bs in seen.items()}
    print(f"\nwhere a step's time goes (eager, bf16 autocast, ms per step, median of {rounds} rounds of {steps} steps; "
          "module hooks, so `rest` = embeddings, norms, residual adds, clipping, zero_grad, autograd and Python):")
    print(f"{'':<34}" + "".join(f"{p:>13}" for p in (*BUDGET, "total")))
    for name, b in out.items():
        print(f"{name:<34}" + "".join(f"{1e3 * b[p]:>8.0f} {b[p] / b['total']:>4.0%}" for p in BUDGET) + f"{1e3 * b['total']:>13.0f}")
    return out


if __name__ == "__main__":
    main()
