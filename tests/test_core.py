"""The tiktoken oracle loads offline, data discovery and atomic writes behave."""
import os

import pytest

from tinyllm import core
from tinyllm.core import TinyLLMError, atomic_write


def test_tiktoken_gpt2_loads_offline(tiktoken_gpt2, monkeypatch):
    # No network here: the encoding must come from the committed fixture files alone.
    text = "Hello world! It's 2026 <|endoftext|> 你好"
    ids = tiktoken_gpt2.encode(text, allowed_special="all")
    assert ids[:4] == [15496, 995, 0, 632]
    assert 50256 in ids and tiktoken_gpt2.n_vocab == 50257
    assert tiktoken_gpt2.decode(ids) == text


def test_tiktoken_rejects_files_with_wrong_hash(tmp_path, gpt2_files):
    bad = tmp_path / "encoder.json"
    bad.write_bytes(gpt2_files[0].read_bytes() + b" ")
    with pytest.raises(TinyLLMError, match="SHA-256 differs"):
        core.tiktoken_gpt2(bad, gpt2_files[1], cache_dir=tmp_path / "cache")


def test_tiktoken_cache_env_restored(gpt2_files, tmp_path, monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "/somewhere/else")
    core.tiktoken_gpt2(*gpt2_files, cache_dir=tmp_path)
    assert os.environ["TIKTOKEN_CACHE_DIR"] == "/somewhere/else"


def test_data_dir_env(tmp_path, monkeypatch):
    (tmp_path / "train.txt").write_text("a story\n<|endoftext|>\n")
    monkeypatch.setenv(core.DATA_ENV, str(tmp_path))
    assert core.tinystories_dir() == tmp_path
    assert core.tinystories_file("train") == tmp_path / "train.txt"
    with pytest.raises(TinyLLMError, match="valid.txt"):
        core.tinystories_file("valid")
    monkeypatch.setenv(core.DATA_ENV, str(tmp_path / "missing"))
    with pytest.raises(TinyLLMError, match="TINYLLM_DATA"):
        core.tinystories_dir()


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    p = tmp_path / "ckpt.bin"
    with atomic_write(p) as f:
        f.write(b"good")
    with pytest.raises(RuntimeError):
        with atomic_write(p) as f:
            f.write(b"partial")
            raise RuntimeError("crash mid-save")
    assert p.read_bytes() == b"good"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["ckpt.bin"]


def test_atomic_write_disk_full_is_a_clear_error(tmp_path, monkeypatch):
    p = tmp_path / "ckpt.bin"
    p.write_bytes(b"good")

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(core.os, "fsync", full_disk)
    with pytest.raises(TinyLLMError, match="No space left on device.*untouched"):
        with atomic_write(p) as f:
            f.write(b"new")
    assert p.read_bytes() == b"good"


def test_gpt2_files_downloads_once_and_checks_hashes(gpt2_files, tmp_path, monkeypatch):
    "With no folder, gpt2_files() downloads into its cache (here from file:// URLs), then reuses the verified copies."
    urls = {name: (gpt2_files[0].parent / name).as_uri() for name in core.GPT2_URLS}
    monkeypatch.setattr(core, "GPT2_URLS", urls)
    got = core.gpt2_files(cache_dir=tmp_path / "cache")
    assert [p.read_bytes() for p in got] == [p.read_bytes() for p in gpt2_files]
    monkeypatch.setattr(core, "GPT2_URLS", {name: "file:///no/such/file" for name in urls})
    assert core.gpt2_files(cache_dir=tmp_path / "cache") == got          # cached: no download attempted
    (tmp_path / "cache" / "vocab.bpe").write_bytes(b"garbled")
    with pytest.raises(TinyLLMError, match="could not download file:///no/such/file"):
        core.gpt2_files(cache_dir=tmp_path / "cache")                     # a damaged copy is fetched again


def test_gpt2_files_from_a_folder_names_a_wrong_file(gpt2_files, tmp_path):
    (tmp_path / "encoder.json").write_bytes(gpt2_files[0].read_bytes())
    (tmp_path / "vocab.bpe").write_bytes(gpt2_files[1].read_bytes()[:-1])
    with pytest.raises(TinyLLMError, match="vocab.bpe is not GPT-2's original file"):
        core.gpt2_files(tmp_path)
    assert core.gpt2_files(gpt2_files[0].parent) == gpt2_files
