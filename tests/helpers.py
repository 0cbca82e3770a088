"""Small data shared by the tests (and by tests/dist_worker.py, which runs as a script beside them)."""
import numpy as np


def learnable_stream(n: int = 20_000, seed: int = 0) -> np.ndarray:
    "uint16 token ids a tiny model can learn: mostly `next id = previous + 7 (mod 256)`, with 10% random ids."
    rng = np.random.default_rng(seed)
    return np.where(rng.random(n) < 0.1, rng.integers(0, 256, n), np.arange(n) * 7 % 256).astype(np.uint16)
