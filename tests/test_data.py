"""tinyllm.prepare and tinyllm.data: story readers, prepare (token files + metadata), loading checks, the two samplers."""
import contextlib
import errno
import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from tinyllm import data as D
from tinyllm import prepare as P
from tinyllm.cli import main as cli_main
from tinyllm.core import TinyLLMError

REPO = Path(__file__).resolve().parent.parent
EOT = "<|endoftext|>"


class ByteTok:
    "A stand-in tokenizer whose ids are the UTF-8 bytes, so every expected token file can be written by hand."
    def __init__(self, vocab_size=257, name="bytes"):
        self.vocab_size, self.eot_id = vocab_size, vocab_size - 1
        self.fingerprint = hashlib.sha256(f"{name}/{vocab_size}".encode()).hexdigest()

    def encode_ordinary(self, text):
        return list(text.encode("utf-8"))


class FailingTok(ByteTok):
    "Raises `exc` on the story `at`: a run interrupted half way (in whichever process encodes that story)."
    def __init__(self, at, exc):
        super().__init__(name="failing")
        self.at, self.exc = at, exc

    def encode_ordinary(self, text):
        if text == self.at: raise self.exc
        return super().encode_ordinary(text)


STORIES = ["Once upon a time, Tom had a red ball. \nHe liked it.", "Sue saw a cat.", "Caf\u00e9 \U0001F600 time!\nThe end."]


def write_txt(path, stories=STORIES, nl="\n"):
    path.write_bytes("".join(s.replace("\n", nl) + nl + EOT + nl for s in stories).encode("utf-8"))
    return path


def expected_bytes_ids(stories, eot=256):
    return [i for s in stories for i in [*s.encode("utf-8"), eot]]


def files_of(d):
    return sorted(p.name for p in Path(d).iterdir())


# ------------------------------------------------------------------------------------------------------ reading stories
def test_txt_stories_any_block_size(tmp_path):
    p = tmp_path / "s.txt"
    p.write_bytes(("\n" + EOT + "\n").join(["  " + STORIES[0], STORIES[1] + "\r\n", "", STORIES[2]]).encode())
    for n in range(1, 70):  # separators and multi-byte characters straddle block boundaries
        assert list(P.iter_txt_stories(p, read_size=n)) == STORIES
    p.write_text(f"A.{EOT}B.\n{EOT}{EOT}\nC.")  # separators mid-line, doubled, none at the end
    assert list(P.iter_txt_stories(p)) == ["A.", "B.", "C."]


def test_txt_keeps_inner_whitespace_and_crlf_normalized(tmp_path):
    assert list(P.iter_txt_stories(write_txt(tmp_path / "a.txt", nl="\r\n"))) == STORIES
    assert list(P.iter_txt_stories(write_txt(tmp_path / "b.txt"))) == STORIES


def test_txt_non_utf8_reports_byte_offset(tmp_path):
    raw = write_txt(tmp_path / "ok.txt").read_bytes()
    bad = raw + b"Fine start, then \xff bad.\n" + EOT.encode() + b"\n"
    p = tmp_path / "bad.txt"
    p.write_bytes(bad)
    at = bad.index(0xFF)
    for n in (3, 64, 1 << 20):
        with pytest.raises(TinyLLMError, match=rf"bad\.txt: not valid UTF-8 at byte offset {at} "):
            list(P.iter_txt_stories(p, read_size=n))


def test_txt_without_separators_is_an_error_when_huge(tmp_path):
    p = tmp_path / "blob.txt"
    p.write_bytes(b"x" * 5000)
    with pytest.raises(TinyLLMError, match="no <\\|endoftext\\|> separator"):
        list(P.iter_txt_stories(p, read_size=100, max_story_bytes=1000))
    assert list(P.iter_txt_stories(p)) == ["x" * 5000]  # a small file without separators is one story


def test_jsonl_stories_and_errors(tmp_path):
    p = tmp_path / "s.jsonl"
    p.write_text("".join(json.dumps({"text": s, "id": i}) + "\n\n" for i, s in enumerate(STORIES)), encoding="utf-8")
    assert list(P.iter_jsonl_stories(p)) == STORIES
    p.write_text('{"text": "ok"}\n{"text": "broken\n')
    with pytest.raises(TinyLLMError, match=r"s\.jsonl:2: not valid JSON"): list(P.iter_jsonl_stories(p))
    p.write_text('{"text": "ok"}\n["text"]\n')
    with pytest.raises(TinyLLMError, match=r"s\.jsonl:2: expected a JSON object with a string 'text' field"):
        list(P.iter_jsonl_stories(p))
    p.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(TinyLLMError, match="byte offset 28 "): list(P.iter_jsonl_stories(p))


def test_resolve_sources(tmp_path, monkeypatch):
    d = tmp_path / "ts"
    d.mkdir()
    write_txt(d / "train.txt")
    write_txt(d / "TinyStories-valid.txt", ["v"])
    (d / "notes.md").write_text("ignored")
    plan = P.resolve_sources(d)
    assert list(plan) == ["train", "valid"] and [s.kind for s in plan["train"]] == ["txt"]
    assert list(P.resolve_sources(str(d), ["validation"])) == ["valid"]
    with pytest.raises(TinyLLMError, match="has no test file"): P.resolve_sources(d, ["test"])
    (d / "test.jsonl").write_text('{"text": "t"}\n')
    assert list(P.resolve_sources(d)) == ["train", "valid"]  # the test split only when asked for
    assert list(P.resolve_sources(d, ["test", "train"])) == ["test", "train"]
    (d / "test.jsonl").unlink()
    write_txt(d / "valid.txt", ["w"])
    with pytest.raises(TinyLLMError, match="several valid files"): P.resolve_sources(d)
    (d / "valid.txt").unlink()
    write_txt(d / "train-more.txt", ["m"])                  # TinyStories' train-more.txt continues train.txt
    assert [Path(s.name).name for s in P.resolve_sources(d)["train"]] == ["train.txt", "train-more.txt"]
    (d / "train-more.txt").unlink()
    write_txt(d / "valid.txt", ["w"])
    # files: one split, train by default, in the order given
    a, b = write_txt(tmp_path / "a.txt"), write_txt(tmp_path / "b.txt")
    plan = P.resolve_sources([a, b])
    assert list(plan) == ["train"] and [s.name for s in plan["train"]] == [str(a), str(b)]
    with pytest.raises(TinyLLMError, match="makes one split"): P.resolve_sources([a], ["train", "valid"])
    # the hub
    hub = P.resolve_sources(["hf:roneneldan/TinyStories"])
    assert {k: v[0].identity() for k, v in hub.items()} == {
        "train": {"kind": "hf", "name": "roneneldan/TinyStories", "split": "train"},
        "valid": {"kind": "hf", "name": "roneneldan/TinyStories", "split": "validation"}}
    # nothing given: $TINYLLM_DATA
    monkeypatch.setenv("TINYLLM_DATA", str(tmp_path / "ts2"))
    (tmp_path / "ts2").mkdir()
    write_txt(tmp_path / "ts2" / "train.txt")
    assert list(P.resolve_sources(None)) == ["train"]
    # ... and a $TINYLLM_DATA that points nowhere is an error, not a silent fall-back to the hub
    monkeypatch.setenv("TINYLLM_DATA", str(tmp_path / "no-such-folder"))
    with pytest.raises(TinyLLMError, match="TINYLLM_DATA=.*no-such-folder.* is not a folder"):
        P.resolve_sources(None)


@pytest.mark.parametrize("make, msg", [
    (lambda t: t / "missing.txt", "does not exist"),
    (lambda t: (t / "x.csv").write_text("a") and t / "x.csv", "unknown file type '.csv'"),
    (lambda t: (t / "empty").mkdir() or t / "empty", "holds no split files"),
    (lambda t: "nope", "split"),
])
def test_resolve_sources_errors(tmp_path, make, msg):
    with pytest.raises(TinyLLMError, match=msg):
        P.resolve_sources(make(tmp_path), ["nope"] if msg == "split" else None)


def test_hub_unreachable_is_a_clear_cli_error(tmp_path):
    "The real `datasets` code path, offline: exit status 2 and a message that says how to use local files."
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    code = "import sys; from tinyllm.cli import main; sys.exit(main(sys.argv[1:]))"
    r = subprocess.run([sys.executable, "-c", code, "data", "prepare", "--data", "hf:roneneldan/TinyStories",
                        "--tokenizer", str(REPO / "tests/fixtures/gpt2"), "--out", str(tmp_path / "out"),
                        "--no-progress"], capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("error: could not stream split 'train' of 'roneneldan/TinyStories'")
    assert "--data" in r.stderr and "TINYLLM_DATA" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out" / "train.json").exists()


def test_hub_stories_are_streamed_and_normalized(tmp_path, monkeypatch):
    "The hub code path with `datasets.load_dataset` replaced by a fake stream (the real hub is unreachable here)."
    datasets = pytest.importorskip("datasets")
    calls = []

    def fake_load_dataset(name, split, streaming):
        calls.append((name, split, streaming))
        yield from ({"text": s + "\n"} for s in STORIES)
        raise ConnectionError("connection reset by peer")

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    it = P.iter_hf_stories("roneneldan/TinyStories", "valid")
    assert [next(it) for _ in STORIES] == STORIES
    with pytest.raises(TinyLLMError, match="could not stream split 'validation'.*connection reset.*--data"): next(it)
    assert calls == [("roneneldan/TinyStories", "validation", True)]
    monkeypatch.setattr(datasets, "load_dataset", lambda name, split, streaming: iter([{"text": s} for s in STORIES]))
    r = P.prepare("hf:roneneldan/TinyStories", ByteTok(), tmp_path / "out", splits=["train"], progress=False)["train"]
    assert r.meta["inputs"]["sources"] == [{"kind": "hf", "name": "roneneldan/TinyStories", "split": "train"}]
    assert D.load_tokens(tmp_path / "out").tokens.tolist() == expected_bytes_ids(STORIES)


# ---------------------------------------------------------------------------------------------------------- prepare
def test_token_dtype():
    assert D.token_dtype(256) == np.uint16 and D.token_dtype(65_536) == np.uint16
    assert D.token_dtype(65_537) == np.uint32 and D.token_dtype(128_256).str == "<u4"
    with pytest.raises(TinyLLMError): D.token_dtype(0)


def test_prepare_eot_after_every_story_and_metadata(tmp_path):
    src = write_txt(tmp_path / "train.txt")
    r = P.prepare_split([P.Source.from_path(src)], ByteTok(), tmp_path / "out", progress=False)
    raw = (tmp_path / "out" / "train.bin").read_bytes()
    assert np.frombuffer(raw, "<u2").tolist() == expected_bytes_ids(STORIES)
    m = json.loads((tmp_path / "out" / "train.json").read_text())
    assert m == r.meta and not r.skipped
    st = src.stat()
    assert m["inputs"] == {"version": D.FORMAT_VERSION, "split": "train", "tokenizer_fingerprint": ByteTok().fingerprint,
                           "vocab_size": 257, "eot_id": 256, "dtype": "uint16", "max_bytes": None,
                           "sources": [{"kind": "txt", "path": str(src.resolve()), "size": st.st_size,
                                        "mtime_ns": st.st_mtime_ns}]}
    assert m["num_tokens"] == len(raw) // 2 and m["num_stories"] == 3
    assert m["num_bytes"] == sum(len(s.encode()) for s in STORIES) and m["sha256"] == hashlib.sha256(raw).hexdigest()
    assert files_of(tmp_path / "out") == ["train.bin", "train.json"]


def test_prepare_same_file_for_any_worker_count(tmp_path):
    stories = [f"Story {i}: " + "la " * (i % 17) + "\u00e9" for i in range(300)]
    src = write_txt(tmp_path / "train.txt", stories)
    outs = []
    for w in (1, 2, 3):
        r = P.prepare_split([P.Source.from_path(src)], ByteTok(), tmp_path / f"w{w}", workers=w, chunk_bytes=100,
                            progress=False)
        outs.append(r.bin_path.read_bytes())
    assert outs[0] == outs[1] == outs[2]
    assert np.frombuffer(outs[0], "<u2").tolist() == expected_bytes_ids(stories)


def test_prepare_uint32_for_large_vocabularies(tmp_path):
    src = write_txt(tmp_path / "train.txt")
    tok = ByteTok(vocab_size=70_000)
    r = P.prepare_split([P.Source.from_path(src)], tok, tmp_path / "out", progress=False)
    assert r.meta["inputs"]["dtype"] == "uint32" and r.bin_path.stat().st_size == 4 * r.meta["num_tokens"]
    d = D.load_tokens(tmp_path / "out", tokenizer=tok)
    assert d.tokens.dtype == np.dtype("<u4") and d.tokens.tolist() == expected_bytes_ids(STORIES, eot=69_999)


def test_prepare_jsonl_and_several_files_in_order(tmp_path):
    j = tmp_path / "a.jsonl"
    j.write_text("".join(json.dumps({"text": s}) + "\n" for s in STORIES[:2]))
    t = write_txt(tmp_path / "b.txt", STORIES[2:])
    r = P.prepare(data=[j, t], tokenizer=ByteTok(), out_dir=tmp_path / "out", progress=False)["train"]
    assert D.load_tokens(tmp_path / "out").tokens.tolist() == expected_bytes_ids(STORIES)
    assert [s["kind"] for s in r.meta["inputs"]["sources"]] == ["jsonl", "txt"]


def test_prepare_max_bytes_takes_whole_stories(tmp_path):
    src = write_txt(tmp_path / "train.txt")
    n0, n1 = (len(s.encode()) for s in STORIES[:2])
    r = P.prepare_split([P.Source.from_path(src)], ByteTok(), tmp_path / "out", max_bytes=n0 + n1, progress=False)
    assert r.meta["num_stories"] == 2 and r.meta["num_bytes"] == n0 + n1
    r = P.prepare_split([P.Source.from_path(src)], ByteTok(), tmp_path / "out", max_bytes=n0 + n1 - 1, progress=False)
    assert r.meta["num_stories"] == 1 and r.meta["inputs"]["max_bytes"] == n0 + n1 - 1
    with pytest.raises(TinyLLMError, match="first story is longer"):
        P.prepare_split([P.Source.from_path(src)], ByteTok(), tmp_path / "out", max_bytes=5, progress=False)


def test_rerun_is_a_noop_until_an_input_changes(tmp_path):
    src = write_txt(tmp_path / "train.txt")
    out = tmp_path / "out"
    run = lambda tok=None, **kw: P.prepare_split([P.Source.from_path(src)], tok or ByteTok(), out, progress=False, **kw)
    first = run()
    stamp = (out / "train.bin").stat().st_mtime_ns, (out / "train.json").stat().st_mtime_ns
    again = run()
    assert again.skipped and again.meta == first.meta
    assert ((out / "train.bin").stat().st_mtime_ns, (out / "train.json").stat().st_mtime_ns) == stamp
    assert not run(force=True).skipped
    assert not run(max_bytes=10_000).skipped and run(max_bytes=10_000).skipped
    assert not run(ByteTok(name="other")).skipped          # another tokenizer
    write_txt(src, STORIES + ["More."])                    # the input changed
    r = run(ByteTok(name="other"))
    assert not r.skipped and r.meta["num_stories"] == 4
    with open(out / "train.bin", "ab") as f: f.write(b"\0\0")  # a damaged token file is rebuilt
    assert not run(ByteTok(name="other")).skipped


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), RuntimeError("boom"), TinyLLMError("bad")])
def test_interrupted_run_keeps_previous_outputs(tmp_path, exc):
    src = write_txt(tmp_path / "train.txt", [f"s{i}" for i in range(50)])
    out = tmp_path / "out"
    good = P.prepare_split([P.Source.from_path(src)], ByteTok(), out, progress=False)
    before = (out / "train.bin").read_bytes(), (out / "train.json").read_bytes()
    with pytest.raises(type(exc)):
        P.prepare_split([P.Source.from_path(src)], FailingTok("s30", exc), out, workers=1, chunk_bytes=10, progress=False)
    assert ((out / "train.bin").read_bytes(), (out / "train.json").read_bytes()) == before
    assert files_of(out) == ["train.bin", "train.json"]  # no temporary file left behind
    assert D.load_tokens(out, tokenizer=ByteTok()).meta == good.meta


def test_interrupted_fresh_run_leaves_nothing_that_looks_finished(tmp_path):
    src = write_txt(tmp_path / "train.txt", [f"s{i}" for i in range(50)])
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        P.prepare_split([P.Source.from_path(src)], FailingTok("s30", RuntimeError()), out, workers=2, chunk_bytes=10,
                        progress=False)
    assert files_of(out) == []
    with pytest.raises(TinyLLMError, match="never prepared or its preparation did not finish"): D.load_tokens(out)


KILLED = textwrap.dedent("""
    import os, signal, sys
    from tinyllm import prepare as P
    sys.path.insert(0, {tests!r})
    from test_data import ByteTok
    class KillTok(ByteTok):
        calls = 0
        def encode_ordinary(self, text):
            KillTok.calls += 1
            if KillTok.calls == 40: os.kill(os.getpid(), signal.SIGKILL)  # no cleanup of any kind runs
            return super().encode_ordinary(text)
    P.prepare_split([P.Source.from_path({src!r})], KillTok(), {out!r}, workers=1, chunk_bytes=10, progress=False)
""")


def test_killed_run_is_never_mistaken_for_finished(tmp_path):
    src = write_txt(tmp_path / "train.txt", [f"story {i}" for i in range(100)])
    out = tmp_path / "out"
    code = KILLED.format(tests=str(Path(__file__).parent), src=str(src), out=str(out))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == -9, r.stderr
    left = files_of(out)
    assert "train.json" not in left and "train.bin" not in left and any(f.endswith(".tmp") for f in left)
    with pytest.raises(TinyLLMError): D.load_tokens(out)
    r = P.prepare_split([P.Source.from_path(src)], ByteTok(), out, progress=False)  # the rerun completes
    assert not r.skipped and files_of(out) == ["train.bin", "train.json"]  # and removes the stale temporary file
    assert D.load_tokens(out).tokens.tolist() == expected_bytes_ids([f"story {i}" for i in range(100)])


def test_crash_between_tokens_and_metadata(tmp_path):
    "A run killed after the tokens were renamed into place but before the metadata was written: not finished."
    src = write_txt(tmp_path / "train.txt")
    out = tmp_path / "out"
    P.prepare_split([P.Source.from_path(src)], ByteTok(), out, progress=False)
    (out / "train.json").unlink()
    with pytest.raises(TinyLLMError, match="has no metadata.*did not finish"): D.load_tokens(out)
    assert not P.prepare_split([P.Source.from_path(src)], ByteTok(), out, progress=False).skipped


def test_disk_full_is_a_clear_error_and_keeps_old_outputs(tmp_path, monkeypatch):
    src = write_txt(tmp_path / "train.txt")
    out = tmp_path / "out"
    P.prepare_split([P.Source.from_path(src)], ByteTok(), out, progress=False)
    before = (out / "train.bin").read_bytes(), (out / "train.json").read_bytes()
    real = P.atomic_write

    class FullDisk:
        def __init__(self, f): self.f = f
        def write(self, b): raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        def __getattr__(self, name): return getattr(self.f, name)

    @contextlib.contextmanager
    def full_disk(path, *a, **kw):
        with real(path, *a, **kw) as f: yield FullDisk(f)

    monkeypatch.setattr(P, "atomic_write", full_disk)
    with pytest.raises(TinyLLMError, match=r"could not write .*train\.bin: No space left on device.*untouched"):
        P.prepare_split([P.Source.from_path(src)], ByteTok(name="other"), out, progress=False)
    assert ((out / "train.bin").read_bytes(), (out / "train.json").read_bytes()) == before
    assert files_of(out) == ["train.bin", "train.json"]


def test_empty_data_is_an_error(tmp_path):
    src = tmp_path / "train.txt"
    src.write_text(f"\n{EOT}\n  \n{EOT}\n")
    with pytest.raises(TinyLLMError, match="no stories found in .*train.txt"):
        P.prepare_split([P.Source.from_path(src)], ByteTok(), tmp_path / "out", progress=False)
    assert files_of(tmp_path / "out") == []


# ---------------------------------------------------------------------------------------------------------- loading
def test_load_checks_fingerprint_size_and_hash(tmp_path):
    src = write_txt(tmp_path / "train.txt")
    out = tmp_path / "out"
    P.prepare_split([P.Source.from_path(src)], ByteTok(), out, progress=False)
    other = ByteTok(name="other")
    with pytest.raises(TinyLLMError) as e: D.load_tokens(out, tokenizer=other)
    assert ByteTok().fingerprint in str(e.value) and other.fingerprint in str(e.value) and "prepare" in str(e.value)
    assert D.load_tokens(out, tokenizer=ByteTok().fingerprint).fingerprint == ByteTok().fingerprint
    raw = bytearray((out / "train.bin").read_bytes())
    raw[3] ^= 1
    (out / "train.bin").write_bytes(raw)
    D.load_tokens(out)  # same size: only the hash can tell
    with pytest.raises(TinyLLMError, match="does not match the SHA-256"): D.load_tokens(out, verify=True)
    (out / "train.bin").write_bytes(raw[:-2])
    with pytest.raises(TinyLLMError, match="incomplete or was modified"): D.load_tokens(out)
    (out / "train.json").write_text("{garbled")
    with pytest.raises(TinyLLMError, match="not readable JSON"): D.load_tokens(out)


def test_real_tokenizer_matches_tiktoken(tmp_path, gpt2_files, tiktoken_gpt2):
    from tinyllm.bpe import Tokenizer
    stories = STORIES + ["  It's 2023's best   story\u2014isn't it?\n\n\nYes.", "\u4f60\u597d\uff0c\u4e16\u754c"]
    src = write_txt(tmp_path / "train.txt", stories)
    tok = Tokenizer.from_gpt2(*gpt2_files)
    r = P.prepare([src], gpt2_files[0].parent, tmp_path / "out", workers=2, progress=False)["train"]
    want = [i for s in P.iter_txt_stories(src) for i in tiktoken_gpt2.encode_ordinary(s) + [tiktoken_gpt2.eot_token]]
    d = D.load_tokens(tmp_path / "out", tokenizer=tok, verify=True)
    assert d.tokens.tolist() == want and r.meta["inputs"]["tokenizer_fingerprint"] == tok.fingerprint
    assert d.eot_id == 50256 and d.vocab_size == 50257


# --------------------------------------------------------------------------------------------------------- samplers
@pytest.fixture
def stream():
    return np.random.default_rng(0).integers(0, 60_000, size=10_007).astype(np.uint16)


def batches(sampler, n):
    return [tuple(t.clone() for t in next(sampler)) for _ in range(n)]


def same(a, b):
    return len(a) == len(b) and all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))


@pytest.mark.parametrize("mode", ["random", "stream"])
def test_batches_shape_shift_and_determinism(stream, mode):
    s = D.make_batches(stream, 16, 8, mode, seed=3)
    x, y = next(s)
    assert x.shape == y.shape == (8, 16) and x.dtype == y.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    for row_x, row_y in zip(x, y):  # every row is a real window of the stream
        i = int(np.flatnonzero(np.lib.stride_tricks.sliding_window_view(stream, 17)[:, 0] == int(row_x[0]))[0])
        assert row_x.tolist() == stream[i:i + 16].tolist() and row_y.tolist() == stream[i + 1:i + 17].tolist()
    assert same(batches(D.make_batches(stream, 16, 8, mode, seed=3), 10), batches(D.make_batches(stream, 16, 8, mode, seed=3), 10))
    assert not same(batches(D.make_batches(stream, 16, 8, mode, seed=3), 10), batches(D.make_batches(stream, 16, 8, mode, seed=4), 10))


@pytest.mark.parametrize("mode, skip", [("random", 7), ("stream", 7), ("stream", 77), ("stream", 200)])
def test_resume_is_bit_exact(stream, mode, skip):
    "Stop after `skip` batches (mid-epoch, at and across epoch ends for stream), save through JSON, resume."
    a = D.make_batches(stream, 32, 4, mode, seed=11)  # stream: 312 chunks, 78 batches per epoch
    batches(a, skip)
    state = json.loads(json.dumps(a.state_dict()))
    b = D.make_batches(stream, 32, 4, mode, seed=0)
    b.load_state_dict(state)
    assert same(batches(a, 100), batches(b, 100))
    assert a.state_dict() == b.state_dict()


def test_random_windows_cover_the_whole_range():
    s = D.RandomBatches(np.arange(12, dtype=np.uint16), block_size=4, batch_size=64, seed=0)
    starts = np.concatenate([s.starts(i) for i in range(20)])
    assert starts.min() == 0 and starts.max() == 12 - 4 - 1  # the last window ends on the last token


def test_stream_visits_every_chunk_once_per_epoch(stream):
    s = D.StreamBatches(stream, block_size=100, batch_size=7, seed=5, epochs=3)
    assert s.num_chunks == (len(stream) - 1) // 100 and s.batches_per_epoch == -(-s.num_chunks // 7)
    firsts = [int(v) for x, _ in s for v in x[:, 0]]
    starts = np.arange(s.num_chunks) * 100
    assert sorted(firsts) == sorted(stream[starts].tolist() * 3)
    per_epoch = [firsts[i * s.num_chunks:(i + 1) * s.num_chunks] for i in range(3)]
    assert per_epoch[0] != per_epoch[1]  # a fresh order every epoch
    inorder = D.StreamBatches(stream, block_size=100, batch_size=7, shuffle=False, epochs=1)
    xs = torch.cat([x for x, _ in inorder])
    assert torch.equal(xs.flatten(), torch.from_numpy(stream[:s.num_chunks * 100].astype(np.int64)))


def test_sampler_state_mismatch_and_bad_sizes(stream):
    st = D.StreamBatches(stream, 16, 4).state_dict()
    for other in (D.StreamBatches(stream, 32, 4), D.StreamBatches(stream, 16, 8), D.StreamBatches(stream[:-1], 16, 4),
                  D.StreamBatches(stream, 16, 4, shuffle=False), D.RandomBatches(stream, 16, 4)):
        with pytest.raises(TinyLLMError, match="cannot resume"): other.load_state_dict(st)
    with pytest.raises(TinyLLMError, match="needs windows of 10,008 tokens but the data holds only 10,007"):
        D.RandomBatches(stream, len(stream), 1)
    D.StreamBatches(stream, len(stream) - 1, 1)  # exactly one window fits
    for bad in (dict(block_size=0), dict(batch_size=-1), dict(seed=-1)):
        with pytest.raises(TinyLLMError): D.RandomBatches(stream, **{"block_size": 8, "batch_size": 2, **bad})
    with pytest.raises(TinyLLMError, match="unknown packing mode"): D.make_batches(stream, 8, 2, "padded")


def test_batches_from_a_prepared_split(tmp_path):
    src = write_txt(tmp_path / "train.txt")
    P.prepare_split([P.Source.from_path(src)], ByteTok(), tmp_path / "out", progress=False)
    d = D.load_tokens(tmp_path / "out")
    x, y = next(D.StreamBatches(d, block_size=10, batch_size=2, shuffle=False))
    assert x[0].tolist() == expected_bytes_ids(STORIES)[:10] and y[0].tolist() == expected_bytes_ids(STORIES)[1:11]


def test_to_device_cpu_returns_the_batch():
    x, y = torch.arange(6).view(2, 3), torch.arange(1, 7).view(2, 3)
    x2, y2 = D.to_device(x, y, "cpu")
    assert x2 is x and y2 is y
    x3, _ = D.to_device(x, y, "meta")
    assert x3.device.type == "meta"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_to_device_cuda_pinned_non_blocking(stream):
    s = D.RandomBatches(stream, 16, 4, device="cuda")
    x, y = next(s)
    ref = D.RandomBatches(stream, 16, 4)
    xr, yr = next(ref)
    torch.cuda.synchronize()
    assert x.is_cuda and torch.equal(x.cpu(), xr) and torch.equal(y.cpu(), yr)


# -------------------------------------------------------------------------------------------------------------- CLI
def test_cli_prepare_and_info(tmp_path, capsys):
    d = tmp_path / "ts"
    d.mkdir()
    write_txt(d / "train.txt")
    write_txt(d / "valid.txt", ["A valid story."])
    out, tok = tmp_path / "out", str(REPO / "tests/fixtures/gpt2")
    args = ["data", "prepare", "--data", str(d), "--tokenizer", tok, "--out", str(out), "--no-progress", "--workers", "1"]
    assert cli_main(args) == 0
    printed = capsys.readouterr().out
    assert "train: " in printed and "valid: 5 tokens (uint16), 1 story," in printed
    assert files_of(out) == ["train.bin", "train.json", "valid.bin", "valid.json"]
    assert cli_main(args) == 0 and capsys.readouterr().out.count("up to date") == 2
    assert cli_main(["data", "info", str(out), "--verify"]) == 0
    assert "SHA-256 verified" in capsys.readouterr().out
    assert cli_main(args + ["--split", "test"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no test file" in err
    assert cli_main(["data", "prepare", "--data", str(d), "--tokenizer", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "tokenizer folder" in capsys.readouterr().err
    assert cli_main(["data", "prepare", "--max-bytes", "lots", "--tokenizer", tok, "--out", str(out)]) == 2


def test_cli_help_explains_flags(capsys):
    with pytest.raises(SystemExit) as e: cli_main(["data", "prepare", "--help"])
    assert e.value.code == 0
    h = capsys.readouterr().out
    for flag in ("--data", "--tokenizer", "--out", "--split", "--max-bytes", "--workers", "--force", "hf:"):
        assert flag in h


# ------------------------------------------------------------------------------------------------------------- slow
@pytest.mark.slow
def test_prepare_tinystories_sample(tinystories, tmp_path, gpt2_files, tiktoken_gpt2):
    "The real sample, train and valid, with GPT-2's tokenizer on all cores: ids equal tiktoken's, story by story."
    res = P.prepare(tinystories, gpt2_files[0].parent, tmp_path / "out", splits=["train", "valid"], progress=False)
    for split, r in res.items():
        d = D.load_tokens(tmp_path / "out", split, tokenizer=D.load_tokenizer(gpt2_files[0].parent), verify=True)
        files = [tinystories / f"{split}.txt"] + sorted(tinystories.glob(f"{split}-*.txt"))   # train.txt, train-more.txt
        stories = [s for f in files for s in P.iter_txt_stories(f)]
        want = np.concatenate([np.array(ids + [50256], dtype=np.uint16)
                               for ids in tiktoken_gpt2.encode_ordinary_batch(stories)])
        assert np.array_equal(d.tokens, want)
        assert r.meta["num_stories"] == len(stories) == int((d.tokens == 50256).sum())
    assert res["train"].meta["num_stories"] == 11_210 + 2_988 and res["valid"].meta["num_stories"] == 300
    again = P.prepare(tinystories, gpt2_files[0].parent, tmp_path / "out", splits=["train", "valid"], progress=False)
    assert all(r.skipped for r in again.values())
