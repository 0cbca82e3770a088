"""The trainer's contract: schedules, parameter groups, accumulation, precision, exact resume, on GPT and on a model
that is not our GPT."""
import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from tinyllm.checkpoint import list_checkpoints, load_weights
from tinyllm.core import TinyLLMError
from tinyllm.data import RandomBatches, StreamBatches
from tinyllm.model import GPT, GPTConfig
from tinyllm.optim import constant_schedule, cosine_schedule, make_schedule, param_groups, wsd_schedule
from tinyllm.optimizers import adamw
from tinyllm.trainer import Trainer, TrainConfig, read_metrics
from helpers import learnable_stream

TOKENS = learnable_stream()


def cfg(**kw):
    base = dict(batch_size=4, max_steps=8, lr=1e-3, min_lr=1e-4, warmup_steps=2, eval_interval=4, eval_steps=2,
                checkpoint_interval=4, log_interval=4, device="cpu", dtype="float32", compile=False, progress=False,
                samples=0)
    return TrainConfig(**{**base, **kw})


def tiny_gpt(seed=0, **kw):
    torch.manual_seed(seed)
    return GPT(GPTConfig.from_preset("tiny", **kw))


def make_trainer(tmp_path=None, *, packing="random", model=None, seed=0, quiet=True, **kw):
    c = cfg(**kw)
    model = model or tiny_gpt(seed)
    Sampler = RandomBatches if packing == "random" else StreamBatches
    batches = Sampler(TOKENS, 32, c.batch_size, seed=seed)
    val = RandomBatches(TOKENS[-3000:], 32, c.batch_size, seed=1)
    return Trainer(model, batches, c, val_batches=[next(val) for _ in range(c.eval_steps)], out_dir=tmp_path,
                   print_fn=(lambda s: None) if quiet else print)


def losses(out_dir):
    return [r["loss"] for r in read_metrics(out_dir / "metrics.jsonl") if "loss" in r]


# ---- schedules ------------------------------------------------------------------------------------------------------
def test_cosine_schedule_shape():
    lr = lambda s: cosine_schedule(s, lr=3e-4, warmup_steps=500, max_steps=5000, min_lr=3e-5)
    assert lr(0) == pytest.approx(3e-4 / 500) and lr(499) == pytest.approx(3e-4)
    assert lr(500) == pytest.approx(3e-4) and lr(5000) == pytest.approx(3e-5) and lr(10**6) == pytest.approx(3e-5)
    assert lr(2750) == pytest.approx((3e-4 + 3e-5) / 2)               # half-way down the cosine: the mean
    decay = [lr(s) for s in range(500, 5001)]
    assert all(a >= b for a, b in zip(decay, decay[1:]))


def test_constant_and_wsd_schedules():
    assert constant_schedule(0, lr=1.0, warmup_steps=4) == 0.25 and constant_schedule(10**6, lr=1.0, warmup_steps=4) == 1.0
    wsd = [wsd_schedule(s, lr=1.0, warmup_steps=10, max_steps=100, min_lr=0.1, decay_frac=0.2) for s in range(101)]
    assert wsd[9] == 1.0 and wsd[79] == 1.0 and wsd[80] < 1.0 and wsd[99] == pytest.approx(0.1) and wsd[100] == 0.1
    assert all(a >= b for a, b in zip(wsd[10:], wsd[11:]))


@pytest.mark.parametrize("kw, msg", [(dict(warmup_steps=10, max_steps=10), "warmup_steps"),
                                     (dict(min_lr=1.0), "min_lr"), (dict(lr=0.0), "lr=0.0")])
def test_schedule_errors(kw, msg):
    with pytest.raises(TinyLLMError, match=msg):
        make_schedule("cosine", **{**dict(lr=1e-3, warmup_steps=1, max_steps=10, min_lr=0.0), **kw})
    with pytest.raises(TinyLLMError, match="cosine, constant, wsd"):
        make_schedule("linear", lr=1e-3, warmup_steps=1, max_steps=10)


# ---- parameter groups and the optimizer -------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_param_groups_decay_only_matrices(arch):
    m = tiny_gpt(arch=arch)
    decay, no_decay = param_groups(m, 0.1)
    names = {id(p): n for n, p in m.named_parameters()}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() == 2 and "wte" not in names[id(p)] and "wpe" not in names[id(p)] for p in decay["params"])
    assert {names[id(p)] for p in no_decay["params"]} >= {"transformer.wte.weight", "transformer.ln_f.weight"}
    assert sum(p.numel() for g in (decay, no_decay) for p in g["params"]) == m.num_params(non_embedding=False)
    opt = adamw(lr=1e-3)(m)
    assert opt.defaults["fused"] and len(opt.param_groups) == 2


# ---- accumulation, clipping, precision ------------------------------------------------------------------------------
class ListBatches:
    "A fixed list of batches, with the state a trainer needs."
    def __init__(self, batches): self.batches, self.i = batches, 0
    def __iter__(self): return self
    def __next__(self):
        b = self.batches[self.i % len(self.batches)]
        self.i += 1
        return b
    def state_dict(self): return {"i": self.i}
    def load_state_dict(self, s): self.i = s["i"]


@pytest.mark.parametrize("opt", ["sgd", "adamw"])
def test_accumulation_equals_one_big_batch(opt):
    # N micro-batches of B rows give the same update as one batch of N*B rows (fp32). With SGD the update is lr times
    # the gradient, so it matches to 1e-6; AdamW divides by sqrt(v), which magnifies float rounding in near-zero
    # gradients, so its weights match to 1e-5 after three steps.
    g = torch.Generator().manual_seed(0)
    rows = [torch.randint(0, 256, (16, 33), generator=g) for _ in range(3)]           # 3 steps of 16 rows
    big = ListBatches([(r[:, :-1], r[:, 1:]) for r in rows])
    micro = ListBatches([(r[i:i + 4, :-1], r[i:i + 4, 1:]) for r in rows for i in range(0, 16, 4)])
    factory = (lambda m: torch.optim.SGD(m.parameters(), lr=0.1)) if opt == "sgd" else None
    a = Trainer(tiny_gpt(), big, cfg(batch_size=16, max_steps=3, warmup_steps=1), optimizer=factory,
                print_fn=lambda s: None)
    b = Trainer(tiny_gpt(), micro, cfg(batch_size=4, grad_accum=4, max_steps=3, warmup_steps=1), optimizer=factory,
                print_fn=lambda s: None)
    assert b.effective_batch == 16
    ra, rb = [a.train_step() for _ in range(3)], [b.train_step() for _ in range(3)]
    for x, y in zip(ra, rb):
        assert x["loss"] == pytest.approx(y["loss"], abs=1e-6) and x["grad_norm"] == pytest.approx(y["grad_norm"], rel=1e-5)
    tol = 1e-6 if opt == "sgd" else 1e-5
    for (n, p), q in zip(a.model.named_parameters(), b.model.parameters()):
        assert torch.allclose(p, q, atol=tol, rtol=0), n
    assert ra[0]["loss"] != ra[1]["loss"]                      # the weights did move


def test_clipping_logs_the_norm_before_clipping():
    t = make_trainer(grad_clip=1e-3, lr=1e-2)
    rec = t.train_step()
    assert rec["grad_norm"] > 1e-3                              # the logged norm is the one before clipping
    x, y = next(t.train_batches)
    _, loss = t.model(x, y)
    loss.backward()
    clipped = torch.nn.utils.clip_grad_norm_(t.params, 1e-3)
    assert clipped > 1e-3 and torch.nn.utils.get_total_norm([p.grad for p in t.params]) <= 1e-3 * 1.0001


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_each_precision_trains(dtype):
    t = make_trainer(dtype=dtype, max_steps=30, lr=3e-3, eval_interval=30, checkpoint_interval=30)
    first = t.train_step()["loss"]
    for _ in range(29): last = t.train_step()
    assert last["loss"] < first - 0.1
    assert t.dtype == getattr(torch, dtype) and (t.scaler is not None) == (dtype == "float16")
    if dtype == "float16": assert last["loss_scale"] > 0


def test_fp16_scaler_skips_overflow_and_adapts_scale():
    t = make_trainer(dtype="float16")
    t.train_step()
    before = {n: p.detach().clone() for n, p in t.model.named_parameters()}
    scale = t.scaler.get_scale()
    hook = t.model.transformer.h[0].mlp.c_fc.weight.register_hook(lambda g: g * float("inf"))   # overflow in backward
    rec = t.train_step()
    hook.remove()
    assert rec.get("scaler_skipped") and rec["loss_scale"] == scale / 2 and t.skipped == 1
    assert all(torch.equal(before[n], p) for n, p in t.model.named_parameters())     # the step was not applied
    assert t.train_step().get("scaler_skipped") is None


# ---- checkpoints and exact resume -----------------------------------------------------------------------------------
@pytest.mark.parametrize("kw", [dict(packing="random"), dict(packing="stream"), dict(grad_accum=2),
                                dict(dtype="bfloat16"), dict(dtype="float16")],
                         ids=["random", "stream", "accum", "bf16", "fp16"])
def test_resume_is_bit_identical(tmp_path, kw):
    # 2N steps straight vs N steps, stop, then resume for N more: identical losses and weights
    full = make_trainer(tmp_path / "full", max_steps=8, **kw)
    full.fit()
    make_trainer(tmp_path / "half", **kw).fit(stop_after=4)
    resumed = make_trainer(tmp_path / "half", seed=99, **kw)   # another init and data seed: the checkpoint restores all
    resumed.fit(resume="last")
    assert losses(tmp_path / "full") == losses(tmp_path / "half")
    a, b = load_weights(tmp_path / "full/checkpoints/last"), load_weights(tmp_path / "half/checkpoints/last")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    if kw.get("dtype") == "float16": assert resumed.scaler.get_scale() == full.scaler.get_scale()


def test_resume_with_dropout_restores_the_rng(tmp_path):
    full = make_trainer(tmp_path / "full", model=tiny_gpt(dropout=0.2))
    full.fit()
    make_trainer(tmp_path / "half", model=tiny_gpt(dropout=0.2)).fit(stop_after=4)
    torch.manual_seed(12345)                                        # the resumed run must not depend on this
    make_trainer(tmp_path / "half", model=tiny_gpt(dropout=0.2)).fit(resume="last")
    assert losses(tmp_path / "full") == losses(tmp_path / "half")


def test_checkpoint_layout_pointers_and_retention(tmp_path):
    t = make_trainer(tmp_path, max_steps=12, checkpoint_interval=2, keep_checkpoints=2, eval_interval=4)
    t.fit()
    root = tmp_path / "checkpoints"
    names = [p.name for p in list_checkpoints(root)]
    best = (root / "best").resolve().name
    assert names[-2:] == ["step-0000010", "step-0000012"] and (root / "last").resolve().name == "step-0000012"
    assert best in names and len(names) <= 3                        # 2 periodic + best (if older)
    for d in list_checkpoints(root):
        assert sorted(f.name for f in d.iterdir()) == ["meta.json", "model.safetensors", "state.pt"]
    import json
    meta = json.loads((root / "last/meta.json").read_text())
    assert meta["step"] == 12 and meta["tokens_seen"] == 12 * 4 * 32 and set(meta["files"]) == {"model.safetensors", "state.pt"}
    # the weights load into a fresh model with plain safetensors + load_state_dict (tied weights restored)
    m = tiny_gpt(seed=5)
    m.load_state_dict(load_weights(root / "last"))
    assert torch.equal(m.lm_head.weight, t.model.lm_head.weight) and m.lm_head.weight is m.transformer.wte.weight


def test_eval_reports_perplexity_and_bits_per_byte(tmp_path):
    t = make_trainer()
    t.bytes_per_token = 2.5
    ev = t.evaluate()
    assert ev["val_ppl"] == pytest.approx(math.exp(ev["val_loss"]))
    assert ev["val_bpb"] == pytest.approx(ev["val_loss"] / math.log(2) / 2.5)


# ---- a model that is not our GPT ------------------------------------------------------------------------------------
class GRULM(nn.Module):
    "A small recurrent language model: the trainer only needs `model(x, y) -> loss`."
    def __init__(self, vocab=256, d=32):
        super().__init__()
        self.emb, self.rnn, self.out = nn.Embedding(vocab, d), nn.GRU(d, d, batch_first=True), nn.Linear(d, vocab)

    def forward(self, x, y):
        h, _ = self.rnn(self.emb(x))
        return F.cross_entropy(self.out(h).flatten(0, 1), y.flatten())


def test_trainer_is_generic_over_models(tmp_path):
    def run(out, stop_after=None, resume=None, seed=0):
        torch.manual_seed(seed)
        t = make_trainer(out, model=GRULM(), lr=1e-2)
        t.fit(resume=resume, stop_after=stop_after)
        return t
    t = run(tmp_path / "full")
    assert losses(tmp_path / "full")[-1] < losses(tmp_path / "full")[0]
    assert "mfu" not in read_metrics(tmp_path / "full/metrics.jsonl")[0]     # no flops_per_token: no MFU, no crash
    run(tmp_path / "half", stop_after=4)
    run(tmp_path / "half", resume="last", seed=3)
    assert losses(tmp_path / "full") == losses(tmp_path / "half")
    decay, no_decay = t.optimizer.param_groups
    assert any(p is t.model.emb.weight for p in no_decay["params"])
    assert any(p is t.model.out.weight for p in decay["params"])


def test_custom_loss_fn_and_optimizer_factory():
    seen = []
    def loss_fn(model, batch):
        seen.append(batch[0].shape)
        return model(*batch)
    t = Trainer(GRULM(), ListBatches([(torch.zeros(2, 5, dtype=torch.long),) * 2]), cfg(max_steps=3),
                loss_fn=loss_fn, optimizer=lambda m: torch.optim.SGD(m.parameters(), lr=0.1), print_fn=lambda s: None)
    t.fit()
    assert isinstance(t.optimizer, torch.optim.SGD) and len(seen) == 3


# ---- configuration errors -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw, msg", [(dict(grad_accum=0), "grad_accum"), (dict(warmup_steps=20, max_steps=10), "warmup"),
                                     (dict(optimizer="adam9"), "unknown optimizer"), (dict(grad_clip=-1.0), "grad_clip")])
def test_train_config_errors(kw, msg):
    with pytest.raises(TinyLLMError, match=msg): TrainConfig(**kw)


def test_batches_that_run_out_and_missing_state(tmp_path):
    t = Trainer(GRULM(), iter([(torch.zeros(2, 5, dtype=torch.long),) * 2]), cfg(max_steps=3), print_fn=lambda s: None)
    with pytest.raises(TinyLLMError, match="ran out at step 2"): t.fit()
    with pytest.raises(TinyLLMError, match="state_dict"):
        Trainer(GRULM(), iter([]), cfg(), out_dir=tmp_path)


FAULTS = r"""
import resource, sys, torch
from tinyllm.step import keep_freed_memory
def faults_per_step(n=4):
    "Minor page faults per allocation of a 64 MB buffer that is then written, after a few (the heap settles on two)."
    for _ in range(4): torch.empty(4096, 8192, dtype=torch.bfloat16).fill_(1)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(n): torch.empty(4096, 8192, dtype=torch.bfloat16).fill_(1)
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / n
default = faults_per_step()
print(default, keep_freed_memory(), faults_per_step())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_keep_freed_memory_stops_refaulting_big_buffers(tmp_path):
    "glibc's defaults map, fault in and zero a 64 MB buffer anew each time; after keep_freed_memory it is reused."
    out = subprocess.run([sys.executable, "-c", FAULTS], capture_output=True, text=True, check=True).stdout.split()
    default, applied, kept = float(out[0]), out[1] == "True", float(out[2])
    if not applied: pytest.skip("not glibc")
    assert default > 8000 and kept < 100, (default, kept)   # 64 MB = 16,384 pages of 4 KB
    env = {**os.environ, "TINYLLM_MALLOC": "default"}
    out = subprocess.run([sys.executable, "-c", FAULTS], capture_output=True, text=True, check=True, env=env).stdout.split()
    assert out[1] == "False" and float(out[2]) > 8000


def test_trainer_keeps_freed_memory_on_cpu(monkeypatch):
    import tinyllm.trainer as tr
    calls = []
    monkeypatch.setattr(tr, "keep_freed_memory", lambda: calls.append(1) or True)
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_preset("tiny"))
    Trainer(model, RandomBatches(torch.randint(0, 256, (5000,)).numpy().astype("uint16"), 16, 2, seed=0),
            TrainConfig(device="cpu", max_steps=2, warmup_steps=1))
    assert calls == [1]
