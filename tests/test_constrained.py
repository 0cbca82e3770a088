"""tinyllm.constrained: the regex DFA against Python's re, token masks against a brute-force oracle and outlines-core,
constrained generation, errors."""
import json
import re

import pytest
import regex
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyllm.bpe import Tokenizer
from tinyllm.constrained import ConstraintError, RegexConstraint, compile_regex, json_object_pattern
from tinyllm.core import TinyLLMError
from tinyllm.model import GPT, GPTConfig
from tinyllm.sampling import Temperature, TopK, greedy, process, sample

PERSON = json_object_pattern({"name": str, "age": int}, max_str=8, max_digits=3)
PATTERNS = [r"(ab)+", r"a|b*c?", r"[a-z]{2,4}", r"\d+(\.\d+)?", r"caf.", r'"[^"]*"', r"(?:x|yz){1,}\s\w", r"[^a-c\d]+",
            r"é+|[éa]b", r"\D\W\S", r"a{3}|b{2,}", r"(Yes|No)\.", PERSON]


@pytest.fixture(scope="module")
def tok(gpt2_files):
    return Tokenizer.from_gpt2(*gpt2_files)


@pytest.mark.parametrize("pattern", PATTERNS)
def test_dfa_matches_python_re(pattern):
    dfa, rx = compile_regex(pattern), re.compile(pattern, re.ASCII)
    alphabet = st.sampled_from('abcxyz019."\\ \néÿ中😀{}:,-_AB')

    @settings(max_examples=150, deadline=None, derandomize=True)
    @given(st.one_of(st.from_regex(rx, fullmatch=True), st.text(alphabet, max_size=12)))
    def check(text):
        assert dfa.matches(text.encode()) == bool(rx.fullmatch(text)), text
    check()


def test_dfa_rejects_invalid_utf8():
    dfa = compile_regex(".+")
    assert dfa.matches("é中😀".encode()) and not dfa.matches(b"\xc3") and not dfa.matches(b"\xed\xa0\x80")  # surrogate
    assert not dfa.matches(b"\xc0\xaf") and not dfa.matches(b"\n")                                         # overlong


def oracle(tok, pattern, prefix: str) -> set[int]:
    "Brute force: the tokens t (whose text decodes cleanly) for which prefix + t is still a prefix of a match."
    out = set()
    for i, b in tok.vocab.items():
        if i in tok.special_ids.values(): continue
        try: s = prefix + b.decode("utf-8")
        except UnicodeDecodeError: continue
        if regex.fullmatch(pattern, s, flags=regex.ASCII, partial=True): out.add(i)
    if re.fullmatch(pattern, prefix, re.ASCII): out.add(tok.eot_id)
    return out


def clean(tok, ids) -> set[int]:
    return {i for i in ids if i == tok.eot_id or _decodes(tok.vocab[i])}


def _decodes(b: bytes) -> bool:
    try: b.decode("utf-8"); return True
    except UnicodeDecodeError: return False


@pytest.mark.parametrize("pattern,text", [(PERSON, '{"name": "Zoë", "age": 42}'), (r"(ab)*", "abab"),
                                          (r"[0-9]{1,3}( [0-9]{1,3})*", "12 345"), (r"[a-z]+@[a-z]+\.com", "al@b.com")])
def test_allowed_tokens_equal_brute_force(tok, pattern, text):
    c = RegexConstraint(pattern, tok)
    ids = tok.encode(text)
    prefixes = [k for k in range(len(ids) + 1) if _decodes(tok.decode_bytes(ids[:k]))]
    for k in prefixes[::max(1, len(prefixes) // 3)] + [len(ids)]:
        prefix = tok.decode(ids[:k])
        assert clean(tok, c.allowed(c.state_after(ids[:k]))) == oracle(tok, pattern, prefix), prefix


def test_partial_utf8_tokens(tok):
    "A token holding half of 'é' is allowed where 'é' may come, and its other half then completes it."
    c = RegexConstraint("é+", tok)
    half = [i for i, b in tok.vocab.items() if b == b"\xc3"][0]
    rest = [i for i, b in tok.vocab.items() if b == b"\xa9"][0]
    s = c.next_state(c.dfa.start, half)
    assert half in c.allowed(c.dfa.start) and rest in c.allowed(s) and tok.eot_id not in c.allowed(s)
    assert tok.eot_id in c.allowed(c.next_state(s, rest))


# --- the library: outlines-core --------------------------------------------------------------------------------------

def outlines_pair(tok, pattern):
    oc = pytest.importorskip("outlines_core")
    by = {}
    for i, b in tok.vocab.items():
        if i not in tok.special_ids.values(): by.setdefault(b, []).append(i)
    return RegexConstraint(pattern, tok), oc.Index(pattern, oc.Vocabulary(tok.eot_id, by))


def along(tok, c, index, text):
    ids, s = tok.encode(text), index.get_initial_state()
    for k in range(len(ids) + 1):
        yield tok.decode_bytes(ids[:k]), set(c.allowed(c.state_after(ids[:k]))), set(index.get_allowed_tokens(s))
        if k < len(ids): s = index.get_next_state(s, ids[k])


@pytest.mark.parametrize("pattern,texts", [
    (PERSON, ['{"name": "Zoë", "age": 42}', '{"name": "a \\"b\\"", "age": -7}', '{"name": "", "age": 0}']),
    (r"[a-z]+@[a-z]+\.(com|org)", ["alice@example.com", "bob@x.org"]),
    (r"(Yes|No), because [a-z ]{1,20}\.", ["Yes, because it rains.", "No, because no."]),
    (r"caf. [a-z]?[^ ]{1,2}\.", ["café au.", "cafe 中文."]),
])
def test_same_tokens_as_outlines_core(tok, pattern, texts):
    c, index = outlines_pair(tok, pattern)
    for text in texts:
        for prefix, ours, theirs in along(tok, c, index, text):
            assert ours == theirs, (prefix, sorted(ours ^ theirs)[:10])


@pytest.mark.parametrize("pattern,text", [(r"(ab)*", "abab"), (r"[0-9]{1,3}( [0-9]{1,3})*", "12 345 6")])
def test_outlines_core_stricter_after_accepting_states(tok, pattern, text):
    "Known difference (outlines-core 0.2.14): it drops tokens that pass through an accepting state into a non-accepting one."
    c, index = outlines_pair(tok, pattern)
    differ = False
    for prefix, ours, theirs in along(tok, c, index, text):
        assert theirs <= ours
        for t in ours - theirs:
            differ = True
            assert regex.fullmatch(pattern, (prefix + tok.vocab[t]).decode(), partial=True)   # ours are legitimate
    assert differ


# --- generation ------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model(tok):
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=64, n_layer=1, n_head=2, n_embd=32)).eval()


def finished_texts(tok, out, prompt_len):
    texts = []
    for r in out.tolist():
        gen = r[prompt_len:]
        assert tok.eot_id in gen, "a finite language must end within the token budget"
        texts.append(tok.decode(gen[:gen.index(tok.eot_id)]))
    return texts


@pytest.mark.parametrize("pattern", [PERSON, r"[a-z]{1,6}@[a-z]{1,6}\.(com|org)", r"(yes|no|maybe)", r" ?\d{1,4}"])
def test_constrained_generation_matches(tok, model, pattern):
    c = RegexConstraint(pattern, tok)
    prompt = torch.tensor([tok.encode("Hello")] * 4)
    outs = [greedy(model, prompt[:1], 45, eot_id=tok.eot_id, transforms=[c.logits_transform(prompt.shape[1])])]
    for seed in range(2):
        g = torch.Generator().manual_seed(seed)
        outs.append(sample(model, prompt, 45, [c.logits_transform(prompt.shape[1]), Temperature(1.5), TopK(50)], g,
                           eot_id=tok.eot_id))
    for out in outs:
        for text in finished_texts(tok, out, prompt.shape[1]):
            assert re.fullmatch(pattern, text, re.ASCII), text
            if pattern == PERSON: assert set(json.loads(text)) == {"name", "age"}


def test_transform_masks_and_errors(tok):
    c = RegexConstraint("(yes|no)", tok)
    t = c.logits_transform(1)
    logits = torch.zeros(2, tok.vocab_size)
    ids = torch.tensor([[tok.eot_id, tok.encode("yes")[0]], [tok.eot_id, tok.eot_id]])
    out = process(logits, ids, [t])
    assert torch.isfinite(out[0]).sum() == 1 and out[0, tok.eot_id] == 0     # after "yes": only end-of-text
    assert torch.isfinite(out[1]).sum() == 1 and out[1, tok.eot_id] == 0     # a finished row: only end-of-text
    with pytest.raises(ConstraintError, match="cannot start a match"):
        t(logits[:1], torch.tensor([[tok.eot_id, tok.encode("maybe")[0]]]))
    with pytest.raises(ConstraintError, match="transform\\(logits, ids\\)"):
        t(logits)


@pytest.mark.parametrize("bad,msg", [("[a-z", "missing ']'"), ("(ab", "missing '\\)'"), ("ab)", "unbalanced"),
                                     ("*a", "nothing to repeat"), ("a{3,1}", "max < min"), ("a{x}", "repetition"),
                                     (r"\q", "unknown escape"), ("^a", "anchor"), ("[z-a]", "reversed"),
                                     ("[é-ü]", "non-ASCII"), ("a\\", "lone backslash"), (r"\x9", "hex"),
                                     (b"ab", "must be a str")])
def test_bad_regex_raises_clear_error(bad, msg):
    with pytest.raises(TinyLLMError, match=msg):
        compile_regex(bad)


def test_json_object_pattern_errors():
    with pytest.raises(ConstraintError, match="at least one field"): json_object_pattern({})
    with pytest.raises(ConstraintError, match="not supported"): json_object_pattern({"x": float})
