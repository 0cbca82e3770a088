"""Training-step throughput of tinyllm's GPT against two plain GPTs, side by side in one process.

    python bench/model.py            # full run: 3 implementations x fp32/bf16 x eager/compiled, then a profile
    python bench/model.py --quick    # fewer rounds, eager variants only (our default path on CPU is eager)

Every variant does the same work per step: forward + backward + AdamW step on a (batch, block) batch of random ids,
seed preset (d_model 256, 6 layers, 8 heads) with an 8,192-token vocabulary. Variants are measured interleaved
(round-robin, `--steps` steps each per round); each variant's median step is reported with its best beside it, and
the ratios are of medians, because the machine is shared and one lucky step says little. Warm-up (the first two
steps, including compilation) is measured separately and reported; Inductor caches compiled kernels on disk, so only
the first run on a machine pays the full compile time.
MFU uses the model FLOPs of `GPT.flops_per_token` and, as peak, the best dense-GEMM rate measured on this machine.
"""
from __future__ import annotations

import argparse
import math
import statistics
import time
from contextlib import nullcontext

import torch
import torch.nn as nn
import torch.nn.functional as F

from tinyllm.model import GPT, GPTConfig
from tinyllm.optimizers import adamw
from tinyllm.perf import gemm_peak_flops, mfu, quiet_profile
from tinyllm.trainer import default_train_options, make_train_step


# ---------------------------------------------------------------------------------------------------------------------
# The references: a minimal GPT-2 written the plain way (F.cross_entropy on float32 logits, torch.optim.AdamW with its
# defaults), the shape every from-scratch tutorial converges to, in two flavours:
#   'reference'   hand-written masked-softmax attention, softmax(q k^T / sqrt(d)) v
#   'nanoGPT-style' the same model with F.scaled_dot_product_attention(is_causal=True), as nanoGPT does
class RefAttention(nn.Module):
    def __init__(self, d, nh, T, sdpa=False):
        super().__init__()
        self.nh, self.sdpa, self.c_attn, self.c_proj = nh, sdpa, nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.register_buffer("mask", torch.tril(torch.ones(T, T, dtype=torch.bool)).view(1, 1, T, T))

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.nh, C // self.nh).transpose(1, 2) for t in (q, k, v))
        if self.sdpa:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        att = att.masked_fill(~self.mask[:, :, :T, :T], float("-inf"))
        y = F.softmax(att, dim=-1) @ v
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class RefBlock(nn.Module):
    def __init__(self, d, nh, T, sdpa=False):
        super().__init__()
        self.ln_1, self.attn, self.ln_2 = nn.LayerNorm(d), RefAttention(d, nh, T, sdpa), nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class RefGPT(nn.Module):
    def __init__(self, V, T, L, nh, d, sdpa=False):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(V, d), nn.Embedding(T, d)
        self.h = nn.ModuleList([RefBlock(d, nh, T, sdpa) for _ in range(L)])
        self.ln_f, self.lm_head = nn.LayerNorm(d), nn.Linear(d, V, bias=False)
        self.lm_head.weight = self.wte.weight

    def forward(self, idx, targets):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for b in self.h: x = b(x)
        logits = self.lm_head(self.ln_f(x))
        return logits, F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.view(-1))


# ---------------------------------------------------------------------------------------------------------------------
def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


NAMES = {"ref": "reference", "nano": "nanoGPT-style", "ours": "tinyllm GPT"}


def make_variant(impl, dtype, compiled, cfg, seed=0):
    "A `step(x, y)` callable for one implementation/precision/compile combination."
    torch.manual_seed(seed)
    amp = torch.bfloat16 if dtype == "bf16" else None
    if impl == "ours":       # make_train_step: fused AdamW, chunked CE when eager, bmm attention under CPU bf16 autocast
        model = GPT(cfg)
        return make_train_step(model, adamw(lr=1e-4, weight_decay=0.1)(model), dtype=amp or torch.float32,
                               compile=compiled)
    model = RefGPT(cfg.vocab_size, cfg.block_size, cfg.n_layer, cfg.n_head, cfg.n_embd, sdpa=impl == "nano")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1)
    fwd = torch.compile(model) if compiled else model

    def step(x, y):
        with torch.autocast("cpu", dtype=amp) if amp else nullcontext():
            _, loss = fwd(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()
    return step


def profile_step(step, x, y, n=2) -> dict[str, float]:
    "Share of self CPU time per category over `n` profiled steps."
    from torch.profiler import ProfilerActivity
    with quiet_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(n): step(x, y)
    cats = {"matmul (Linear layers: mm/addmm)": ("aten::mm", "aten::addmm"),
            "attention matmuls/kernels (SDPA, or bmm_attention)": ("scaled_dot_product", "flash_attention",
                                                                   "aten::bmm", "aten::baddbmm",
                                                                   "_softmax_backward_data"),
            "cross-entropy (log-softmax, gather, nll)": ("log_softmax", "nll_loss", "logsumexp", "aten::gather"),
            "softmax (attention fwd + loss bwd)": ("aten::_softmax", "aten::softmax"),
            "Inductor-fused element-wise kernels": ("compiledfxgraph",),
            "layernorm": ("layer_norm",),
            "optimizer (AdamW)": ("adam",),
            "dtype casts/copies": ("aten::copy_", "aten::_to_copy"),
            "gelu": ("gelu",)}
    out = {k: 0.0 for k in cats}
    out["other (adds, embedding, fill, ...)"] = 0.0
    total = 0.0
    for e in prof.key_averages():
        t = e.self_cpu_time_total
        total += t
        for k, keys in cats.items():
            if any(s in e.key.lower() for s in keys):
                out[k] += t
                break
        else:
            out["other (adds, embedding, fill, ...)"] += t
    return {k: v / total for k, v in out.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3 rounds, eager variants only (a minute or two)")
    ap.add_argument("--rounds", type=int, default=None, help="round-robin rounds (default 5, quick 3)")
    ap.add_argument("--steps", type=int, default=2, help="timed steps per variant per round")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--block", type=int, default=256)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile variants")
    ap.add_argument("--no-profile", action="store_true", help="skip the profile of the default path")
    args = ap.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 5)
    compile_too = not args.no_compile
    if args.threads: torch.set_num_threads(args.threads)

    cfg = GPTConfig.from_preset("seed", vocab_size=args.vocab, block_size=args.block)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, cfg.vocab_size, (args.batch, cfg.block_size), generator=g)
    y = torch.randint(0, cfg.vocab_size, (args.batch, cfg.block_size), generator=g)
    tokens = args.batch * cfg.block_size
    fpt = GPT(cfg).flops_per_token()
    default = default_train_options("cpu")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; seed preset V={cfg.vocab_size}, "
          f"T={cfg.block_size}, batch {args.batch} ({tokens} tokens/step), {fpt / 1e6:.1f} MFLOP/token")
    print(f"default training path on CPU: dtype={default['dtype']}, compile={default['compile']}, fused AdamW "
          f"(attention: bmm for bf16 on a CPU, as tinyllm.kernels.kernels_for picks in make_train_step)")
    ours_default = ("ours", "bf16" if default["dtype"] == torch.bfloat16 else "fp32", default["compile"])
    specs = [(impl, dt, False) for dt in ("fp32", "bf16") for impl in ("ref", "nano", "ours")]
    if compile_too:
        if args.quick: specs.append(ours_default)
        else: specs += [(impl, dt, True) for dt in ("fp32", "bf16") for impl in ("ref", "nano", "ours")]
    specs = list(dict.fromkeys(specs))
    variants, warm = {}, {}
    for spec in specs:
        step = make_variant(*spec, cfg)
        t = _timed(lambda step=step: [step(x, y) for _ in range(2)])    # includes compilation for compiled variants
        variants[spec], warm[spec] = step, t
    times = {s: [] for s in specs}
    peak32 = peak16 = 0.0
    for r in range(rounds):
        peak32, peak16 = max(peak32, gemm_peak_flops("cpu", torch.float32)), max(peak16, gemm_peak_flops("cpu", torch.bfloat16))
        for spec in (specs if r % 2 == 0 else specs[::-1]):  # alternate the order: no variant always runs first
            for _ in range(args.steps):
                times[spec].append(_timed(lambda f=variants[spec]: f(x, y)))
    print(f"measured dense GEMM peak (2048^3, best of all rounds): fp32 {peak32 / 1e9:.0f} GFLOP/s, "
          f"bf16 {peak16 / 1e9:.0f} GFLOP/s; MFU below is against the bf16 peak")
    print(f"{rounds} rounds x {args.steps} steps per variant, interleaved; median and best step\n")
    hdr = f"{'implementation':<16}{'precision':<10}{'mode':<10}{'warm-up s':>10}{'median tok/s':>14}{'best tok/s':>12}{'MFU':>7}"
    print(hdr)
    print("-" * len(hdr))
    median = {}
    for spec in specs:
        impl, dt, c = spec
        b, med = tokens / min(times[spec]), tokens / statistics.median(times[spec])
        median[spec] = med
        name = NAMES[impl] + (" *" if spec == ours_default else "")
        print(f"{name:<16}{dt:<10}{'compiled' if c else 'eager':<10}{warm[spec]:>10.1f}{med:>14.0f}{b:>12.0f}"
              f"{mfu(fpt, med, peak16):>7.1%}")
    print("* = the default training path (make_train_step with its defaults); MFU of the median step")
    if ours_default in median:
        for impl in ("nano", "ref"):
            rs = max((s for s in specs if s[0] == impl), key=median.get)
            print(f"default path {median[ours_default]:.0f} tok/s vs fastest {NAMES[impl]} ({rs[1]}, "
                  f"{'compiled' if rs[2] else 'eager'}) {median[rs]:.0f} tok/s, by median: "
                  f"{median[ours_default] / median[rs]:.2f}x")
    if not args.no_profile and ours_default in variants:
        step = variants[ours_default]
        print("\nprofile of the default path (share of self CPU time, 2 steps):")
        for k, v in sorted(profile_step(step, x, y).items(), key=lambda kv: -kv[1]):
            print(f"  {k:<42}{v:>6.1%}")


if __name__ == "__main__":
    main()
