"""Shared pytest fixtures: GPT-2's BPE files, tiktoken's `gpt2` encoding loaded offline, and the TinyStories sample."""
import hashlib
from pathlib import Path

import pytest

from tinyllm import core

FIXTURES = Path(__file__).parent / "fixtures"
GPT2_DIR = FIXTURES / "gpt2"


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than a few seconds (CI still runs it; deselect with -m 'not slow')")


@pytest.fixture(scope="session")
def gpt2_files():
    "(encoder.json, vocab.bpe) committed under tests/fixtures/gpt2, checked against the SHA-256 tiktoken expects."
    paths = GPT2_DIR / "encoder.json", GPT2_DIR / "vocab.bpe"
    for p in paths:
        assert hashlib.sha256(p.read_bytes()).hexdigest() == core.GPT2_SHA256[p.name], f"{p} differs from GPT-2's file"
    return paths


@pytest.fixture(scope="session")
def tiktoken_gpt2(gpt2_files, tmp_path_factory):
    "tiktoken's `gpt2` Encoding built from the committed files, with no network access."
    return core.tiktoken_gpt2(*gpt2_files, cache_dir=tmp_path_factory.mktemp("tiktoken-cache"))


@pytest.fixture(scope="session")
def tinystories():
    "Folder of the local TinyStories sample ($TINYLLM_DATA or ../shared/data/tinystories); skips when absent."
    d = core.tinystories_dir(required=False)
    if d is None:
        pytest.skip("TinyStories sample not found: set TINYLLM_DATA to run this test")
    return d


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for modules of tiny models (`pytestmark = pytest.mark.usefixtures("one_thread")`): they gain
    nothing from more, and OpenMP threads that spin while the cores are busy make them far slower."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
