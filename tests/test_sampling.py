"""tinyllm.sampling: transforms, decoders, Hugging Face equivalence, properties, speculative decoding, CLI."""
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from tinyllm import decode, inference, metrics, sampling, speculative
from tinyllm.core import TinyLLMError
from tinyllm.model import GPT, GPTConfig
from tinyllm.weights import export_hf

# chapter 4's modules as one namespace: the transforms and decoders, beam/contrastive/generate, speculative decoding,
# checkpoints and the CLI, and the text metrics
S = SimpleNamespace(**{k: getattr(m, k) for m in (sampling, decode, speculative, inference, metrics) for k in dir(m)
                       if not k.startswith("__")})

ARCHS = ("gpt2", "llama")


def peaked(arch="gpt2", seed=0, vocab=256, scale=25.0, **kw):
    "A tiny seeded GPT whose next-token distributions are peaked (random init is almost uniform): embeddings scaled up."
    torch.manual_seed(seed)
    m = GPT(GPTConfig(vocab_size=vocab, block_size=64, n_layer=2, n_head=4, n_embd=64, arch=arch, **kw)).eval()
    with torch.no_grad(): m.transformer.wte.weight.mul_(scale)
    return m


@pytest.fixture(scope="module", params=ARCHS)
def pair(request, tmp_path_factory):
    "(our model, the same weights in transformers, a (2, 6) prompt, an end-of-text id that greedy meets early)."
    transformers = pytest.importorskip("transformers")
    m = peaked(request.param)
    d = export_hf(m, tmp_path_factory.mktemp(f"hf-{request.param}"))
    hf = transformers.AutoModelForCausalLM.from_pretrained(d).eval()
    prompt = torch.randint(0, 256, (2, 6), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (hf(prompt).logits - m(prompt)[0]).abs().max() < 1e-4
    eot = int(S.greedy(m, prompt, 8)[0, 10])             # row 0 reaches it on its 5th new token: per-row stopping
    return m, hf, prompt, eot


def hf_generate(hf, prompt, eot, **kw):
    with torch.no_grad():
        return hf.generate(prompt, attention_mask=torch.ones_like(prompt), eos_token_id=eot, pad_token_id=eot,
                           top_k=kw.pop("top_k", 0), **kw)


# ---- Hugging Face equivalence -------------------------------------------------------------------------------------
def test_greedy_equals_hf(pair):
    m, hf, prompt, eot = pair
    ours = S.greedy(m, prompt, 20, eot_id=eot)
    assert torch.equal(ours, hf_generate(hf, prompt, eot, max_new_tokens=20, do_sample=False))
    assert (ours[0, 11:] == eot).all() and not (ours[1, 6:] == eot).all()


def test_greedy_with_penalties_equals_hf(pair):
    m, hf, prompt, eot = pair
    ours = S.greedy(m, prompt, 30, eot_id=eot, transforms=S.make_transforms(repetition_penalty=1.3, no_repeat_ngram=2))
    theirs = hf_generate(hf, prompt, eot, max_new_tokens=30, do_sample=False, repetition_penalty=1.3,
                         no_repeat_ngram_size=2)
    assert torch.equal(ours, theirs)


BEAM_SETTINGS = [(-1.0, False), (0.0, True), (1.0, "never"), (2.0, False), (1.0, True), (0.5, "never")]


@pytest.mark.slow
@pytest.mark.parametrize("num_beams", [1, 2, 3, 5])
def test_beam_search_equals_hf(pair, num_beams):
    "Several widths, length penalties (negative favours short hypotheses) and early-stopping modes; the n best."
    m, hf, prompt, eot = pair
    settings = BEAM_SETTINGS if num_beams >= 3 else BEAM_SETTINGS[num_beams % 2::2]
    for length_penalty, early in settings:
        n_best = min(2, num_beams)
        ours = S.beam_search(m, prompt, 15, num_beams, length_penalty, early, eot_id=eot, n_best=n_best)
        theirs = hf_generate(hf, prompt, eot, max_new_tokens=15, num_beams=num_beams, do_sample=False,
                             length_penalty=length_penalty, early_stopping=early, num_return_sequences=n_best,
                             output_scores=True, return_dict_in_generate=True)
        seqs = ours.sequences.reshape(-1, ours.sequences.shape[-1])
        assert torch.equal(seqs, theirs.sequences), (num_beams, length_penalty, early)
        if num_beams > 1:
            assert torch.allclose(ours.scores.reshape(-1), theirs.sequences_scores, atol=1e-4)


def test_beam_search_with_penalties_equals_hf(pair):
    m, hf, prompt, eot = pair
    ours = S.beam_search(m, prompt, 20, 3, eot_id=eot, transforms=[S.NoRepeatNGram(2), S.RepetitionPenalty(1.5)])
    theirs = hf_generate(hf, prompt, eot, max_new_tokens=20, num_beams=3, do_sample=False, no_repeat_ngram_size=2,
                         repetition_penalty=1.5)
    assert torch.equal(ours.sequences[:, 0], theirs)


SAMPLING = [dict(), dict(temperature=0.7), dict(top_k=5), dict(top_p=0.8), dict(min_p=0.1), dict(typical_p=0.7),
            dict(temperature=1.3, top_k=20, top_p=0.9, min_p=0.02), dict(repetition_penalty=1.2, no_repeat_ngram=3)]


@pytest.mark.parametrize("kw", SAMPLING, ids=lambda kw: ",".join(kw) or "plain")
def test_sampling_equals_hf_with_the_same_seed(pair, kw):
    "transformers draws with torch.multinomial from the global RNG; we draw the same way from a generator seeded alike."
    m, hf, prompt, eot = pair
    hf_kw = {("no_repeat_ngram_size" if k == "no_repeat_ngram" else k): v for k, v in kw.items()}
    for seed in range(3):
        ours = S.sample(m, prompt, 25, S.make_transforms(**kw), torch.Generator().manual_seed(seed), eot_id=eot)
        torch.manual_seed(seed)
        theirs = hf_generate(hf, prompt, eot, max_new_tokens=25, do_sample=True, **hf_kw)
        assert torch.equal(ours, theirs), (kw, seed)


def test_processed_distributions_equal_hf():
    "Every transform against its transformers counterpart on random logits and ids, to 1e-6 in probability."
    from transformers.generation import logits_process as L
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 300, generator=g) * 3
    ids = torch.randint(0, 300, (4, 40), generator=g)
    pairs = [(S.Temperature(0.6), L.TemperatureLogitsWarper(0.6)), (S.TopK(7), L.TopKLogitsWarper(7)),
             (S.TopP(0.7), L.TopPLogitsWarper(0.7)), (S.MinP(0.05), L.MinPLogitsWarper(0.05)),
             (S.TypicalP(0.8), L.TypicalLogitsWarper(0.8)), (S.RepetitionPenalty(1.4), L.RepetitionPenaltyLogitsProcessor(1.4)),
             (S.NoRepeatNGram(1), L.NoRepeatNGramLogitsProcessor(1)), (S.NoRepeatNGram(2), L.NoRepeatNGramLogitsProcessor(2))]
    for ours, theirs in pairs:
        a, b = ours(logits, ids), theirs(ids, logits.clone())
        assert torch.equal(a.isinf(), b.isinf()), ours
        assert (F.softmax(a, -1) - F.softmax(b, -1)).abs().max() < 1e-6, ours


@pytest.mark.filterwarnings("ignore:`past_key_values` is deprecated")
def test_contrastive_equals_hf_algorithm(pair):
    """transformers >= 4.56 moved contrastive search to a Hub repo (transformers-community/contrastive-search) that an
    offline machine cannot fetch; this replays its algorithm (4.55's `_contrastive_search`/`_ranking_fast`) on the
    transformers model, its own KV cache and hidden states, and compares the tokens."""
    m, hf, prompt, eot = pair
    for alpha, k in ((0.6, 4), (0.3, 6), (0.9, 2)):
        ours = S.contrastive_search(m, prompt, 20, alpha, k, eot_id=eot)
        assert torch.equal(ours, hf_contrastive(hf, prompt, 20, alpha, k, eot)), (alpha, k)


def hf_contrastive(hf, input_ids, max_new_tokens, alpha, top_k, pad):
    "transformers 4.55's contrastive search loop (decoder-only, no padding), written against a transformers model."
    B = input_ids.shape[0]
    with torch.no_grad():
        out = hf(input_ids, use_cache=True, output_hidden_states=True)
        past, last_hidden, logit = out.past_key_values, out.hidden_states[-1], out.logits[:, -1, :]
        unfinished = torch.ones(B, dtype=torch.long)
        for _ in range(max_new_tokens):
            probs = F.softmax(logit, dim=-1)
            top_k_probs, top_k_ids = torch.topk(probs, dim=-1, k=top_k)
            past.batch_repeat_interleave(top_k)
            o = hf(top_k_ids.view(-1, 1), past_key_values=past, use_cache=True, output_hidden_states=True)
            past, next_hidden, logits = o.past_key_values, o.hidden_states[-1], o.logits[:, -1, :]
            context_hidden = last_hidden.repeat_interleave(top_k, dim=0)
            nc = context_hidden / context_hidden.norm(dim=2, keepdim=True)
            nn_ = next_hidden / next_hidden.norm(dim=2, keepdim=True)
            cosine = torch.matmul(nc, nn_.transpose(1, 2)).squeeze(-1)
            degeneration_penalty, _ = torch.max(cosine, dim=-1)
            score = (1.0 - alpha) * top_k_probs.view(-1) - alpha * degeneration_penalty
            selected = torch.stack(torch.split(score, top_k)).max(dim=-1)[1]
            next_hidden = torch.stack(torch.split(next_hidden.squeeze(1), top_k))[range(B), selected, :]
            last_hidden = torch.cat([last_hidden, next_hidden.unsqueeze(1)], dim=1)
            logit = torch.stack(torch.split(logits, top_k))[range(B), selected, :]
            past.batch_select_indices(torch.arange(B) * top_k + selected)
            nxt = top_k_ids[range(B), selected] * unfinished + pad * (1 - unfinished)
            input_ids = torch.cat([input_ids, nxt[:, None]], dim=-1)
            unfinished = unfinished & (nxt != pad).long()
            if unfinished.max() == 0: break
    return input_ids


# ---- properties -------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model():
    return peaked("gpt2", seed=3, scale=8.0)


PROMPT = torch.randint(0, 256, (3, 4), generator=torch.Generator().manual_seed(2))


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_greedy_is_deterministic_and_cache_free(model):
    a = S.greedy(model, PROMPT, 30)
    assert torch.equal(a, S.greedy(model, PROMPT, 30)) and torch.equal(a, S.greedy(model, PROMPT, 30, use_cache=False))


@pytest.mark.parametrize("arch", ARCHS)
def test_kv_cache_equals_recomputing_the_prefix(arch):
    m = peaked(arch, seed=4, scale=4.0)
    chain = S.make_transforms(temperature=0.9, top_p=0.95, repetition_penalty=1.1)
    for run in (lambda c: S.sample(m, PROMPT, 70, chain, gen(1), use_cache=c),         # 74 > 64: window slides
                   lambda c: S.beam_search(m, PROMPT, 20, 3, use_cache=c).sequences,
                   lambda c: S.contrastive_search(m, PROMPT, 20, 0.5, 3, use_cache=c)):
        assert torch.equal(run(True), run(False))


def test_top_k_1_and_beam_1_are_greedy(model):
    g = S.greedy(model, PROMPT, 25)
    assert torch.equal(S.sample(model, PROMPT, 25, [S.TopK(1)], gen()), g)
    assert torch.equal(S.sample(model, PROMPT, 25, [S.Temperature(1.7), S.TopK(1)], gen()), g)
    assert torch.equal(S.beam_search(model, PROMPT, 25, num_beams=1).sequences[:, 0], g)


def test_top_p_1_is_multinomial(model):
    for seed in range(3):
        assert torch.equal(S.sample(model, PROMPT, 30, [S.TopP(1.0)], gen(seed)), S.sample(model, PROMPT, 30, [], gen(seed)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_multinomial_ids_draws_as_torch(dtype, monkeypatch):
    "The bulk draw: torch.multinomial's ids and generator state, normalized or not, zeros never drawn, any batch size."
    for B, V in ((1, 8192), (8, 8192), (3, 50257), (2, 2), (5, 1)):
        for seed in range(4):
            w = torch.rand(B, V, generator=torch.Generator().manual_seed(seed), dtype=dtype) ** 4 * (seed + 1)
            if V > 2: w[:, 1::3] = 0
            g, h = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
            for _ in range(3):
                a = S.multinomial_ids(w, g)
                assert torch.equal(a, torch.multinomial(w, 1, generator=h).squeeze(1)) and a.dtype == torch.long
                assert V <= 2 or not (a % 3 == 1).any()
            assert torch.equal(g.get_state(), h.get_state())
    w = torch.rand(4, 100)
    torch.manual_seed(3); a = S.multinomial_ids(w)                       # the global generator, as transformers uses
    torch.manual_seed(3); assert torch.equal(a, torch.multinomial(w, 1).squeeze(1))
    monkeypatch.setattr(sampling, "_same_as_torch", False)              # a PyTorch that draws differently: its own call
    g = torch.Generator().manual_seed(0)
    assert torch.equal(S.multinomial_ids(w, g), torch.multinomial(w, 1, generator=torch.Generator().manual_seed(0)).squeeze(1))


@pytest.mark.parametrize("bad", [[float("nan"), 1.0], [0.0, 0.0], [float("inf"), 1.0], [-1.0, 0.0], [-1.0, 0.5]])
def test_multinomial_ids_rejects_what_torch_rejects(bad):
    w = torch.tensor([[0.5, 0.5], bad])
    with pytest.raises(S.SamplingError, match="cannot sample"): S.multinomial_ids(w)
    with pytest.raises(RuntimeError): torch.multinomial(w, 1)


def test_contrastive_alpha_0_is_greedy(model):
    assert torch.equal(S.contrastive_search(model, PROMPT, 25, penalty_alpha=0.0, top_k=5), S.greedy(model, PROMPT, 25))


def test_seeded_through_the_generator_only(model):
    torch.manual_seed(0)
    a = S.sample(model, PROMPT, 20, [], gen(5))
    torch.manual_seed(1)                                   # the global RNG does not matter
    assert torch.equal(a, S.sample(model, PROMPT, 20, [], gen(5)))
    state = torch.get_rng_state()
    S.sample(model, PROMPT, 20, [], gen(5))
    assert torch.equal(state, torch.get_rng_state())        # and is not consumed


def entropy(logits):
    logp = F.log_softmax(logits, -1)
    return -(logp.exp() * logp).nan_to_num().sum(-1)


def test_temperature_orders_entropy_and_approaches_greedy():
    logits = torch.randn(16, 100, generator=gen()) * 2
    ents = [entropy(S.Temperature(t)(logits)) for t in (0.25, 0.5, 1.0, 2.0, 4.0)]
    assert all((a < b).all() for a, b in zip(ents, ents[1:]))
    cold = F.softmax(S.Temperature(1e-3)(logits), -1)
    assert torch.equal(cold.argmax(-1), logits.argmax(-1)) and (cold.max(-1).values > 0.999).all()


ALL_TRANSFORMS = [S.Temperature(0.5), S.Temperature(3.0), S.TopK(1), S.TopK(10), S.TopP(0.01), S.TopP(0.5), S.TopP(1.0),
                  S.MinP(0.01), S.MinP(0.9), S.TypicalP(0.2), S.TypicalP(1.0), S.RepetitionPenalty(1.5),
                  S.RepetitionPenalty(0.7), S.FrequencyPenalty(0.5, 0.3), S.NoRepeatNGram(1), S.NoRepeatNGram(3)]


@pytest.mark.parametrize("t", ALL_TRANSFORMS, ids=repr)
def test_transforms_keep_a_distribution_and_never_unmask(t):
    g = gen(7)
    logits = torch.randn(8, 50, generator=g) * 3
    logits[:, :5] = float("-inf")                          # masked before (e.g. by a constraint)
    ids = torch.randint(5, 50, (8, 12), generator=g)
    out = t(logits, ids)
    assert out.shape == logits.shape and not out.isnan().any()
    p = F.softmax(out, -1)
    assert torch.allclose(p.sum(-1), torch.ones(8)) and (p >= 0).all() and (p[:, :5] == 0).all()
    assert torch.isfinite(out).any(-1).all()               # at least one token survives
    assert not torch.multinomial(p, 200, replacement=True, generator=g).lt(5).any()


def test_composition_in_a_list_equals_nesting():
    logits, ids = torch.randn(4, 30, generator=gen()), torch.randint(0, 30, (4, 8), generator=gen())
    chain = [S.RepetitionPenalty(1.3), S.Temperature(0.8), S.TopK(10), S.TopP(0.9)]
    nested = S.TopP(0.9)(S.TopK(10)(S.Temperature(0.8)(S.RepetitionPenalty(1.3)(logits, ids))))
    assert torch.equal(S.process(logits, ids, chain), nested)


def test_per_row_stopping(model):
    g = S.greedy(model, PROMPT, 12)
    eot = int(g[1, 7])                                     # row 1 meets it after 4 new tokens
    out = S.greedy(model, PROMPT, 12, eot_id=eot)
    row = out[1, 4:].tolist()
    assert row[:row.index(eot) + 1] == g[1, 4:4 + row.index(eot) + 1].tolist() and set(row[row.index(eot):]) == {eot}
    everyone = S.greedy(model, PROMPT[1:2], 12, eot_id=eot)
    assert everyone.shape[1] == 4 + g[1, 4:].tolist().index(eot) + 1   # a batch whose rows all stopped ends early


@pytest.mark.parametrize("bad,match", [
    (lambda: S.Temperature(-0.5), "temperature"), (lambda: S.TopK(0), "top_k"), (lambda: S.TopP(0.0), "top_p"),
    (lambda: S.TopP(1.01), "top_p"), (lambda: S.MinP(2), "min_p"), (lambda: S.NoRepeatNGram(0), "no_repeat"),
    (lambda: S.generate(peaked(), torch.zeros(1, 65, dtype=torch.long), 5), "context"),
    (lambda: S.generate(peaked(), torch.zeros(1, 5, dtype=torch.long), 5, temperature=-1), "temperature"),
    (lambda: S.generate(peaked(), torch.zeros(1, 5, dtype=torch.long), 5, "nucleus"), "strategy"),
    (lambda: S.beam_search(peaked(), torch.zeros(1, 5, dtype=torch.long), 60), "block_size"),
    (lambda: S.greedy(peaked(), torch.zeros(1, 0, dtype=torch.long), 5), "end-of-text"),
])
def test_bad_parameters_are_one_clear_error(bad, match):
    with pytest.raises(TinyLLMError, match=match): bad()


# ---- speculative decoding ----------------------------------------------------------------------------------------------
def chi_square_pvalue(observed, expected):
    "Pearson's chi-square test; cells expected below 5 are pooled. p-value from the regularised upper gamma function."
    impossible = expected == 0                             # outcomes masked (e.g. by top-k): one occurrence refutes
    if observed[impossible].sum() > 0: return 0.0, math.inf, 0
    observed, expected = observed[~impossible], expected[~impossible]
    small = expected < 5
    o = torch.cat([observed[~small], observed[small].sum()[None]]) if small.any() else observed
    e = torch.cat([expected[~small], expected[small].sum()[None]]) if small.any() else expected
    stat = ((o - e) ** 2 / e).sum()
    dof = len(o) - 1
    return float(torch.special.gammaincc(torch.tensor(dof / 2, dtype=torch.float64), stat.double() / 2)), float(stat), dof


def joint_distribution(m, prompt, n, transforms):
    "Exact probability of each of the V**n continuations of `prompt` (1, T) under `m` after `transforms`."
    V = m.config.vocab_size
    seqs = torch.cartesian_prod(*[torch.arange(V)] * n) if n > 1 else torch.arange(V)[:, None]
    x = torch.cat([prompt.expand(len(seqs), -1), seqs], 1)
    with torch.no_grad():
        logits = m(x)[0][:, prompt.shape[1] - 1:-1].float()
    logp = F.log_softmax(S.process(logits.reshape(-1, V), None, transforms), -1).view(len(seqs), n, V)
    return logp.gather(-1, seqs[..., None]).squeeze(-1).sum(-1).exp()


@pytest.mark.slow
@pytest.mark.parametrize("transforms", [[], [S.Temperature(0.8), S.TopK(3)]], ids=["plain", "temperature+top-k"])
def test_speculative_decoding_samples_the_target_distribution(transforms):
    "10^5 draws of 3 tokens (64 outcomes) from a tiny target with a different draft: chi-square against the exact joint."
    target = peaked(vocab=4, seed=12, scale=2.0)
    draft = peaked(vocab=4, seed=13, scale=2.0)
    prompt = torch.tensor([[1, 2]])
    N, n = 100_000, 3
    p_target = joint_distribution(target, prompt, n, transforms)
    p_draft = joint_distribution(draft, prompt, n, transforms)
    assert (p_target - p_draft).abs().sum() / 2 > 0.1                 # the draft is a poor guess: many rejections
    g, st, counts = gen(1), S.SpeculativeStats(), torch.zeros(4 ** n)
    for _ in range(N // 25_000):
        out = S.speculative_decode(target, draft, prompt.expand(25_000, -1), n, gamma=2, transforms=transforms,
                                   generator=g, use_cache=False, stats=st)
        code = (out[:, 2:] * torch.tensor([16, 4, 1])).sum(1)
        counts += torch.bincount(code, minlength=4 ** n)
    p, stat, dof = chi_square_pvalue(counts, N * p_target)
    print(f"chi-square {stat:.1f} on {dof} dof, p = {p:.3f}; acceptance {st.acceptance_rate:.2f}")
    assert p > 1e-3
    assert 0.3 < st.acceptance_rate < 0.98
    assert chi_square_pvalue(counts, N * p_draft)[0] < 1e-12          # the test can tell a wrong distribution


def test_speculative_accept_is_exact_by_enumeration():
    "All outcomes of one round with gamma=2 over a 3-token vocabulary, weighted by their probabilities: emitted first token ~ p."
    g = gen(1)
    for _ in range(20):
        p = F.softmax(torch.randn(1, 3, 3, generator=g) * 2, -1)
        q = F.softmax(torch.randn(1, 2, 3, generator=g) * 2, -1)
        total = torch.zeros(3)
        for x1 in range(3):
            # first drafted token x1 ~ q0; accepted with min(1, p0/q0); else residual from (p0 - q0)+
            acc = min(1.0, float(p[0, 0, x1] / q[0, 0, x1]))
            total[x1] += q[0, 0, x1] * acc
            resid = (p[0, 0] - q[0, 0]).clamp(min=0)
            total += q[0, 0, x1] * (1 - acc) * resid / resid.sum()
        assert torch.allclose(total, p[0, 0], atol=1e-6)


def test_speculative_cached_equals_uncached_and_stops_at_eot():
    target, draft = peaked(seed=20, scale=3.0), peaked(seed=21, scale=3.0)
    p1 = PROMPT[:1]
    a = S.speculative_decode(target, draft, p1, 40, gamma=4, generator=gen(3))
    assert a.shape == (1, 44) and torch.equal(a, S.speculative_decode(target, draft, p1, 40, gamma=4, generator=gen(3),
                                                                      use_cache=False))
    eot = int(a[0, 10])
    b = S.speculative_decode(target, draft, p1, 40, gamma=4, generator=gen(3), eot_id=eot)
    first = a[0, 4:].tolist().index(eot)
    assert b.shape == (1, 4 + first + 1) and torch.equal(b[0], a[0, :5 + first])
    with pytest.raises(TinyLLMError, match="penalties"):
        S.speculative_decode(target, draft, p1, 5, transforms=[S.RepetitionPenalty(1.2)])
    with pytest.raises(TinyLLMError, match="vocabulary"):
        S.speculative_decode(target, peaked(vocab=128), p1, 5)


@pytest.mark.parametrize("arch", ARCHS)
def test_speculative_compiled_equals_eager(arch):
    "compile=True: the draft's compiled one-token step and the target's compiled gamma+1-token pass on static caches."
    target, draft = peaked(arch, seed=20, scale=3.0), peaked(arch, seed=21, scale=3.0)
    st = S.SpeculativeStats()
    a = S.speculative_decode(target, draft, PROMPT[:1], 30, gamma=3, generator=gen(4))
    b = S.speculative_decode(target, draft, PROMPT[:1], 30, gamma=3, generator=gen(4), compile=True, stats=st)
    assert torch.equal(a, b) and st.rounds < 30 and st.accepted < st.drafted   # real rounds, with rejections


# ---- checkpoints, evaluation and the CLI ------------------------------------------------------------------------------
STORY = "Once upon a time there was a little cat. The cat liked to play in the sun. One day it met a dog.<|endoftext|>"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    "A run folder like `tinyllm train` leaves: a tokenizer, and OUT/checkpoints/step-0000010 with `last` pointing at it."
    from tinyllm.bpe import Tokenizer
    from tinyllm.bpe_train import train_bpe
    from tinyllm.checkpoint import save_checkpoint, set_pointer
    d = tmp_path_factory.mktemp("run")
    (d / "text.txt").write_text(STORY * 40)
    vocab, merges = train_bpe(d / "text.txt", 300, ["<|endoftext|>"], num_processes=1)
    tok = Tokenizer(vocab, merges, ["<|endoftext|>"])
    tok.save(d / "tokenizer")
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=1, n_head=2, n_embd=32))
    meta = {"config": {"model": m.config.to_dict(), "data": {"tokenizer": str(d / "tokenizer")}},
            "identity": {"tokenizer": tok.fingerprint}}
    ck = save_checkpoint(d / "out" / "checkpoints", 10, m.state_dict(), {"step": 10}, meta)
    set_pointer(d / "out" / "checkpoints", "last", ck)
    (d / "valid.txt").write_text(STORY * 5)
    return d, m.eval(), tok


def cli(*args, capsys):
    from tinyllm.cli import main
    status = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return status, out, err


@pytest.mark.parametrize("where", ["out", "out/checkpoints", "out/checkpoints/last", "out/checkpoints/step-0000010"])
def test_load_checkpoint_from_any_folder_of_the_run(run_dir, where):
    d, m, tok = run_dir
    model, tok2, meta = S.load_checkpoint(d / where)
    assert tok2.fingerprint == tok.fingerprint and meta["step"] == 10
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), m.state_dict().values()))


def test_cli_sample_streams_the_greedy_continuation(run_dir, capsys):
    d, m, tok = run_dir
    status, out, err = cli("sample", d / "out", "--prompt", "Once upon", "--strategy", "greedy", "--max-new-tokens", 12,
                           capsys=capsys)
    ids = tok.encode("Once upon")
    new = S.greedy(m, torch.tensor([ids]), 12, eot_id=tok.eot_id)[0, len(ids):].tolist()
    if tok.eot_id in new: new = new[:new.index(tok.eot_id)]
    assert status == 0 and out == "Once upon" + tok.decode(new) + "\n", err


def test_cli_sample_top_p_is_seeded_and_streams(run_dir, capsys, monkeypatch):
    d, m, tok = run_dir
    calls = []
    real = S.TextStream.__call__
    monkeypatch.setattr(S.TextStream, "__call__", lambda self, ids: (calls.append(int(ids[0])), real(self, ids)))
    args = ("sample", d / "out", "--prompt", "Once upon a time", "--strategy", "top-p", "--top-p", 0.9,
            "--temperature", 0.8, "--num-samples", 2, "--max-new-tokens", 8, "--seed", 3)
    status, out, _ = cli(*args, capsys=capsys)
    assert status == 0 and out.count("--- sample") == 2 and out.count("Once upon a time") == 2
    assert 2 <= len(calls) <= 16                              # tokens reach the terminal one by one
    assert cli(*args, capsys=capsys)[1] == out                # same seed, same text


@pytest.mark.parametrize("strategy", ["beam", "contrastive", "min-p", "typical", "top-k", "multinomial"])
def test_cli_every_strategy_runs(run_dir, capsys, strategy):
    d, _, _ = run_dir
    status, out, err = cli("sample", d / "out", "--strategy", strategy, "--max-new-tokens", 6, capsys=capsys)
    assert status == 0 and out.endswith("\n"), err


def test_cli_sample_prompts_file_continues_every_line_in_one_batch(run_dir, capsys, tmp_path):
    d, m, tok = run_dir
    lines = ["Once upon", "The cat sat on the", "A"]
    (tmp_path / "prompts.txt").write_text("\n".join(lines[:2]) + "\n\n" + lines[2] + "\n", encoding="utf-8")
    for strategy in ("greedy", "beam"):
        status, out, err = cli("sample", d / "out", "--prompts-file", tmp_path / "prompts.txt", "--strategy", strategy,
                               "--max-new-tokens", 10, capsys=capsys)
        assert status == 0 and out.count("--- ") == 3, err
        for line, block in zip(lines, out.split("--- ")[1:]):
            ids = tok.encode(line)
            new = S.generate(m, torch.tensor([ids]), 10, strategy, eot_id=tok.eot_id)[0, len(ids):].tolist()
            if tok.eot_id in new: new = new[:new.index(tok.eot_id)]
            assert block.split("\n", 1)[1] == line + tok.decode(new) + "\n"     # each line as if it were alone
    status, _, err = cli("sample", d / "out", "--prompts-file", tmp_path / "nothing.txt", capsys=capsys)
    assert status != 0 and "no such file" in err and "one prompt per line" in err
    status, _, err = cli("sample", d / "out", "--prompts-file", tmp_path / "prompts.txt", "--prompt", "x", capsys=capsys)
    assert status != 0 and "not both" in err


def test_empty_prompt_starts_from_end_of_text(run_dir, capsys):
    d, m, tok = run_dir
    status, out, _ = cli("sample", d / "out", "--strategy", "greedy", "--max-new-tokens", 10, capsys=capsys)
    new = S.greedy(m, torch.tensor([[tok.eot_id]]), 10, eot_id=tok.eot_id)[0, 1:].tolist()
    if tok.eot_id in new: new = new[:new.index(tok.eot_id)]
    assert status == 0 and out == tok.decode(new) + "\n"


def test_cli_eval_prints_loss_perplexity_and_bits_per_byte(run_dir, capsys):
    d, m, tok = run_dir
    status, out, err = cli("eval", d / "out", "--data", d / "valid.txt", capsys=capsys)
    assert status == 0, err
    vals = {line.split(":")[0]: line.split(":")[1].split()[0] for line in out.splitlines() if ":" in line}
    ids = torch.tensor(tok.encode(STORY * 5))
    windows = [ids[s:s + 33] for s in range(0, len(ids) - 1, 32)]
    with torch.no_grad():
        nll = sum(F.cross_entropy(m(w[None, :-1])[0][0], w[1:], reduction="sum") for w in windows)
    n = sum(len(w) - 1 for w in windows)
    nbytes = sum(1 if int(i) == tok.eot_id else len(tok.vocab[int(i)]) for w in windows for i in w[1:])
    assert float(vals["loss"]) == pytest.approx(float(nll / n), abs=1e-4)
    assert float(vals["perplexity"]) == pytest.approx(math.exp(float(nll / n)), rel=1e-3)
    assert float(vals["bits per byte"]) == pytest.approx(float(nll) / math.log(2) / nbytes, abs=1e-4)


@pytest.mark.parametrize("args,match", [
    (["--top-p", "1.5"], "top_p=1.5 must be in"), (["--top-p", "0"], "top_p=0.0 must be in"),
    (["--temperature", "-1"], "temperature"), (["--strategy", "top-k", "--top-k", "0"], "top_k=0"),
    (["--prompt", "Once upon a time " * 20], "context"),
])
def test_cli_bad_sampling_input_is_one_clear_error(run_dir, capsys, args, match):
    d, _, _ = run_dir
    status, out, err = cli("sample", d / "out", *args, capsys=capsys)
    assert status == 2 and match in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_cli_missing_or_incomplete_checkpoint_is_one_clear_error(run_dir, capsys, tmp_path):
    import shutil
    d, _, _ = run_dir
    status, _, err = cli("sample", tmp_path / "nope", capsys=capsys)
    assert status == 2 and "no such checkpoint folder" in err
    (tmp_path / "empty").mkdir()
    status, _, err = cli("eval", tmp_path / "empty", "--data", d / "valid.txt", capsys=capsys)
    assert status == 2 and "not a complete checkpoint" in err
    broken = tmp_path / "broken"
    shutil.copytree(d / "out" / "checkpoints" / "step-0000010", broken)
    (broken / "model.safetensors").write_bytes(b"truncated")
    status, _, err = cli("sample", broken, capsys=capsys)
    assert status == 2 and "SHA-256" in err and "Traceback" not in err
    (broken / "model.safetensors").unlink()
    status, _, err = cli("sample", broken, capsys=capsys)
    assert status == 2 and "missing" in err
    status, _, err = cli("eval", d / "out", "--data", tmp_path / "none.txt", capsys=capsys)
    assert status == 2 and "no such file" in err


# ---- metrics ----------------------------------------------------------------------------------------------------------
def test_diversity_metrics():
    assert S.distinct_n(["a b a b"], 1) == 0.5 and S.distinct_n(["a b", "c d"], 2) == 1.0
    assert S.distinct_n(["a b c", "a b c"], 3) == 0.5
    assert S.repetition_rate(["a b c d a b c d"], 4) == pytest.approx(0.2) and S.repetition_rate(["a b c d e"]) == 0


def test_self_bleu_through_sacrebleu():
    pytest.importorskip("sacrebleu")
    same = ["the cat sat on the mat today"] * 3
    different = ["the cat sat on the mat today", "a dog ran in the park at night", "birds sing songs every morning here"]
    assert S.self_bleu(same) == pytest.approx(100.0) and S.self_bleu(different) < 20
    m = S.sample_metrics(different, [7, 8, 6], [True, False, True])
    assert m["EOT rate"] == pytest.approx(2 / 3) and m["mean length"] == 7 and m["distinct-1"] > 0.8


def test_judge_perplexity_is_the_exp_of_the_mean_loss(model):
    prompts = PROMPT[:2]
    samples = [S.greedy(model, prompts, 6)[i, 4:].tolist() for i in range(2)]
    with torch.no_grad():
        x = torch.cat([prompts, torch.tensor(samples)], 1)
        logits = model(x[:, :-1])[0][:, 3:]
        nll = F.cross_entropy(logits.reshape(-1, 256), x[:, 4:].reshape(-1))
    assert S.judge_perplexity(model, prompts, samples) == pytest.approx(math.exp(float(nll)), rel=1e-4)


def test_trainer_story_sampler_uses_this_code_path(run_dir):
    from tinyllm.run import story_sampler
    _, m, tok = run_dir
    texts = story_sampler(tok, 2, 10, 0.0, prompt="Once upon")(m)   # temperature 0: greedy, both samples alike
    ids = tok.encode("Once upon")
    new = S.greedy(m, torch.tensor([ids]), 10, eot_id=tok.eot_id)[0, len(ids):].tolist()
    if tok.eot_id in new: new = new[:new.index(tok.eot_id)]
    assert texts == ["Once upon" + tok.decode(new)] * 2
    sampled = story_sampler(tok, 2, 10, 0.8, prompt="Once upon")(m)
    assert sampled == story_sampler(tok, 2, 10, 0.8, prompt="Once upon")(m) and m.training is False
