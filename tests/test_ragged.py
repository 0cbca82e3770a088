"""Prompts of different lengths in one batch (left padding, a mask, per-row positions) and the static KV cache:
every row must be what its prompt gives alone, for both block types, and what Hugging Face gives with left padding."""
import pytest
import torch

from tinyllm.decode import generate
from tinyllm.model import GPT, GPTConfig
from tinyllm.sampling import TopK, greedy, make_transforms, sample
from tinyllm.static_cache import StaticDecoder, StaticKVCache, forward_static, left_pad
from tinyllm.weights import export_hf

PROMPTS = [[5, 6, 7, 8, 9, 10, 11], [12], [13, 14, 15]]
KINDS = [("gpt2", {}), ("llama", {}), ("llama", dict(n_kv_head=2, qk_norm=True, logit_softcap=30.0))]
IDS = ["gpt2", "llama", "llama-gqa-qknorm-softcap"]


def peaked(arch="gpt2", **kw):
    "A tiny seeded GPT whose next-token distributions are peaked (embeddings scaled up), so greedy paths differ by prompt."
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=256, block_size=64, n_layer=2, n_head=4, n_embd=64, arch=arch, **kw)).eval()
    with torch.no_grad(): m.transformer.wte.weight.mul_(25.0)
    return m


def alone(m, p, n, **kw):
    return greedy(m, torch.tensor([p]), n, **kw)[0]


@pytest.mark.parametrize("arch,kw", KINDS, ids=IDS)
def test_each_row_of_a_ragged_batch_equals_its_prompt_alone(arch, kw):
    m = peaked(arch, **kw)
    out = greedy(m, PROMPTS, 20)
    assert isinstance(out, list) and len(out) == len(PROMPTS)
    for p, row in zip(PROMPTS, out): assert torch.equal(row, alone(m, p, 20)), p
    assert [r.tolist() for r in out] == [r.tolist() for r in greedy(m, PROMPTS, 20, use_cache=False)]


@pytest.mark.parametrize("arch,kw", KINDS, ids=IDS)
def test_the_static_cache_gives_the_logits_of_the_plain_forward_pass(arch, kw):
    m = peaked(arch, **kw)
    ids, start = left_pad(PROMPTS)
    cache = StaticKVCache(m, len(PROMPTS), 20)
    cache.reset(start)
    with torch.no_grad():
        logits = forward_static(m, ids, cache, torch.arange(ids.shape[1]))
        for b, p in enumerate(PROMPTS):
            assert (logits[b] - m(torch.tensor([p]))[0][0, -1]).abs().max() < 1e-4
            assert logits.isfinite().all()                   # the padded queries saw themselves: no NaN anywhere


def test_a_ragged_batch_slides_its_window_like_each_prompt_alone():
    m = peaked("llama")
    out = greedy(m, PROMPTS, 70)                             # 7 + 70 > block_size 64: every row's window slides
    for p, row in zip(PROMPTS, out): assert torch.equal(row, alone(m, p, 70)), p


def test_a_ragged_batch_stops_each_row_at_its_end_of_text():
    m = peaked()
    eot = int(alone(m, PROMPTS[0], 12)[len(PROMPTS[0]) + 2])   # row 0's third new token
    out = greedy(m, PROMPTS, 12, eot_id=eot)
    for p, row in zip(PROMPTS, out):
        ref = alone(m, p, 12, eot_id=eot)
        assert torch.equal(row, ref[:len(row)]) and (ref[len(row):] == eot).all()
        assert eot not in row[len(p):-1].tolist()
    assert out[0][-1] == eot and len(out[0]) <= len(PROMPTS[0]) + 3        # row 0 stopped early, and was cut there


def test_penalties_in_a_ragged_batch_do_not_see_another_rows_padding():
    m = peaked()
    chain = make_transforms(repetition_penalty=1.5, frequency_penalty=0.5, no_repeat_ngram=2)
    out = greedy(m, PROMPTS, 15, transforms=chain)
    for p, row in zip(PROMPTS, out): assert torch.equal(row, alone(m, p, 15, transforms=chain)), p


def test_sampling_a_ragged_batch():
    m = peaked("llama")
    g = lambda: torch.Generator().manual_seed(0)
    top1 = sample(m, PROMPTS, 12, [TopK(1)], generator=g())
    assert [r.tolist() for r in top1] == [r.tolist() for r in greedy(m, PROMPTS, 12)]      # top-k 1 is greedy
    a, b = sample(m, PROMPTS, 12, generator=g()), sample(m, PROMPTS, 12, generator=g())
    assert [r.tolist() for r in a] == [r.tolist() for r in b] and [len(r) for r in a] == [len(p) + 12 for p in PROMPTS]


@pytest.mark.parametrize("strategy", ["greedy", "top-p", "beam", "contrastive"])
def test_generate_takes_a_list_of_prompts_with_every_strategy(strategy):
    m = peaked("llama")
    out = generate(m, PROMPTS, 6, strategy, generator=torch.Generator().manual_seed(0))
    assert [r[:len(p)].tolist() for r, p in zip(out, PROMPTS)] == PROMPTS
    if strategy in ("greedy", "beam", "contrastive"):          # deterministic: each row is its prompt alone
        for p, row in zip(PROMPTS, out):
            assert torch.equal(row, generate(m, torch.tensor([p]), 6, strategy)[0])


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_a_left_padded_batch_equals_hugging_face_generate(arch, tmp_path):
    transformers = pytest.importorskip("transformers")
    m = peaked(arch)
    hf = transformers.AutoModelForCausalLM.from_pretrained(export_hf(m, tmp_path, eos_token_id=255)).eval()
    ids, start = left_pad(PROMPTS)
    mask = (torch.arange(ids.shape[1])[None] >= start[:, None]).long()
    with torch.no_grad():
        theirs = hf.generate(ids, attention_mask=mask, max_new_tokens=15, do_sample=False, pad_token_id=0,
                             eos_token_id=None)
    ours = greedy(m, PROMPTS, 15)
    for b, row in enumerate(ours): assert row.tolist() == theirs[b, int(start[b]):].tolist()


def test_the_compiled_step_decodes_the_same_ids():
    m = peaked("llama", n_kv_head=2)
    assert [r.tolist() for r in greedy(m, PROMPTS, 10, compile=True)] == [r.tolist() for r in greedy(m, PROMPTS, 10)]


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_the_compiled_step_at_batch_1_follows_the_weights_it_was_given(arch):
    "Batch 1 on a CPU passes a flat copy of the weights: same ids as eager, and a copy made again when a weight changes."
    m = peaked(arch)
    prompt = torch.tensor([PROMPTS[0]])
    before = greedy(m, prompt, 12, compile=True)
    assert torch.equal(before, greedy(m, prompt, 12))
    with torch.no_grad(): m.transformer.ln_f.weight.neg_()                 # changed in place, as an optimizer step does
    after = greedy(m, prompt, 12)
    assert not torch.equal(after, before)                                   # the change shows in eager ids
    assert torch.equal(greedy(m, prompt, 12, compile=True), after)


def test_bad_prompts_are_one_clear_error():
    m = peaked()
    with pytest.raises(ValueError, match="at least one token"): greedy(m, [[1, 2], []], 5)
    with pytest.raises(ValueError, match="block_size"): greedy(m, [[1] * 65, [2]], 5)
    with pytest.raises(ValueError, match="block_size"): StaticDecoder(m, 1, max_len=65)


def test_a_process_may_decode_with_more_models_than_torch_compile_keeps_by_default():
    "Each model is one more compiled version of the step; torch.compile stops at 8 by default (an error with fullgraph)."
    prompt, models = torch.tensor([[1, 2, 3]]), []
    with torch._dynamo.config.patch(recompile_limit=2):                  # the default 8, made small to test it quickly
        for width in range(3):                                           # kept alive, each of its own shape
            torch.manual_seed(width)
            models.append(GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=1, n_head=2, n_embd=16 + 2 * width)))
            assert torch.equal(greedy(models[-1].eval(), prompt, 3, compile=True), greedy(models[-1], prompt, 3))
