"""Optimizers from their papers: AdamW against PyTorch's, Lion and Sophia against steps computed by hand, Muon against
PyTorch's, Sophia's Hessian hook, the registry and its errors, weight decay by group, exact resume, and each optimizer
through the trainer."""
import inspect
import io

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from tinyllm.core import TinyLLMError
from tinyllm.data import RandomBatches
from tinyllm.model import GPT, GPTConfig
from tinyllm.optim import muon_param_groups, param_groups
from tinyllm.optimizers import OPTIMIZERS, make_optimizer
from tinyllm.optimizers import (AdamW, HessianHookError, Lion, Muon, MuonAdamW, SophiaG, gnb_hessian_step,
                                newton_schulz)
from tinyllm.trainer import Trainer, TrainConfig, read_metrics
from helpers import learnable_stream

NAMES = ["adamw", "adamw_scratch", "lion", "sophia", "muon"]

TOKENS = learnable_stream()


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_gpt(seed=0, **kw):
    torch.manual_seed(seed)
    return GPT(GPTConfig.from_preset("tiny", **kw))


def gpt_batch(i, rows=8, T=32):
    g = torch.Generator().manual_seed(i)
    ix = torch.randint(0, len(TOKENS) - T - 1, (rows,), generator=g)
    chunk = torch.stack([torch.from_numpy(TOKENS[j:j + T + 1].astype(np.int64)) for j in ix.tolist()])
    return chunk[:, :-1], chunk[:, 1:]


def train(model, opt, start, n):
    "n steps on the stream; Sophia's Hessian hook after every k-th step, as a training loop must call it."
    k, losses = getattr(opt, "hessian_interval", 0), []
    for i in range(start, start + n):
        batch = gpt_batch(i)
        _, loss = model(*batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if k and (i + 1) % k == 0: assert opt.hessian_hook(model, batch)
        losses.append(loss.item())
    return losses


class Small(nn.Module):
    "Embedding, LayerNorm, two Linear layers: both parameter groups, and fast."
    def __init__(self, vocab=50, d=16):
        super().__init__()
        self.emb, self.ln, self.fc, self.out = nn.Embedding(vocab, d), nn.LayerNorm(d), nn.Linear(d, 2 * d), nn.Linear(2 * d, vocab)

    def forward(self, x, y):
        return F.cross_entropy(self.out(torch.relu(self.fc(self.ln(self.emb(x))))).flatten(0, 1), y.flatten())


def small_batch(i, vocab=50):
    x = torch.randint(0, vocab, (8, 16), generator=torch.Generator().manual_seed(i))
    return x, (3 * x + 1) % vocab


# ---- AdamW ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("impl", ["single", "foreach", "fused"])
def test_adamw_matches_torch_over_100_steps(impl):
    def run(make):
        torch.manual_seed(0)
        model = Small()
        opt = make(param_groups(model, 0.1))
        for i in range(100):
            model(*small_batch(i)).backward()
            opt.step()
            opt.zero_grad()
        return model, opt
    hp = dict(lr=1e-2, betas=(0.9, 0.95), eps=1e-8)
    kw = dict(fused=True) if impl == "fused" else dict(foreach=impl == "foreach")
    ours, o1 = run(lambda g: AdamW(g, **hp))
    ref, o2 = run(lambda g: torch.optim.AdamW(g, **hp, **kw))
    assert [g["weight_decay"] for g in o1.param_groups] == [0.1, 0.0] and len(o1.param_groups[1]["params"]) == 5
    diff = max((p - q).abs().max().item() for p, q in zip(ours.parameters(), ref.parameters()))
    assert diff < 1e-6
    if impl != "fused": assert diff == 0.0        # the same float32 operations in the same order
    p, q = next(ours.parameters()), next(ref.parameters())
    assert torch.allclose(o1.state[p]["exp_avg_sq"], o2.state[q]["exp_avg_sq"], rtol=1e-5, atol=1e-12)


def test_adamw_two_steps_by_hand():
    p = nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    opt = AdamW([p], lr=0.1, betas=(0.9, 0.999), weight_decay=0.1)
    for g in ([0.5, -0.1], [-0.5, -0.1]):
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
    # step 1: θ = 0.99·θ0 − 0.1·sign(g1) = (0.89, −1.88); step 2: m̂ = (−0.005, −0.019)/0.19, v̂ = (0.25, 0.01)
    expected = [0.99 * 0.89 + 0.1 * (0.005 / 0.19) / 0.5, 0.99 * -1.88 + 0.1]
    assert torch.allclose(p.detach(), torch.tensor(expected, dtype=torch.float64), atol=1e-7)
    assert opt.state[p]["step"] == 2


# ---- Lion -------------------------------------------------------------------------------------------------------------
def test_lion_two_steps_by_hand():
    # c = β1·m + (1−β1)·g;  θ ← θ − lr·(sign(c) + λθ);  m ← β2·m + (1−β2)·g   with lr 0.1, λ 0.5, β (0.9, 0.99)
    # step 1: c = 0.1·g1 -> sign (+,−,+); θ1 = 0.95·(1, −2, 0.5) − 0.1·(1, −1, 1) = (0.85, −1.8, 0.375); m1 = 0.01·g1
    # step 2: c = 0.9·(0.01, −0.01, 0.02) + 0.1·(−0.05, 0.2, −3) = (0.004, 0.011, −0.282) -> sign (+,+,−)
    #         θ2 = 0.95·θ1 − 0.1·(1, 1, −1) = (0.7075, −1.81, 0.45625); m2 = 0.99·m1 + 0.01·g2 = (0.0094, −0.0079, −0.0102)
    p = nn.Parameter(torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))
    opt = Lion([p], lr=0.1, betas=(0.9, 0.99), weight_decay=0.5)
    for g in ([1.0, -1.0, 2.0], [-0.05, 0.2, -3.0]):
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
    assert torch.allclose(p.detach(), torch.tensor([0.7075, -1.81, 0.45625], dtype=torch.float64), atol=1e-12)
    assert torch.allclose(opt.state[p]["exp_avg"], torch.tensor([0.0094, -0.0079, -0.0102], dtype=torch.float64),
                          atol=1e-12)


# ---- Sophia -----------------------------------------------------------------------------------------------------------
def test_sophia_step_by_hand():
    # h = (1−β2)·B·ĝ² = 0.01·100·(2, 0.5, 0)² = (4, 0.25, 0); m = (1−β1)·g = 0.035·(1, 1, −1)
    # ratio = min(|m| / (ρ·h + 1e-15), 1) = (0.035/0.16, 1, 1) = (0.21875, 1, 1); θ = 1 − lr·sign(m)·ratio
    p = nn.Parameter(torch.ones(3, dtype=torch.float64))
    opt = SophiaG([p], lr=0.1, betas=(0.965, 0.99), rho=0.04, weight_decay=0.0)
    p.grad = torch.tensor([2.0, 0.5, 0.0], dtype=torch.float64)
    assert opt.update_hessian(bs=100)
    p.grad = torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)
    opt.step()
    assert torch.allclose(opt.state[p]["hessian"], torch.tensor([4.0, 0.25, 0.0], dtype=torch.float64), atol=1e-12)
    assert torch.allclose(p.detach(), torch.tensor([0.978125, 0.9, 1.1], dtype=torch.float64), atol=1e-12)
    # decoupled weight decay first, as in the reference code: θ ← θ·(1 − lr·λ), then the clipped step
    q = nn.Parameter(torch.ones(1, dtype=torch.float64))
    o = SophiaG([q], lr=0.1, weight_decay=0.5)
    q.grad = torch.ones(1, dtype=torch.float64)
    o.step()
    assert q.item() == pytest.approx(0.95 - 0.1)


def test_sophia_without_its_hook_is_an_error():
    p = nn.Parameter(torch.ones(3))
    opt = SophiaG([p], lr=0.1, hessian_interval=4)
    assert opt.hessian_interval == 4
    for _ in range(4):                                      # k steps are allowed (the first refresh comes after them)
        p.grad = torch.randn(3)
        opt.step()
    p.grad = torch.randn(3)
    with pytest.raises(HessianHookError, match="Sophia needs its Hessian hook.*hessian_hook"):
        opt.step()
    assert issubclass(HessianHookError, TinyLLMError) and opt.state[p]["step"] == 4
    assert opt.update_hessian(bs=1)                         # once refreshed, it steps again
    opt.step()
    assert opt.state[p]["step"] == 5
    with pytest.raises(TinyLLMError, match="update_hessian"):
        gnb_hessian_step(nn.Linear(2, 2), torch.optim.SGD([p], lr=0.1), torch.zeros(1, 2))
    with pytest.raises(TinyLLMError, match="hessian_interval"):
        SophiaG([p], hessian_interval=0)


def test_gnb_hessian_step_on_gpt():
    model = tiny_gpt()
    opt = make_optimizer("sophia", lr=1e-3)(model)
    x, y = gpt_batch(0)
    y = y.clone()                                           # y is a view of the same rows as x
    y[0, :5] = -100                                         # padding: not in the sampled loss
    seen = []
    orig = opt.update_hessian
    opt.update_hessian = lambda bs: seen.append(bs) or orig(bs)
    assert opt.hessian_hook(model, (x, y))
    assert seen == [y.numel() - 5]
    hs = [opt.state[p]["hessian"] for p in model.parameters()]
    assert all((h >= 0).all() for h in hs) and sum(h.sum() for h in hs) > 0
    assert all(p.grad is None for p in model.parameters())             # the sampled-label gradients are gone
    assert opt.param_groups[0]["hessian_updates"] == 1
    # grad_clip scales the sampled-label gradient down to that norm first, as the reference loop does: h scales by its square
    h1 = [h.clone() for h in hs]
    clipped = make_optimizer("sophia", lr=1e-3)(model)
    torch.manual_seed(3); opt.hessian_hook(model, (x, y))                       # h ← 0.99·h + 0.01·B·ĝ²
    torch.manual_seed(3); clipped.hessian_hook(model, (x, y), grad_clip=1e-4)   # the same ŷ, ĝ clipped to norm 1e-4
    g2 = sum((h - 0.99 * a).sum() for h, a in zip(hs, h1)) / (0.01 * seen[0])  # ‖ĝ‖²
    hc = sum(clipped.state[p]["hessian"].sum() for p in model.parameters())
    assert g2 > 1e-8 and hc == pytest.approx(0.01 * seen[0] * 1e-8, rel=1e-3)
    # a non-finite sampled-label gradient leaves the estimate alone
    before = [h.clone() for h in hs]
    next(model.parameters()).grad = torch.full_like(next(model.parameters()), float("nan"))
    assert not opt.update_hessian(bs=10)
    assert all(torch.equal(a, b) for a, b in zip(before, hs)) and opt.param_groups[0]["hessian_updates"] == 2


def test_gnb_estimate_is_unbiased_for_a_linear_softmax():
    # E[B·ĝ²] over labels sampled from the model's softmax = the Gauss-Newton diagonal: x_j² · p_i(1 − p_i)
    torch.manual_seed(0)
    lin = nn.Linear(3, 4, bias=False)
    x = torch.tensor([[1.0, -0.5, 2.0]])
    opt = SophiaG(lin.parameters(), betas=(0.9, 0.0))              # β2 = 0: h is the last estimate
    samples = []
    for _ in range(1500):
        gnb_hessian_step(lin, opt, x)
        samples.append(opt.state[lin.weight]["hessian"].clone())
    samples = torch.stack(samples)
    p = lin(x).softmax(-1).detach()[0]
    x2 = x[0][None, :] ** 2
    gn = (p * (1 - p))[:, None] * x2
    # each estimate is x_j²·(p_i − [ŷ = i])²: its variance gives the tolerance of the mean (5 standard errors)
    var = ((p * (1 - p) ** 4 + (1 - p) * p ** 4) - (p * (1 - p)) ** 2)[:, None] * x2 ** 2
    assert ((samples.mean(0) - gn).abs() <= 5 * (var / len(samples)).sqrt() + 1e-7).all()
    assert torch.allclose(samples.var(0), var, rtol=0.3)


# ---- Muon -------------------------------------------------------------------------------------------------------------
@pytest.mark.skipif(not hasattr(torch.optim, "Muon"), reason="this PyTorch has no torch.optim.Muon")
@pytest.mark.parametrize("adjust", [None, "original", "match_rms_adamw"])
def test_our_muon_matches_torch(adjust):
    W = torch.randn(24, 40, generator=torch.Generator().manual_seed(0))
    out = []
    for cls in (Muon, torch.optim.Muon):
        for shape in ((24, 40), (40, 24)):
            p = nn.Parameter(W.clone().reshape(shape))
            kw = dict(ns_dtype="bfloat16") if cls is Muon else {}   # PyTorch's Muon always works in bf16
            opt = cls([p], lr=0.02, weight_decay=0.1, adjust_lr_fn=adjust, **kw)
            for i in range(3):
                p.grad = torch.randn(shape, generator=torch.Generator().manual_seed(i))
                opt.step()
            out.append(p.detach())
    assert torch.equal(out[0], out[2]) and torch.equal(out[1], out[3])


def test_muon_runs_newton_schulz_in_float32_where_bf16_is_emulated(monkeypatch):
    import tinyllm.optimizers as O
    from tinyllm.optimizers import make_optimizer
    for native, want in ((False, torch.float32), (True, torch.bfloat16)):
        monkeypatch.setattr(O, "bf16_supported", lambda device_type, native=native: native)
        assert O.ns_dtype_for("auto", torch.device("cpu")) == want
        opt = make_optimizer("muon", lr=1e-3)(GPT(GPTConfig.from_preset("tiny")))
        uses_torch = hasattr(torch.optim, "Muon") and native     # PyTorch's Muon only where bf16 is native
        assert isinstance(opt._muon, torch.optim.Muon if uses_torch else O.Muon)
    seen = []
    monkeypatch.setattr(O, "newton_schulz", lambda G, *a: seen.append(a[-1]) or G.to(a[-1]))
    p = nn.Parameter(torch.randn(8, 4))
    p.grad = torch.randn(8, 4)
    O.Muon([p], ns_dtype="float32").step()
    assert seen == [torch.float32]
    with pytest.raises(TinyLLMError, match="ns_dtype='half'"): O.Muon([p], ns_dtype="half")


def test_newton_schulz_orthogonalizes():
    G = torch.randn(48, 16, generator=torch.Generator().manual_seed(0))
    sv = torch.linalg.svdvals(newton_schulz(G).float())
    assert newton_schulz(G).shape == G.shape and sv.min() > 0.6 and sv.max() < 1.25
    U, _, Vh = torch.linalg.svd(G, full_matrices=False)
    assert torch.nn.functional.cosine_similarity(newton_schulz(G).float().flatten(), (U @ Vh).flatten(), dim=0) > 0.95
    with pytest.raises(TinyLLMError, match="2-D"):
        Muon([nn.Parameter(torch.zeros(3))])


@pytest.mark.parametrize("tie", [True, False])
def test_muon_param_groups(tie):
    m = tiny_gpt(tie_weights=tie)
    names = {id(p): n for n, p in m.named_parameters()}
    (mg,), (decay, no_decay) = muon_param_groups(m, 0.1)
    muon_names = {names[id(p)] for p in mg["params"]}
    assert muon_names == {n for n, p in m.named_parameters() if p.dim() == 2 and ".h." in n}   # attention and MLP
    assert {names[id(p)] for p in decay["params"]} == (set() if tie else {"lm_head.weight"})
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert {"transformer.wte.weight", "transformer.wpe.weight", "transformer.ln_f.weight"} <= {names[id(p)] for p in no_decay["params"]}
    n = sum(p.numel() for g in (mg, decay, no_decay) for p in g["params"])
    assert n == sum(p.numel() for p in {id(p): p for p in m.parameters()}.values())


def test_muon_groups_follow_the_schedule_with_their_lr_scale():
    m = tiny_gpt()
    opt = make_optimizer("muon", lr=1e-3, muon_lr=0.02, adjust_lr_fn="original")(m)
    assert isinstance(opt, MuonAdamW) and isinstance(opt, torch.optim.Optimizer)
    # Muon's group, and AdamW's undecayed one (the decayed one would hold an untied head: empty here, so dropped)
    assert [g["lr_scale"] for g in opt.param_groups] == [pytest.approx(20.0), 1.0]
    for g in opt.param_groups: g["lr"] = 5e-4                        # what the trainer's schedule does each step
    seen = []
    orig = opt._muon.step
    opt._muon.step = lambda: seen.append([g["lr"] for g in opt._muon.param_groups]) or orig()
    m(*gpt_batch(0))[1].backward()
    opt.step()
    assert seen == [[pytest.approx(0.01)]]                            # 5e-4 × 20 inside the step ...
    assert [g["lr"] for g in opt.param_groups] == [5e-4] * 2          # ... and the schedule's value after it


# ---- every optimizer --------------------------------------------------------------------------------------------------
def test_registry():
    assert list(OPTIMIZERS) == NAMES
    with pytest.raises(TinyLLMError, match="unknown optimizer 'adam'; choose one of adamw, adamw_scratch, lion, sophia, muon"):
        make_optimizer("adam")
    with pytest.raises(TinyLLMError, match="unknown optimizer"):
        TrainConfig(optimizer="lamb")
    with pytest.raises(TinyLLMError, match="'lion' has no setting 'momentum'.*lr, betas, weight_decay"):
        make_optimizer("lion", momentum=0.9)
    with pytest.raises(TinyLLMError, match="betas"):
        make_optimizer("lion", betas=(0.9, 1.0))
    with pytest.raises(TinyLLMError, match="lr="):
        make_optimizer("sophia", lr=-1.0)
    with pytest.raises(TinyLLMError, match="hessian_interval"):
        make_optimizer("sophia", hessian_interval=0)
    with pytest.raises(TinyLLMError, match="adjust_lr_fn"):
        make_optimizer("muon", adjust_lr_fn="bigger")


@pytest.mark.parametrize("name", NAMES)
def test_defaults_and_the_trainer_settings(name):
    m = tiny_gpt()
    betas = {"lion": (0.9, 0.99), "sophia": (0.965, 0.99)}.get(name, (0.9, 0.95))
    opt = make_optimizer(name)(m)                                     # the factory's own defaults
    assert all(g["betas"] == betas for g in opt.param_groups if "betas" in g)
    opt = make_optimizer(name, lr=2e-3, betas=(0.8, 0.9), weight_decay=0.05)(m)   # what the trainer passes
    assert {g["lr"] for g in opt.param_groups} == {2e-3}
    assert all(g["betas"] == (0.8, 0.9) for g in opt.param_groups if "betas" in g)
    assert make_optimizer(name, betas=None) is not None              # None keeps the default


@pytest.mark.parametrize("name", NAMES)
def test_no_weight_decay_on_biases_norms_embeddings(name):
    m = tiny_gpt(tie_weights=False)
    names = {id(p): n for n, p in m.named_parameters()}
    opt = make_optimizer(name, weight_decay=0.1)(m)
    decayed = {names[id(p)] for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decayed == {n for n, p in m.named_parameters() if p.dim() == 2 and "wte" not in n and "wpe" not in n}
    assert sum(len(g["params"]) for g in opt.param_groups) == len(names)


@pytest.mark.parametrize("name", NAMES)
def test_every_optimizer_trains_a_tiny_gpt(name):
    m = tiny_gpt()
    lr = {"lion": 1e-3}.get(name, 3e-3)
    losses = train(m, make_optimizer(name, lr=lr)(m), 0, 40)
    assert np.mean(losses[-5:]) < losses[0] - 1.0, losses


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip_resumes_exactly(name):
    def build():
        m = tiny_gpt()
        kw = dict(hessian_interval=3) if name == "sophia" else {}
        return m, make_optimizer(name, lr=1e-3, **kw)(m)
    m, opt = build()
    train(m, opt, 0, 4)
    buf = io.BytesIO()
    torch.save({"model": m.state_dict(), "opt": opt.state_dict(), "rng": torch.get_rng_state()}, buf)
    train(m, opt, 4, 5)                                             # uninterrupted (Sophia refreshes h at 6 and 9)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)                      # what the trainer's checkpoints use
    m2, opt2 = build()
    m2.load_state_dict(saved["model"])
    opt2.load_state_dict(saved["opt"])
    torch.set_rng_state(saved["rng"])
    train(m2, opt2, 4, 5)
    assert all(torch.equal(p, q) for p, q in zip(m.parameters(), m2.parameters()))
    for p, q in zip(m.parameters(), m2.parameters()):
        for k, v in opt.state[p].items():
            assert torch.equal(v, opt2.state[q][k]) if isinstance(v, torch.Tensor) else v == opt2.state[q][k]


# ---- through the trainer ----------------------------------------------------------------------------------------------
def make_trainer(out_dir, name, seed=0, trainer_cls=Trainer, **kw):
    base = dict(batch_size=4, max_steps=8, lr=1e-3, min_lr=1e-4, warmup_steps=2, eval_interval=4, eval_steps=2,
                checkpoint_interval=4, log_interval=4, device="cpu", dtype="float32", compile=False, progress=False,
                samples=0, optimizer=name, peak_flops=1e12)       # a given peak: no matmul benchmark
    c = TrainConfig(**{**base, **kw})
    batches = RandomBatches(TOKENS, 32, c.batch_size, seed=seed)
    val = RandomBatches(TOKENS[-3000:], 32, c.batch_size, seed=1)
    return trainer_cls(tiny_gpt(seed), batches, c, val_batches=[next(val) for _ in range(c.eval_steps)], out_dir=out_dir,
                       print_fn=lambda s: None)


def losses(out_dir):
    return [r["loss"] for r in read_metrics(out_dir / "metrics.jsonl") if "loss" in r]


@pytest.mark.parametrize("name", ["adamw", "adamw_scratch", "lion", "muon"])
def test_trainer_fits_and_resumes_with_each_optimizer(tmp_path, name):
    full = make_trainer(tmp_path / "full", name)
    out = full.fit()
    assert out["train"]["step"] == 8 and losses(tmp_path / "full")[-1] < losses(tmp_path / "full")[0]
    make_trainer(tmp_path / "half", name).fit(stop_after=4)
    make_trainer(tmp_path / "half", name, seed=99).fit(resume="last")
    assert losses(tmp_path / "full") == losses(tmp_path / "half")


# Whether Trainer.train_step already calls Sophia's hook (the change proposed for it). Until it does, HookedTrainer
# below adds the call, and a plain Trainer with Sophia must stop with the error that names the hook.
TRAINER_CALLS_HOOK = "hessian_hook" in inspect.getsource(Trainer.train_step)


def test_trainer_with_sophia_and_no_hook_says_what_to_do():
    t = make_trainer(None, "sophia", max_steps=12, eval_interval=100, checkpoint_interval=100)
    if TRAINER_CALLS_HOOK:
        t.fit()
        assert t.step == 12 and t.optimizer.param_groups[0]["hessian_updates"] == 1
        return
    with pytest.raises(HessianHookError, match="hessian_hook"):
        t.fit()
    assert t.step == 10


class HookedTrainer(Trainer):
    "The trainer with the change proposed for `train_step` (unless it has it): Sophia's hook after every k-th step."
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        inner, self._last = self.loss_fn, None
        def loss_fn(model, batch):
            self._last = batch
            return inner(model, batch)
        self.loss_fn = loss_fn

    def train_step(self):
        rec = super().train_step()
        k = 0 if TRAINER_CALLS_HOOK else getattr(self.optimizer, "hessian_interval", 0)
        if k and self.step % k == 0 and not rec.get("skipped_step"):
            self.optimizer.hessian_hook(self.fwd, self._last, amp=self._amp, grad_clip=self.cfg.grad_clip)
        return rec


def test_trainer_with_the_sophia_hook(tmp_path):
    t = make_trainer(tmp_path / "full", "sophia", trainer_cls=HookedTrainer, max_steps=12, checkpoint_interval=6,
                     eval_interval=6)
    t.fit()
    assert t.optimizer.param_groups[0]["hessian_updates"] == 1
    ls = losses(tmp_path / "full")
    assert len(ls) == 12 and ls[-1] < ls[0]
    make_trainer(tmp_path / "half", "sophia", trainer_cls=HookedTrainer, max_steps=12, checkpoint_interval=6,
                 eval_interval=6).fit(stop_after=6)
    make_trainer(tmp_path / "half", "sophia", trainer_cls=HookedTrainer, max_steps=12, checkpoint_interval=6,
                 eval_interval=6, seed=5).fit(resume="last")
    assert losses(tmp_path / "half") == ls
