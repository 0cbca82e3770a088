"""The tokenizer chapter (tinyllm.pretokenize, bpe_train, bpe, bpe_files, bpe_cli): exact GPT-2 (tiktoken) match,
round trips, deterministic training, formats, errors, streaming, CLI."""
import argparse
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import regex
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tinyllm.pretokenize as pretok
from tinyllm.bpe import Tokenizer, TokenizerError
from tinyllm.bpe_cli import add_cli
from tinyllm.bpe_files import read_merges
from tinyllm.bpe_train import count_pretokens, find_chunk_boundaries, learn_merges, train_bpe, train_bpe_naive
from tinyllm.core import TinyLLMError
from tinyllm.pretokenize import _GPT2_ASCII, _GPT2_EXACT, _GPT2_FAST, LETTER, NUMBER, pretokenize, split_special

GPT2_DIR = Path(__file__).parent / "fixtures" / "gpt2"

FIX = Path(__file__).parent / "fixtures" / "bpe"
EDGE = json.loads((FIX / "edge_cases.json").read_text(encoding="utf-8"))
EDGE_CASES = [s for group in EDGE.values() for s in group]
EOT = "<|endoftext|>"

# Text that exercises GPT-2's regex: whitespace kinds, apostrophes, contraction letters, digits, specials, emoji.
TRICKY = st.sampled_from(list(" \t\n\r\x0b\x0c\x85\xa0\u3000'’sdtmlvreSDT01٣Aaé\u0301😀東<|>") +
                         ["<|endoftext|>", "'ll", "'re", "  ", "\r\n", "\U000190b6"])
TEXT = st.text() | st.lists(TRICKY | st.characters(codec="utf-8"), max_size=40).map("".join)  # valid Unicode


@pytest.fixture(scope="module")
def gpt2(gpt2_files):
    return Tokenizer.from_gpt2(*gpt2_files)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    "A tokenizer trained on the committed corpus (vocab 400)."
    return Tokenizer.train(FIX / "corpus.txt", 400, [EOT], num_processes=1)


# ---------------------------------------------------------------------------------------------- GPT-2 == tiktoken
def test_edge_cases_match_tiktoken(gpt2, tiktoken_gpt2):
    assert len(EDGE_CASES) >= 100
    for s in EDGE_CASES + ["".join(EDGE_CASES)]:
        assert gpt2.encode(s) == tiktoken_gpt2.encode(s, allowed_special="all"), s
        assert gpt2.encode_ordinary(s) == tiktoken_gpt2.encode_ordinary(s), s
        assert gpt2.decode(gpt2.encode(s)) == s


@settings(max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(TEXT)
def test_hypothesis_matches_tiktoken(gpt2, tiktoken_gpt2, s):
    ids = gpt2.encode(s)
    assert ids == tiktoken_gpt2.encode(s, allowed_special="all")
    assert gpt2.encode_ordinary(s) == tiktoken_gpt2.encode_ordinary(s)
    assert gpt2.decode(ids) == s


# Runs of whitespace of every kind around spaces: where encoding may and may not cut the text at a space.
SPACEY = st.lists(st.sampled_from([" ", "  ", "\n", "\t", "\r", "\x1c", "\x85", "\xa0", "\u3000", "a", "Bb", "1",
                                   "'s", "!", "é", "東", "😀"]), max_size=30).map("".join)


@settings(max_examples=5_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(SPACEY)
def test_space_split_matches_tiktoken(gpt2, tiktoken_gpt2, s):
    "The word cache (one module-wide tokenizer: words cached in one text come back in others) and the spans it cuts."
    spans = list(pretok.space_spans(s))
    assert "".join(s[a:b] for _, a, b in spans) == s and all(a < b for _, a, b in spans)
    assert all(b == a2 for (_, _, b), (_, a2, _) in zip(spans, spans[1:]))
    assert gpt2.encode_ordinary(s) == tiktoken_gpt2.encode_ordinary(s)
    assert gpt2.encode_ordinary("x" + s + "y") == tiktoken_gpt2.encode_ordinary("x" + s + "y")
    # GPT-2 has few whitespace tokens, so a wrong cut in a run of spaces rarely changes its ids: a vocabulary that
    # merges whitespace does notice (the reference: BPE on each pre-token of the regex, itself checked above).
    # Likewise a vocabulary that merges across the boundaries of letters, punctuation and line breaks, which the word
    # cache's shortcuts (letters between punctuation, a word cut at its line breaks) must not cross.
    for t in ("x" + s + "y", s):
        for tok in (WHITESPACE_BPE, ACROSS_BPE):
            assert tok.encode_ordinary(t) == [i for p in pretokenize(t) for i in tok._bpe(p)]


def test_word_shortcuts_keep_pre_token_boundaries():
    "Words the cache cuts without the regex, and their near misses (an apostrophe can start a contraction)."
    words = ["!a!", "!'s", "a!'s", "Bb!'s", "'s!", "!a's", "a'", "(a)", "!\nB", "a!\nB!", "a\n\nB", "a\nB\n!a",
             "!\n'sB", "a\r\nB", "a\t\n\tB", "a\n\n\tB", "a!1", "é!", "!é\nB", "Bb'", "Bb'!", "a'\nB"]
    for w in words:
        for t in (" " + w, "x " + w + " y", " ".join(words)):
            assert ACROSS_BPE.encode_ordinary(t) == [i for p in pretokenize(t) for i in ACROSS_BPE._bpe(p)], t


WHITESPACE_BPE = Tokenizer({i: bytes([i]) for i in range(256)} | {256: b"  ", 257: b"\n ", 258: b" \n", 259: b" a",
                                                                  260: b"   "},
                           [(b" ", b" "), (b"\n", b" "), (b" ", b"\n"), (b" ", b"a"), (b"  ", b" ")])
_ACROSS = [(b"!", b"a"), (b"a", b"!"), (b" ", b"!"), (b"\n", b"B"), (b"!", b"\n"), (b"'", b"s"), (b"a", b"'"), (b" ", b"B"),
           (b"\t", b"\n"), (b"\r", b"\n")]
ACROSS_BPE = Tokenizer({i: bytes([i]) for i in range(256)} | {256 + r: a + b for r, (a, b) in enumerate(_ACROSS)}, _ACROSS)


@pytest.mark.slow
@pytest.mark.parametrize("split", ["valid", "train"])
def test_tinystories_matches_tiktoken(gpt2, tiktoken_gpt2, tinystories, split):
    text = (tinystories / f"{split}.txt").read_text(encoding="utf-8")
    ids = gpt2.encode(text)
    ref = tiktoken_gpt2.encode(text, allowed_special="all")
    assert len(ids) == len(ref) and ids == ref  # 100% of tokens
    assert gpt2.decode(ids) == text
    # as one long text (no special tokens): exercises the block-wise and line-wise ASCII paths
    assert gpt2.encode_ordinary(text) == tiktoken_gpt2.encode_ordinary(text)


@pytest.mark.slow
def test_merge_rule_equals_rank_rule(gpt2, tiktoken_gpt2):
    "tiktoken joins the pair whose concatenation ranks lowest, even if it is not a merge; on GPT-2 that never differs."
    merge_set = set(gpt2.merges)
    strings = []
    for a, b in gpt2.merges:
        t = a + b
        if any((t[:k], t[k:]) != (a, b) and t[:k] in gpt2._ids and t[k:] in gpt2._ids and (t[:k], t[k:]) not in merge_set
               for k in range(1, len(t))):
            strings.append(t.decode("utf-8", "replace"))
    assert len(strings) > 30_000
    for s in strings[::3]:
        for v in (s, s + s, "x" + s + "s"):   # the merge replay itself (encode would take a whole token as it is)
            assert [i for p in pretokenize(v) for i in gpt2._bpe(p)] == tiktoken_gpt2.encode_ordinary(v), v
            assert gpt2.encode_ordinary(v) == tiktoken_gpt2.encode_ordinary(v), v


def replays_to_itself(tok: Tokenizer) -> list[bytes]:
    "The ordinary tokens whose bytes (valid UTF-8) the merge replay does not turn back into that one token."
    bad = []
    for b, i in tok._whole.items():
        try: s = b.decode("utf-8")
        except UnicodeDecodeError: continue   # not text on its own: never a whole pre-token
        if tok._bpe(s) != (i,): bad.append(b)
    return bad


def test_whole_token_rule(gpt2, small, tmp_path):
    """A pre-token that is a token is taken as it is (tiktoken's rule): on vocabularies from BPE training that is what
    the replay gives for every token; on a hand-made one where it is not, tiktoken and Hugging Face agree with us."""
    assert len(gpt2._whole) == 50_256 and not replays_to_itself(gpt2)
    assert len(small._whole) == small.vocab_size - 1 and not replays_to_itself(small)
    byte_vocab = {i: bytes([i]) for i in range(256)}
    odd = Tokenizer(byte_vocab | {256: b"bc", 257: b"ab", 258: b"abc"}, [(b"b", b"c"), (b"a", b"b"), (b"ab", b"c")])
    assert replays_to_itself(odd) == [b"abc"] and odd._bpe("abc") == (97, 256)
    assert odd.encode_ordinary("abc abcd") == [258, 32, 97, 256, 100]
    with_special = Tokenizer(odd.vocab, odd.merges, ["abc"])   # a special is never taken for a whole pre-token
    assert with_special.encode_ordinary("abc") == [97, 256] and with_special.encode("abc") == [258]
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe
    enc = tiktoken.Encoding("odd", pat_str=pretok.GPT2_PATTERN, special_tokens={},
                            mergeable_ranks=load_tiktoken_bpe(str(odd.to_tiktoken(tmp_path / "odd.tiktoken"))))
    assert enc.encode_ordinary("abc") == [258]   # (on "abcd" its rank rule would join a+bc: a second, known difference)
    HFTokenizer = pytest.importorskip("tokenizers").Tokenizer
    hf = HFTokenizer.from_file(str(odd.to_hf(tmp_path / "odd.json")))
    assert hf.encode("abc abcd abc").ids == odd.encode("abc abcd abc") == [258, 32, 97, 256, 100, 32, 97, 256]
    assert HFTokenizer.from_file(str(small.to_hf(tmp_path / "small.json"))).model.ignore_merges


@pytest.mark.slow
def test_unicode_classes_match_tiktoken():
    "Our pinned \\p{L}, \\p{N} and \\s agree with tiktoken's on every code point (fails if a library's Unicode moves)."
    import tiktoken
    ranks = {bytes([i]): i for i in range(256)}
    for prop, ours in (("L", LETTER), ("N", NUMBER), ("s", r"\s")):
        oracle = tiktoken.Encoding(prop, pat_str=rf"\p{{{prop}}}" if prop != "s" else r"\s", mergeable_ranks=ranks,
                                   special_tokens={})
        rx = regex.compile(ours)
        bad = [hex(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000
               and bool(rx.match(chr(c))) != bool(oracle.encode_ordinary(chr(c)))]
        assert not bad, (prop, bad[:10])


@settings(max_examples=2000, deadline=None)
@given(st.text(st.characters(max_codepoint=127)) | st.lists(st.sampled_from(list(" \t\n\r\x0b\x0c\x1c\x1f'sdtmlvre0aA.")))
       .map("".join))
def test_ascii_fast_path_is_gpt2(s):
    "The `re`-based ASCII pre-tokenizer splits exactly like the `regex` one."
    assert _GPT2_ASCII.findall(s) == _GPT2_FAST.findall(s)


@settings(max_examples=2000, deadline=None)
@given(st.lists(TEXT | st.sampled_from(["\n", "\nA", "\n x", "é\n", "\n\n."]), max_size=8).map("".join), st.data())
def test_mixed_ascii_pretokenizer(s, data):
    "Long texts are pre-tokenized line-wise (ASCII lines with `re`): same result as the exact pattern on any slice."
    pos = data.draw(st.integers(0, len(s)))
    end = data.draw(st.integers(pos, len(s)))
    old, pretok._MIXED_MIN = pretok._MIXED_MIN, 0  # take the line-wise path even for short strings
    try: assert pretokenize(s) == _GPT2_EXACT.findall(s) and pretokenize(s, pos, end) == _GPT2_EXACT.findall(s, pos, end)
    finally: pretok._MIXED_MIN = old


def test_lone_surrogates_like_tiktoken(gpt2, tiktoken_gpt2):
    for s in ["\ud800", "a\udfffb", "\ud83d\ude00", "x \ud800'll"]:
        assert gpt2.encode(s) == tiktoken_gpt2.encode(s)


def test_decode_invalid_utf8_like_tiktoken(gpt2, tiktoken_gpt2):
    ids = gpt2.encode("🙂 é")
    for k in range(len(ids) + 1):
        assert gpt2.decode(ids[:k]) == tiktoken_gpt2.decode(ids[:k])
    assert gpt2.decode_bytes(ids) == "🙂 é".encode() == gpt2.decode_bytes(iter(ids))
    np = pytest.importorskip("numpy")
    assert gpt2.decode(np.array(ids, dtype=np.uint16)) == "🙂 é"
    with pytest.raises(TokenizerError, match="50257.*0..50256"): gpt2.decode([50257])


# ---------------------------------------------------------------------------------------------- round trips
@settings(max_examples=1000, deadline=None)
@given(TEXT)
def test_roundtrip_trained(small, s):
    assert small.decode(small.encode(s)) == s
    assert small.decode(small.encode_ordinary(s)) == s


@settings(max_examples=300, deadline=None)
@given(TEXT, st.lists(st.integers(0, 60), max_size=6), st.integers(1, 16))
def test_encode_iterable_equals_encode(gpt2, s, cuts, chunk_chars):
    cuts = sorted(min(c, len(s)) for c in cuts)
    chunks = [s[a:b] for a, b in zip([0, *cuts], [*cuts, len(s)])]
    assert list(gpt2.encode_iterable(chunks, chunk_chars=chunk_chars)) == gpt2.encode(s)


OVERLAP = Tokenizer({i: bytes([i]) for i in range(256)}, [], ["<|a|>", "<|a|><|a|>", "a|>x"])


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(["<|a|>", "<", "|", "a", ">", "x", " ", "'", "s"]), max_size=30).map("".join),
       st.lists(st.integers(0, 150), max_size=8), st.integers(1, 12))
def test_encode_iterable_overlapping_specials(s, cuts, chunk_chars):
    "Streaming never cuts a special token, nor decides between overlapping ones, before it has seen enough text."
    cuts = sorted(min(c, len(s)) for c in cuts)
    chunks = [s[a:b] for a, b in zip([0, *cuts], [*cuts, len(s)])]
    assert list(OVERLAP.encode_iterable(chunks, chunk_chars=chunk_chars)) == OVERLAP.encode(s)


def test_encode_iterable_file(gpt2):
    text = "".join(EDGE_CASES) * 20
    lines = text.splitlines(keepends=True)
    assert list(gpt2.encode_iterable(iter(lines), chunk_chars=256)) == gpt2.encode(text)


@pytest.mark.slow
def test_encode_iterable_bounded_memory(tinystories):
    "Encoding a 100 MB stream line by line adds < 50 MB of resident memory (measured in a fresh process)."
    if not Path("/proc/self/statm").exists(): pytest.skip("needs Linux /proc to sample resident memory")
    code = """
import os, sys
from tinyllm.bpe import Tokenizer
from tinyllm.core import gpt2_files
def rss_mb(): return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
tok = Tokenizer.from_gpt2(*gpt2_files(sys.argv[2]))
lines = open(sys.argv[1], encoding="utf-8").read().splitlines(keepends=True)
reps = 100_000_000 // sum(map(len, lines)) + 1
def stream():
    for _ in range(reps): yield from lines
sum(1 for _ in tok.encode_iterable(iter(lines)))  # warm up: caches, allocator
base = peak = rss_mb()
n = 0
for n, _ in enumerate(tok.encode_iterable(stream()), 1):
    if n % 100_000 == 0: peak = max(peak, rss_mb())
print(n, peak - base)
"""
    out = subprocess.run([sys.executable, "-c", code, str(tinystories / "valid.txt"), str(GPT2_DIR)], capture_output=True, text=True,
                         cwd=Path(__file__).parent, check=True).stdout.split()
    n, extra_mb = int(out[0]), float(out[1])
    assert n > 20_000_000 and extra_mb < 50, (n, extra_mb)


def test_encode_batch(gpt2):
    texts = ["".join(EDGE_CASES[i::7]) * 300 for i in range(7)]
    assert sum(map(len, texts)) > (1 << 20)  # large enough to use the process pool
    assert gpt2.encode_batch(texts, num_workers=2) == [gpt2.encode(t) for t in texts]
    assert gpt2.encode_batch(["a", "b c"], num_workers=1) == [gpt2.encode("a"), gpt2.encode("b c")]


# ---------------------------------------------------------------------------------------------- special tokens
def test_special_tokens():
    vocab = {i: bytes([i]) for i in range(256)}
    tok = Tokenizer(vocab, [], ["<|a|>", "<|a|><|a|>", EOT])
    assert tok.special_tokens == ["<|a|>", "<|a|><|a|>", EOT]
    assert tok.special_ids == {"<|a|>": 256, "<|a|><|a|>": 257, EOT: 258} and tok.vocab_size == 259
    assert tok.eot_id == 258
    assert tok.encode("x<|a|><|a|><|a|>") == [ord("x"), 257, 256]  # longest match wins
    assert tok.encode_ordinary("<|a|>") == list(b"<|a|>")
    assert tok.decode(tok.encode("x<|a|>y")) == "x<|a|>y"
    with pytest.raises(TinyLLMError, match="no end-of-text token"): _ = Tokenizer(vocab, []).eot_id
    assert split_special("a<|endoftext|>b", [EOT]) == ["a", EOT, "b"]


def test_gpt2_special(gpt2, tmp_path, monkeypatch):
    assert gpt2.eot_id == 50256 and gpt2.special_tokens == [EOT] and gpt2.vocab_size == 50257
    cache = tmp_path / "tinyllm" / "gpt2"  # default: core.gpt2_files(), here its download cache already holding them
    cache.mkdir(parents=True)
    for name in ("encoder.json", "vocab.bpe"): (cache / name).write_bytes((GPT2_DIR / name).read_bytes())
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert Tokenizer.from_gpt2().fingerprint == gpt2.fingerprint
    with pytest.raises(TypeError, match="expects a str"): gpt2.encode(b"bytes")


# ---------------------------------------------------------------------------------------------- training
def test_golden_merges():
    "Training on the committed corpus reproduces the golden merges (checked by hand in nbs/01b_bpe_files.ipynb)."
    golden = read_merges(FIX / "golden_merges.txt")
    vocab, merges = train_bpe(FIX / "corpus.txt", 256 + 1 + len(golden), [EOT])
    assert merges == golden
    assert vocab[256] == b"".join(golden[0]) and vocab[256 + len(golden)] == EOT.encode()
    counts = Counter(w for part in split_special((FIX / "corpus.txt").read_text(), [EOT])[::2] for w in pretokenize(part))
    assert train_bpe_naive(counts, len(golden)) == golden


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(st.sampled_from("abcé 🙂"), min_size=1, max_size=8), st.integers(1, 5), max_size=12),
       st.integers(0, 40))
def test_fast_trainer_equals_naive(counts, n):
    assert learn_merges(counts, n) == train_bpe_naive(counts, n)


def test_chunk_boundaries(tmp_path):
    p = tmp_path / "c.txt"
    p.write_bytes(b"abc<|endoftext|>defgh<|endoftext|>ij\n  \nkl\n" * 10)
    data = p.read_bytes()
    cuts = find_chunk_boundaries(p, 4, EOT.encode(), window=8)
    assert cuts[0] == 0 and cuts[-1] == len(data) and cuts == sorted(set(cuts)) and len(cuts) == 5
    assert all(data[c:].startswith(EOT.encode()) for c in cuts[1:-1])
    cuts = find_chunk_boundaries(p, 4, None, window=8)
    assert len(cuts) == 5 and all(data[c:c + 3] == b"\nkl" for c in cuts[1:-1])


@pytest.mark.slow
def test_training_deterministic(tmp_path, tinystories):
    "Same merges across runs and numbers of processes (the file is large enough to be cut into chunks)."
    p = tmp_path / "big.txt"
    p.write_bytes((tinystories / "valid.txt").read_bytes() * 5)
    results = [train_bpe(p, 600, [EOT], num_processes=n) for n in (1, 2, 4, 2)]
    assert all(r == results[0] for r in results)
    assert count_pretokens(p, [EOT], 1) == count_pretokens(p, [EOT], 3)
    # without special tokens the chunks are cut before "\n" + visible ASCII, which must not change the counts either
    text = p.read_text(encoding="utf-8")
    assert count_pretokens(p, None, 3) == count_pretokens(p, None, 1) == Counter(_GPT2_EXACT.findall(text))
    assert train_bpe(p, 400, num_processes=1) == train_bpe(p, 400, num_processes=2)


def test_training_several_files_and_parallel_errors(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("low low lower<|endoftext|>newest", encoding="utf-8")
    b.write_text("widest newest newer", encoding="utf-8")
    assert count_pretokens([a, b], [EOT]) == count_pretokens(a, [EOT]) + count_pretokens(b, [EOT])
    assert train_bpe([a, b], 280, [EOT]) == train_bpe([str(b), str(a)], 280, [EOT], num_processes=2)
    big = tmp_path / "big.bin"  # > 1 MB: cut into chunks counted by worker processes; the offset is still the file's
    data = b"a story about a cat.<|endoftext|>" * 40_000 + b"bad \xc3\x28 byte"
    big.write_bytes(data)
    with pytest.raises(TokenizerError, match=f"offset {len(data) - 7} "): train_bpe(big, 300, [EOT], num_processes=2)


def test_training_small_and_specials(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("aaa<|endoftext|>aaa bb<|endoftext|>", encoding="utf-8")
    vocab, merges = train_bpe(p, 1000, [EOT])  # runs out of pairs: stops early
    assert merges == train_bpe_naive(Counter({"aaa": 2, " bb": 1}), 100)
    assert vocab[len(vocab) - 1] == EOT.encode() and len(vocab) == 256 + len(merges) + 1
    assert all(EOT.encode() not in a + b for a, b in merges)  # no merge crosses or contains the special token
    tok = Tokenizer(vocab, merges, [EOT])
    assert tok.encode("aaa<|endoftext|>") == [vocab_id(vocab, b"aaa"), len(vocab) - 1]


def vocab_id(vocab, b): return next(i for i, v in vocab.items() if v == b)


# ---------------------------------------------------------------------------------------------- errors
def test_training_errors(tmp_path):
    p = tmp_path / "bad.txt"
    p.write_bytes(b"hello world " * 3 + b"\xff\xfe oops")
    with pytest.raises(TokenizerError, match="offset 36"): train_bpe(p, 300)
    vocab, merges = train_bpe(p, 300, errors="replace")
    assert len(merges) > 0
    with pytest.raises(TokenizerError, match="at least 257"): train_bpe(FIX / "corpus.txt", 256, [EOT])
    e = tmp_path / "empty.txt"
    e.write_text("")
    with pytest.raises(TokenizerError, match="empty"): train_bpe(e, 300)
    e.write_text(EOT * 3)
    with pytest.raises(TokenizerError, match="empty"): train_bpe(e, 300, [EOT])
    with pytest.raises(TokenizerError, match="does not exist"): train_bpe(tmp_path / "missing.txt", 300)
    assert issubclass(TokenizerError, TinyLLMError)


def test_format_errors(tmp_path, small):
    d = small.save(tmp_path / "tok")
    lines = (d / "vocab.bpe").read_text(encoding="utf-8").splitlines(keepends=True)
    (d / "vocab.bpe").write_text("".join(lines[:5] + ["onlyonetoken\n"] + lines[5:]), encoding="utf-8")
    with pytest.raises(TokenizerError, match=r"vocab\.bpe:6:"): Tokenizer.from_gpt2(d / "encoder.json", d / "vocab.bpe")
    (d / "vocab.bpe").write_text("".join(lines[:5] + ["Ġzz qq\n"] + lines[5:]), encoding="utf-8")
    with pytest.raises(TokenizerError, match=r"vocab\.bpe:6: .*not in"):
        Tokenizer.from_gpt2(d / "encoder.json", d / "vocab.bpe")
    (d / "vocab.bpe").write_bytes("".join(lines).replace("\n", "\r\n").encode())  # Windows line ends are fine
    assert Tokenizer.load(d).fingerprint == small.fingerprint
    enc = (d / "encoder.json").read_text(encoding="utf-8").splitlines(keepends=True)
    (d / "encoder.json").write_text("".join(enc[:3] + ['"x": 1,,\n'] + enc[3:]), encoding="utf-8")
    with pytest.raises(TokenizerError, match=r"encoder\.json:4: invalid JSON"): Tokenizer.load(d)
    (d / "encoder.json").write_text("".join(enc[:3] + [enc[3].split(":")[0] + ': "7",\n'] + enc[4:]), encoding="utf-8")
    with pytest.raises(TokenizerError, match=r"encoder\.json:4: .*not a non-negative integer"): Tokenizer.load(d)
    (d / "encoder.json").write_text("".join(enc), encoding="utf-8")
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    (d / "tokenizer_config.json").write_text(json.dumps({**cfg, "fingerprint": "0" * 64}, indent=1))
    with pytest.raises(TokenizerError, match="fingerprint"): Tokenizer.load(d)
    with pytest.raises(TokenizerError, match="not a folder"): Tokenizer.load(tmp_path / "nope")
    with pytest.raises(TokenizerError, match="lacks"): Tokenizer({0: b"a"}, [])


# ---------------------------------------------------------------------------------------------- formats
def test_save_load_roundtrip(tmp_path, small, gpt2):
    for tok in (small, gpt2):
        d = tok.save(tmp_path / f"t{tok.vocab_size}")
        back = Tokenizer.load(d)
        assert back.vocab == tok.vocab and back.merges == tok.merges and back.special_ids == tok.special_ids
        assert back.fingerprint == tok.fingerprint
        s = "".join(EDGE_CASES)
        assert back.encode(s) == tok.encode(s)


def test_gpt2_export_is_identical(tmp_path, gpt2, gpt2_files):
    d = gpt2.to_gpt2(tmp_path / "g")
    assert (d / "vocab.bpe").read_bytes() == Path(gpt2_files[1]).read_bytes()
    assert json.loads((d / "encoder.json").read_text(encoding="utf-8")) == json.loads(Path(gpt2_files[0]).read_text())
    assert Tokenizer.load(d).fingerprint == gpt2.fingerprint  # a plain GPT-2 folder loads too


def test_fingerprint(small, gpt2):
    assert small.fingerprint == Tokenizer(small.vocab, small.merges, small.special_tokens).fingerprint
    assert len(small.fingerprint) == 64 and small.fingerprint != gpt2.fingerprint
    assert Tokenizer(small.vocab, small.merges[:-1], [EOT]).fingerprint != small.fingerprint
    assert Tokenizer(small.vocab, small.merges, [EOT, "<|pad|>"]).fingerprint != small.fingerprint
    assert Tokenizer(small.vocab, small.merges).fingerprint != small.fingerprint


def test_to_tiktoken(tmp_path, small, gpt2, tiktoken_gpt2):
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe
    s = "".join(EDGE_CASES)
    for tok in (small, gpt2):
        path = tok.to_tiktoken(tmp_path / f"t{tok.vocab_size}.tiktoken")
        enc = tiktoken.Encoding(f"t{tok.vocab_size}", pat_str=tiktoken_gpt2._pat_str, special_tokens=tok.special_ids,
                                mergeable_ranks=load_tiktoken_bpe(str(path)))
        assert enc.encode(s, allowed_special="all") == tok.encode(s)
        for case in EDGE_CASES: assert enc.encode(case, allowed_special="all") == tok.encode(case)


def test_to_hf(tmp_path, small, gpt2):
    HFTokenizer = pytest.importorskip("tokenizers").Tokenizer     # a dev requirement; skip cleanly without it
    s = "".join(EDGE_CASES)
    for tok in (small, gpt2):
        hf = HFTokenizer.from_file(str(tok.to_hf(tmp_path / f"t{tok.vocab_size}.json")))
        assert hf.encode(s).ids == tok.encode(s)
        for case in EDGE_CASES: assert hf.encode(case).ids == tok.encode(case), case
        assert hf.get_vocab_size() == tok.vocab_size


@pytest.mark.slow
def test_exports_on_tinystories(tmp_path, small, tinystories, tiktoken_gpt2):
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe
    from tokenizers import Tokenizer as HFTokenizer
    text = (tinystories / "valid.txt").read_text(encoding="utf-8")
    tok = Tokenizer.train(tinystories / "valid.txt", 2000, [EOT])
    ids = tok.encode(text)
    hf = HFTokenizer.from_file(str(tok.to_hf(tmp_path / "hf.json")))
    assert hf.encode(text).ids == ids
    enc = tiktoken.Encoding("t", pat_str=tiktoken_gpt2._pat_str, special_tokens=tok.special_ids,
                            mergeable_ranks=load_tiktoken_bpe(str(tok.to_tiktoken(tmp_path / "t.tiktoken"))))
    assert enc.encode(text, allowed_special="all") == ids


# ---------------------------------------------------------------------------------------------- CLI
def run_cli(*argv):
    ap = argparse.ArgumentParser()
    add_cli(ap)
    args = ap.parse_args(argv)
    return args.func(args)


def test_cli(tmp_path, capsys):
    out = tmp_path / "tok"
    assert run_cli("train", "--data", str(FIX / "corpus.txt"), "--vocab-size", "320", "--out", str(out),
                   "--processes", "1") == 0
    assert "bytes per token" in capsys.readouterr().out
    tok = Tokenizer.load(out)
    assert tok.vocab_size == 320 and tok.eot_id == 319
    run_cli("encode", "--tokenizer", str(out), "--text", "Once upon a time<|endoftext|>")
    ids = capsys.readouterr().out.split()
    assert [int(i) for i in ids] == tok.encode("Once upon a time<|endoftext|>")
    run_cli("decode", "--tokenizer", str(out), "--ids", *ids)
    assert capsys.readouterr().out == "Once upon a time<|endoftext|>"
    run_cli("encode", "--tokenizer", str(out), str(FIX / "corpus.txt"))  # a file is streamed through encode_iterable
    text = (FIX / "corpus.txt").read_text(encoding="utf-8")
    assert [int(i) for i in capsys.readouterr().out.split()] == tok.encode(text)
    (tmp_path / "ids.txt").write_text(" ".join(map(str, tok.encode(text))))
    run_cli("decode", "--tokenizer", str(out), str(tmp_path / "ids.txt"))
    assert capsys.readouterr().out == text
    (tmp_path / "bad.txt").write_bytes(b"ok \xff no")
    with pytest.raises(TinyLLMError, match="not valid UTF-8"):
        run_cli("encode", "--tokenizer", str(out), str(tmp_path / "bad.txt"))
    with pytest.raises(TinyLLMError, match="at least 257"):
        run_cli("train", "--data", str(FIX / "corpus.txt"), "--vocab-size", "100", "--out", str(out))


def test_cli_entry_point(tmp_path):
    "The installed `tinyllm tokenizer` command runs, and a bad input is `error: ...` with exit status 2."
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    pytest.importorskip("tinyllm.cli")
    cmd = [sys.executable, "-c", "import sys; from tinyllm.cli import main; sys.exit(main())", "tokenizer"]
    r = subprocess.run(cmd + ["encode", "--tokenizer", str(Path(__file__).parent / "fixtures" / "gpt2"), "--text",
                              "hello world"], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and r.stdout.split() == ["31373", "995"], r.stderr
    r = subprocess.run(cmd + ["decode", "--tokenizer", str(tmp_path), "--ids", "1"], capture_output=True, text=True,
                       env=env)
    assert r.returncode == 2 and r.stderr.startswith("error:")
