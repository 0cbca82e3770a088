"""Decoding speed of tinyllm's decoders beside Hugging Face `generate` on the same weights, in one process.

    python bench/decode.py                 # batch 1 and 8, greedy and top-p, 200 new tokens, 5 interleaved rounds
    python bench/decode.py --quick         # 64 new tokens, 3 rounds
    python bench/decode.py --out FILE      # where the results go (default bench/results/decode.json)

The model is the seed preset (GPT-2 block, d_model 256, 6 layers, 8 heads, vocabulary 8,192), randomly initialised
with a fixed seed, exported with `tinyllm.weights.export_hf` and loaded by `transformers.GPT2LMHeadModel`: the same
weights, float32, on the CPU, with the same threads. Every run generates exactly `--new` tokens after an 8-token prompt
(no end-of-text id). Greedy ids must be identical to `generate`'s (the bench stops otherwise); top-p draws with the
same seed differ between the libraries (their random streams differ) and are only timed.

Variants, timed round-robin so that a slow moment of a shared machine hits all of them alike; each figure is the
median over the rounds, with the best beside it (and, for the compiled decoder, the median of each round's own ratio to
`generate`, which a machine whose speed drifts between rounds moves less):
  hf generate        transformers' `generate` (its DynamicCache, its own loop)
  tinyllm, eager     `tinyllm.sampling.greedy` / `sample`: the static KV cache, one preallocated id buffer, eager PyTorch
  tinyllm, compiled  the same with `compile=True`: the one-token step compiled once for its fixed shapes
The arithmetic floor is the model's forward FLOPs per token (x batch) over the float32 matmul peak measured here;
the memory floor is what a step must read at least (every float32 weight once, and the keys and values of the slots
filled so far, on average over the run) over the rate at which this machine sums a buffer of that size (measured
here). At these sizes the second binds.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch

from tinyllm.model import GPT, GPTConfig
from tinyllm.perf import gemm_peak_flops, machine, machine_line
from tinyllm.sampling import TopP, greedy, sample
from tinyllm.weights import export_hf


def read_bandwidth(nbytes: int, repeats: int = 20) -> float:
    """Bytes per second of summing a float32 buffer of `nbytes` (best of `repeats`, after a warm-up): how fast this
    machine streams a working set of that size, from whichever cache level holds it between calls, as a decode step
    streams its weights and cache."""
    buf = torch.ones(max(nbytes // 4, 1))
    buf.sum()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        buf.sum()
        best = min(best, time.perf_counter() - t)
    return buf.numel() * 4 / best


def bytes_per_step(model: GPT, batch: int, slots: float) -> int:
    "What one decode step must read at least: every weight once (float32) and the keys and values of `slots` slots."
    c = model.config
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    return int(weights + 2 * c.n_layer * batch * c.kv_heads * slots * c.head_dim * 4)


def hf_model(model: GPT):
    import transformers
    transformers.logging.set_verbosity_error()
    with tempfile.TemporaryDirectory() as d:
        return transformers.AutoModelForCausalLM.from_pretrained(export_hf(model, d, eos_token_id=None)).eval()


def variants(model, hf, prompt, new: int):
    "name -> (greedy fn, top-p fn); each returns the (B, 8 + new) ids."
    mask = torch.ones_like(prompt)
    g = lambda: torch.Generator().manual_seed(0)
    def hf_gen(**kw):
        with torch.no_grad():
            return hf.generate(prompt, attention_mask=mask, max_new_tokens=new, min_new_tokens=new, pad_token_id=0,
                               eos_token_id=None, **kw)
    return {
        "hf generate": (lambda: hf_gen(do_sample=False),
                        lambda: (torch.manual_seed(0), hf_gen(do_sample=True, top_p=0.9, top_k=0))[1]),
        "tinyllm, eager": (lambda: greedy(model, prompt, new), lambda: sample(model, prompt, new, [TopP(0.9)], g())),
        "tinyllm, compiled": (lambda: greedy(model, prompt, new, compile=True),
                              lambda: sample(model, prompt, new, [TopP(0.9)], g(), compile=True)),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="64 new tokens, 3 rounds")
    ap.add_argument("--new", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "decode.json"))
    args = ap.parse_args()
    new, rounds = (64, 3) if args.quick else (args.new, args.rounds)
    warnings.filterwarnings("ignore", message=".*generation flags.*")
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_preset("seed")).eval()
    hf = hf_model(model)
    peak = gemm_peak_flops("cpu", torch.float32)
    fpt = model.flops_per_token(training=False)
    print(machine_line())
    print(f"seed preset (GPT-2 block), {model.num_params(False) / 1e6:.1f}M parameters, float32; {new} new tokens after "
          f"an 8-token prompt; median of {rounds} interleaved rounds (best in brackets); float32 matmul peak "
          f"{peak / 1e9:.0f} GFLOP/s, {fpt / 1e6:.1f} MFLOP per token forward")
    results = {"machine": machine(), "new_tokens": new, "rounds": rounds, "peak_flops_fp32": peak,
               "flops_per_token": fpt, "rows": []}
    for batch in (1, 8):
        prompt = torch.randint(0, model.config.vocab_size, (batch, 8), generator=torch.Generator().manual_seed(batch))
        vs = variants(model, hf, prompt, new)
        ref = vs["hf generate"][0]()
        t0 = time.perf_counter()
        for name, (gr, tp) in vs.items():                   # warm-up: allocations, kernel choice, compilation
            assert torch.equal(gr(), ref), f"{name}: greedy ids differ from transformers' generate"
            tp()
        warm = time.perf_counter() - t0
        times = {(n, k): [] for n in vs for k in ("greedy", "top-p")}
        for _ in range(rounds):
            for name, (gr, tp) in vs.items():
                for kind, fn in (("greedy", gr), ("top-p", tp)):
                    t = time.perf_counter()
                    fn()
                    times[name, kind].append(time.perf_counter() - t)
        floor_ms = fpt * batch / peak * 1e3
        filled = prompt.shape[1] + (new - 1) / 2          # cache slots a step attends over, on average
        nbytes = bytes_per_step(model, batch, filled)
        bandwidth = read_bandwidth(nbytes)
        mem_ms = nbytes / bandwidth * 1e3
        print(f"\nbatch {batch} (warm-up and compilation {warm:.0f} s; arithmetic floor {floor_ms:.3f} ms per step; "
              f"memory floor {mem_ms:.3f} ms: the weights and {filled:.0f} cached slots, {nbytes / 1e6:.0f} MB, "
              f"read once at the {bandwidth / 1e9:.0f} GB/s measured for that size)")
        print(f"{'':<20}{'greedy ms/step':>22}{'tok/s':>9}{'vs hf':>7}{'top-p ms/step':>22}{'tok/s':>9}{'vs hf':>7}")
        for name in vs:
            cells, row = [], {"batch": batch, "variant": name}
            for kind in ("greedy", "top-p"):
                ts = times[name, kind]
                med, best = statistics.median(ts), min(ts)
                hf_med = statistics.median(times["hf generate", kind])
                paired = statistics.median(h / t for h, t in zip(times["hf generate", kind], ts))   # round by round
                row[kind] = {"median_s": med, "best_s": best, "ms_per_step": med / new * 1e3,
                             "tokens_per_s": batch * new / med, "speedup_vs_hf": hf_med / med,
                             "paired_speedup_vs_hf": paired, "rounds_s": ts}
                cells.append(f"{med / new * 1e3:>12.2f} ({best / new * 1e3:5.2f}){batch * new / med:>9,.0f}"
                             f"{hf_med / med:>6.2f}x")
            row["floor_ms_per_step"], row["memory_floor_ms_per_step"] = floor_ms, mem_ms
            row["bytes_per_step"], row["read_bandwidth"] = nbytes, bandwidth
            results["rows"].append(row)
            print(f"{name:<20}" + "".join(cells))
        c = results["rows"][-1]                            # the compiled decoder
        print(f"compiled vs hf, the median of the rounds' own ratios: greedy {c['greedy']['paired_speedup_vs_hf']:.2f}x, "
              f"top-p {c['top-p']['paired_speedup_vs_hf']:.2f}x")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(f"\nresults: {args.out}")


if __name__ == "__main__":
    main()
