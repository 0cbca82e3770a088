"""Tests of tinyllm.model on tiny configurations (the whole file runs in well under a minute on 2 CPU cores)."""
import math

import pytest
import torch
import torch.nn.functional as F

from tinyllm.core import TinyLLMError
from tinyllm.trainer import make_train_step
from tinyllm import kernels as K
from tinyllm.kernels import bmm_attention, chunked_cross_entropy
from tinyllm.model import (ARCHS, GPT, PRESETS, GPTConfig, Kernels, KVCache, StateDictMismatchError, sdpa_attention,
                           torch_cross_entropy)
from tinyllm.perf import chinchilla, mfu, peak_memory
from tinyllm.weights import export_hf


def tiny(arch="gpt2", **kw):
    torch.manual_seed(0)
    return GPT(GPTConfig.from_preset("tiny", arch=arch, **kw))


def ids(B=2, T=16, V=256, seed=1):
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


# ---- configuration -----------------------------------------------------------------------------------------------
def test_presets_and_roundtrip():
    seed = GPTConfig.from_preset("seed")
    assert (seed.n_embd, seed.n_layer, seed.n_head, seed.block_size) == (256, 6, 8, 256)
    for name in PRESETS:
        c = GPTConfig.from_preset(name)
        assert GPTConfig.from_dict(c.to_dict()) == c
    assert GPTConfig.from_preset("seed", vocab_size=50257).vocab_size == 50257


@pytest.mark.parametrize("kw, words", [
    (dict(n_embd=250, n_head=8), ["n_embd=250", "n_head=8", "divisible"]),
    (dict(arch="bert"), ["arch='bert'", "gpt2"]),
    (dict(arch="llama", bias=True), ["bias=False"]),
    (dict(n_kv_head=2), ["llama"]),
    (dict(arch="llama", n_kv_head=3), ["n_kv_head=3"]),
    (dict(dropout=1.5), ["dropout"]),
    (dict(vocab_size=0), ["vocab_size"]),
    (dict(arch="llama", n_embd=12, n_head=4), ["even"]),
])
def test_config_errors_name_the_problem(kw, words):
    with pytest.raises(TinyLLMError) as e:
        GPTConfig(**kw)
    for w in words: assert w in str(e.value)


def test_unknown_preset_and_field():
    with pytest.raises(TinyLLMError, match="seed"): GPTConfig.from_preset("huge")
    with pytest.raises(TinyLLMError, match="n_embed"): GPTConfig.from_preset("seed", n_embed=128)


# ---- forward contract ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_shapes_and_loss_at_init(arch):
    m = tiny(arch)
    x = ids(3, 20)
    logits, loss = m(x)
    assert logits.shape == (3, 20, 256) and loss is None
    logits, loss = m(x, ids(3, 20, seed=2))
    assert abs(loss.item() - math.log(256)) < 0.1            # uniform prediction at init
    last, _ = m(x, last_only=True)
    assert last.shape == (3, 1, 256) and torch.allclose(last[:, 0], logits[:, -1], atol=1e-6)


def test_ignore_index_and_loss_matches_reference():
    m = tiny()
    x, y = ids(2, 16), ids(2, 16, seed=3)
    y[0, :5] = -100
    logits, loss = m(x, y)
    ref = F.cross_entropy(logits.view(-1, 256), y.view(-1), ignore_index=-100)
    assert torch.allclose(loss, ref, atol=1e-6)


def test_chunked_cross_entropy_grad():
    lg = torch.randn(130, 37, dtype=torch.float64, requires_grad=True)
    tg = torch.randint(0, 37, (130,))
    tg[::5] = -100
    a, = torch.autograd.grad(F.cross_entropy(lg, tg), lg)
    b, = torch.autograd.grad(chunked_cross_entropy(lg, tg, chunk=16), lg)
    assert torch.allclose(a, b, atol=1e-7)
    bf = lg.detach().bfloat16().requires_grad_()
    g, = torch.autograd.grad(chunked_cross_entropy(bf, tg), bf)
    assert g.dtype == torch.bfloat16


def test_weight_tying():
    m = tiny()
    assert m.lm_head.weight is m.transformer.wte.weight
    u = tiny(tie_weights=False)
    assert u.lm_head.weight is not u.transformer.wte.weight
    assert u.num_params(False) - m.num_params(False) == 256 * 64


def test_init_scales_residual_projections():
    m = GPT(GPTConfig.from_preset("seed"))
    std = m.transformer.h[0].attn.c_proj.weight.std().item()
    assert abs(std - 0.02 / math.sqrt(2 * 6)) < 0.001
    assert abs(m.transformer.h[0].attn.c_attn.weight.std().item() - 0.02) < 0.001


# ---- parameter and FLOP counting -------------------------------------------------------------------------------
def test_param_count_by_hand():
    # seed, gpt2, V=8192: embeddings V*d + T*d; per layer: qkv 3d^2+3d, proj d^2+d, fc 4d^2+4d, proj 4d^2+d, 2 LNs 4d
    d, L, V, T = 256, 6, 8192, 256
    per_layer = 12 * d * d + 13 * d
    total = V * d + T * d + L * per_layer + 2 * d
    m = GPT(GPTConfig.from_preset("seed"))
    assert m.num_params(non_embedding=False) == total
    assert m.num_params() == total - V * d - T * d
    # llama seed: no biases, SwiGLU hidden 704 (= 682 rounded up to 64), RMSNorm gains only
    ml = GPT(GPTConfig.from_preset("seed-llama"))
    assert ml.num_params(False) == V * d + L * (4 * d * d + 3 * d * 704 + 2 * d) + d


def test_flops_and_mfu():
    m = GPT(GPTConfig.from_preset("seed"))
    n = m.num_params() + 8192 * 256
    assert m.flops_per_token() == 6 * n + 12 * 6 * 256 * 256
    assert m.flops_per_token(training=False) == 2 * n + 4 * 6 * 256 * 256
    assert mfu(m.flops_per_token(), 1000, m.flops_per_token() * 2000) == pytest.approx(0.5)
    with pytest.raises(TinyLLMError, match="peak_flops"): mfu(1.0, 1.0, 0.0)


def test_chinchilla():
    c = chinchilla(params=10e6)
    assert c["tokens"] == 200e6 and c["compute"] == pytest.approx(6 * 10e6 * 200e6)
    assert chinchilla(compute=c["compute"])["params"] == pytest.approx(10e6)
    with pytest.raises(TinyLLMError): chinchilla()
    with pytest.raises(TinyLLMError): chinchilla(compute=1e18, params=1e6)


# ---- KV cache ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_kv_cache_equals_full_forward(arch):
    extra = dict(n_kv_head=2) if arch == "llama" else {}
    m = tiny(arch, **extra).eval()
    x = ids(2, 24)
    full, _ = m(x)
    cache = m.new_kv_cache(2)
    step = torch.cat([m(x[:, i:i + 1], kv_cache=cache)[0] for i in range(24)], dim=1)
    assert (step - full).abs().max() < 1e-5
    cache.reset()
    chunks = torch.cat([m(x[:, a:b], kv_cache=cache)[0] for a, b in [(0, 7), (7, 8), (8, 20), (20, 24)]], dim=1)
    assert (chunks - full).abs().max() < 1e-5
    cache.crop(8)                                                # roll back and re-feed
    again, _ = m(x[:, 8:24], kv_cache=cache)
    assert (again - full[:, 8:]).abs().max() < 1e-5


@pytest.mark.parametrize("arch", ARCHS)
def test_generate_cached_equals_uncached(arch):
    from tinyllm.decode import generate                          # the decoding loops live in chapter 4
    m = tiny(arch)
    prompt = ids(2, 5)
    for kw in [dict(temperature=0.0), dict(temperature=0.8, top_k=10)]:
        a = generate(m, prompt, 70, generator=torch.Generator().manual_seed(0), **kw)   # 75 > block 64: window slides
        b = generate(m, prompt, 70, generator=torch.Generator().manual_seed(0), use_cache=False, **kw)
        assert a.shape == (2, 75) and torch.equal(a, b)
    assert m.training                                            # generate restores the mode
    assert not hasattr(m, "generate")                            # one generation code path: chapter 4


def test_kv_cache_bounds():
    m = tiny().eval()
    cache = m.new_kv_cache(1, max_len=10)
    m(ids(1, 8), kv_cache=cache)
    with pytest.raises(TinyLLMError, match="max_len"): m(ids(1, 3), kv_cache=cache)
    with pytest.raises(TinyLLMError, match="batch"): m(ids(2, 1), kv_cache=cache)
    with pytest.raises(TinyLLMError): KVCache(m.config, 1, max_len=1000)


# ---- gradient checkpointing ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_grad_checkpoint_identical_and_smaller(arch):
    res = []
    for ck in (False, True):
        m = tiny(arch, grad_checkpoint=ck, dropout=0.1)
        x = ids(4, 64)
        out = {}

        def step(m=m, x=x, out=out):
            torch.manual_seed(5)
            _, out["loss"] = m(x, x)
            out["loss"].backward()
        peak = peak_memory(step)
        res.append((out["loss"].item(), {n: p.grad for n, p in m.named_parameters()}, peak))
    (l0, g0, p0), (l1, g1, p1) = res
    assert l0 == l1
    assert all(torch.equal(g0[n], g1[n]) for n in g0)
    assert p1 < 0.8 * p0, (p0, p1)


@pytest.mark.parametrize("arch", ARCHS)
def test_grad_checkpoint_with_default_bf16_step(arch):
    # the default CPU path (bf16 autocast, bmm_attention) must recompute exactly what it computed in forward
    losses = []
    for ck in (False, True):
        m = tiny(arch, grad_checkpoint=ck)
        step = make_train_step(m, torch.optim.AdamW(m.parameters(), lr=1e-3), dtype=torch.bfloat16, compile=False)
        x = ids(2, 65)
        losses.append([step(x[:, :-1], x[:, 1:]).item() for _ in range(3)])
    assert losses[0] == losses[1]


# ---- Hugging Face export ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("over", [dict(arch="gpt2"), dict(arch="gpt2", bias=False, tie_weights=False),
                                  dict(arch="llama"), dict(arch="llama", n_kv_head=2, tie_weights=False)])
def test_export_hf_logits_match(tmp_path, over):
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    m = tiny(**over).eval()
    with torch.no_grad():
        for p in m.parameters(): p.add_(0.02 * torch.randn_like(p))
    export_hf(m, tmp_path)
    assert (tmp_path / "config.json").is_file() and (tmp_path / "model.safetensors").is_file()
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    expected = "GPT2LMHeadModel" if over["arch"] == "gpt2" else "LlamaForCausalLM"
    assert type(hf).__name__ == expected
    x = ids(2, 48)
    with torch.no_grad():
        ours, theirs = m(x)[0], hf(x).logits
        other = tiny(**over).eval()(x)[0]                         # an unperturbed model must NOT match
    assert (ours - theirs).abs().max() < 1e-4
    assert (other - theirs).abs().max() > 1e-3


# ---- bad input and state dicts ---------------------------------------------------------------------------------------
def test_bad_input_errors():
    m = tiny()
    with pytest.raises(TinyLLMError, match="block_size=64"): m(ids(1, 65))
    with pytest.raises(TinyLLMError, match="token id 256"): m(torch.full((1, 4), 256))
    with pytest.raises(TinyLLMError, match="token id -1"): m(torch.full((1, 4), -1))
    with pytest.raises(TinyLLMError, match="batch"): m(torch.zeros(4, dtype=torch.long))
    with pytest.raises(TinyLLMError, match="integer"): m(torch.zeros(1, 4))


def test_state_dict_mismatch_names_it():
    m = tiny()
    other = GPT(GPTConfig.from_preset("tiny", vocab_size=300, n_layer=3))
    with pytest.raises(StateDictMismatchError) as e:
        m.load_state_dict(other.state_dict())
    msg = str(e.value)
    assert "transformer.wte.weight: checkpoint (300, 64) vs model (256, 64)" in msg
    assert "n_layer=3" in msg and "vocab_size=300" in msg
    assert isinstance(e.value, TinyLLMError)
    with pytest.raises(StateDictMismatchError, match="tie_weights=False"):
        m.load_state_dict(tiny(tie_weights=False).state_dict())
    with pytest.raises(StateDictMismatchError, match="arch='llama'"):
        m.load_state_dict(tiny("llama").state_dict())


def test_state_dict_roundtrip_strips_compile_prefix():
    a, b = tiny(), GPT(GPTConfig.from_preset("tiny"))
    b.load_state_dict({"_orig_mod." + k: v for k, v in a.state_dict().items()})
    x = ids()
    assert torch.equal(a(x)[0], b(x)[0])


# ---- the attention kernel rule ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_compiled_path_matches_eager():
    # torch.compile (with the Inductor-fused textbook loss) trains exactly like the eager model with the chunked loss
    x = ids(2, 33)
    losses = []
    for compiled in (False, True):
        m = tiny()
        step = make_train_step(m, torch.optim.AdamW(m.parameters(), lr=1e-3), dtype=torch.float32, compile=compiled)
        losses.append([step(x[:, :-1], x[:, 1:]).item() for _ in range(3)])
        assert m.kernels == Kernels(sdpa_attention, torch_cross_entropy if compiled else chunked_cross_entropy)
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)


@pytest.mark.parametrize("arch", ARCHS)
def test_bmm_attention_kernel_matches_sdpa(arch):
    q, k, v = (torch.randn(2, 3, 10, 8, dtype=torch.float64, requires_grad=True) for _ in range(3))
    a, b = F.scaled_dot_product_attention(q, k, v, is_causal=True), bmm_attention(q, k, v)
    assert torch.allclose(a, b, atol=1e-10)
    ga, gb = torch.autograd.grad(a.sum(), (q, k, v)), torch.autograd.grad(b.sum(), (q, k, v))
    assert all(torch.allclose(x, y, atol=1e-10) for x, y in zip(ga, gb))
    # inside the model: same loss and gradients with every kernel choice (fp32), GQA included for llama
    m = tiny(arch, **(dict(n_kv_head=2) if arch == "llama" else {}))
    x = ids(2, 40)
    res = []
    for kernels in (Kernels(sdpa_attention, chunked_cross_entropy), Kernels(bmm_attention, chunked_cross_entropy),
                    Kernels(bmm_attention, torch_cross_entropy)):
        m.zero_grad()
        m.kernels = kernels
        _, loss = m(x, x)
        loss.backward()
        res.append((loss.item(), [p.grad.clone() for p in m.parameters()]))
    for other in res[1:]:
        assert res[0][0] == pytest.approx(other[0], abs=1e-6)
        assert all(torch.allclose(g0, g1, atol=1e-6) for g0, g1 in zip(res[0][1], other[1]))
    with pytest.raises(TinyLLMError, match="bmm_attention"): Kernels(attention="bmm")      # a function, not a name
    with pytest.raises(TinyLLMError, match="chunked_cross_entropy"): Kernels(loss="fused")


def count_calls(monkeypatch, fn_class):
    "Count the calls that reach a kernel's autograd function."
    calls = []
    real = fn_class.apply
    monkeypatch.setattr(fn_class, "apply", lambda *a: calls.append(1) or real(*a))
    return calls


def test_training_step_uses_the_kernels_of_the_rule_and_keeps_an_explicit_choice(monkeypatch):
    # behaviour, not the rule's text: which kernels actually run in a training step
    attn, loss = count_calls(monkeypatch, K._BmmCausalAttention), count_calls(monkeypatch, K._ChunkedCrossEntropy)
    x = ids(2, 17)
    m = tiny()
    assert m.kernels is None
    m(x, x)                                                  # a bare model: PyTorch's SDPA and loss
    assert (len(attn), len(loss)) == (0, 0)
    step = make_train_step(m, torch.optim.SGD(m.parameters(), lr=0.0), dtype=torch.bfloat16, compile=False)
    step(x[:, :-1], x[:, 1:])                                # bf16 training on a CPU: bmm_attention in every layer
    assert len(attn) == m.config.n_layer and len(loss) == 1
    m32 = tiny()
    make_train_step(m32, torch.optim.SGD(m32.parameters(), lr=0.0), dtype=torch.float32, compile=False)(x, x)
    assert len(attn) == m.config.n_layer                     # float32: SDPA
    mine = GPT(GPTConfig.from_preset("tiny"), kernels=Kernels(sdpa_attention, torch_cross_entropy))
    make_train_step(mine, torch.optim.SGD(mine.parameters(), lr=0.0), dtype=torch.bfloat16, compile=False)(x, x)
    assert mine.kernels == Kernels() and len(attn) == m.config.n_layer and len(loss) == 2
    m.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        m(x[:, :1], kv_cache=m.new_kv_cache(2))              # decoding with a KV cache: always SDPA
    assert len(attn) == m.config.n_layer


# ---- the speedrun options (QK-norm, ReLU², zero-initialised projections, logit soft-cap) ---------------------------
SPEEDRUN = dict(qk_norm=True, mlp_act="relu2", zero_init_proj=True, logit_softcap=15.0)


@pytest.mark.parametrize("arch", ARCHS)
def test_speedrun_options_keep_the_kv_cache_exact_and_learn(arch):
    m = tiny(arch, **SPEEDRUN)
    x = ids(2, 20)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    for _ in range(3):                                           # leave the zero init, so the check below means something
        opt.zero_grad(); m(x, x)[1].backward(); opt.step()
    m.eval()
    full, _ = m(x)
    assert full.abs().max() < 15                                 # soft-capped
    cache = m.new_kv_cache(2)
    step = torch.cat([m(x[:, i:i + 1], kv_cache=cache)[0] for i in range(20)], dim=1)
    assert (step - full).abs().max() < 1e-5
    assert all(b.attn.c_proj.weight.abs().sum() > 0 for b in m.transformer.h)


@pytest.mark.parametrize("arch", ARCHS)
def test_qk_norm_under_bf16_autocast_with_the_bmm_kernel(arch):
    m = tiny(arch, qk_norm=True)
    m.kernels = Kernels(bmm_attention, chunked_cross_entropy)
    x = ids(2, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, loss = m(x, x)
    loss.backward()                                              # the norms return float32; attention must get one dtype
    assert loss.isfinite()


def test_speedrun_options_are_checked_and_refused_by_hf_export(tmp_path):
    with pytest.raises(TinyLLMError, match="mlp_act"): GPTConfig.from_preset("tiny", mlp_act="tanh")
    with pytest.raises(TinyLLMError, match="logit_softcap"): GPTConfig.from_preset("tiny", logit_softcap=-1.0)
    assert GPTConfig.from_preset("tiny").act == "gelu" and GPTConfig.from_preset("tiny", arch="llama").act == "swiglu"
    assert GPTConfig.from_preset("tiny", arch="llama", mlp_act="relu2").hidden == 4 * 64
    for over in (dict(qk_norm=True), dict(mlp_act="relu2"), dict(logit_softcap=30.0)):
        with pytest.raises(ValueError, match=next(iter(over))): export_hf(tiny(**over), tmp_path)
    export_hf(tiny(zero_init_proj=True), tmp_path)               # an initialisation: nothing to refuse


def test_export_hf_writes_the_tokenizers_end_of_text_id(tmp_path):
    import json
    m = tiny()
    cfg = json.loads((export_hf(m, tmp_path / "eot", eos_token_id=255) / "config.json").read_text())
    assert cfg["eos_token_id"] == cfg["bos_token_id"] == 255                 # not GPT-2's 50256 for a 256-id vocabulary
    cfg = json.loads((export_hf(m, tmp_path / "none") / "config.json").read_text())
    assert cfg["eos_token_id"] is None and cfg["bos_token_id"] is None
    with pytest.raises(ValueError, match="eot_id"): export_hf(m, tmp_path / "bad", eos_token_id=50256)
