"""Benchmark data preparation (``tinyllm data prepare``) on the TinyStories training sample, side by side in one process.

    python bench/data.py [--data DIR] [--quick] [--repeats N] [--json OUT]

On ``DIR/train.txt`` (default ``$TINYLLM_DATA`` or ``../shared/data/tinystories``; 9.5 MB) with GPT-2's tokenizer
(``Tokenizer.from_gpt2`` on the files in ``tests/fixtures/gpt2``) it measures, in MB/s of input text (decimal MB):

* ``tinyllm.prepare.prepare_split`` end to end -- read the file, split stories, tokenize, write ``train.bin`` and its
  metadata -- with all usable cores and with one process;
* the same tokenizer's ``encode_ordinary`` over the stories already in memory, one process (no file I/O, no pool):
  the ceiling of the one-process ``prepare``;
* tiktoken's ``gpt2`` (Rust) as the reference, on the same stories in memory: ``encode_ordinary`` on one thread and
  ``encode_ordinary_batch`` with one thread per usable core.

Every tinyllm run starts from a fresh copy of the tokenizer (empty BPE cache), as a new ``prepare`` does. Timings are
the best of N runs (N = 2, 1 with --quick). The token file is checked against tiktoken's ids; the script exits 1 if
they differ, 2 on bad input. ``--quick`` uses the first 2 MB of stories.
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GPT2_DIR = REPO / "tests" / "fixtures" / "gpt2"   # the repository's copies of GPT-2's BPE files
try:
    import tinyllm  # noqa: F401
except ImportError:  # running from a checkout that is not pip-installed
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from tinyllm import data as D  # noqa: E402
from tinyllm import prepare as P  # noqa: E402
from tinyllm.bpe import Tokenizer  # noqa: E402
from tinyllm.core import TinyLLMError, default_workers, gpt2_files, tiktoken_gpt2, tinystories_dir  # noqa: E402

MB = 1e6


def cpu_seconds() -> float:
    "User + system CPU seconds of this process (all its threads) and of its finished child processes."
    return sum(r.ru_utime + r.ru_stime for r in map(resource.getrusage, (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)))


def best_of(fn, repeats: int):
    "(wall seconds, CPU seconds) of the fastest of `repeats` calls of `fn()`, and the last result."
    best, out = (float("inf"), 0.0), None
    for _ in range(repeats):
        c0, t0 = cpu_seconds(), time.perf_counter()
        out = fn()
        best = min(best, (time.perf_counter() - t0, cpu_seconds() - c0))
    return best, out


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "usable_cores": default_workers(), "python": platform.python_version()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, help="folder holding train.txt (default: $TINYLLM_DATA or ../shared)")
    ap.add_argument("--quick", action="store_true", help="first 2 MB of stories, one repeat")
    ap.add_argument("--repeats", type=int, help="best of N runs (default 2, 1 with --quick)")
    ap.add_argument("--json", type=Path, metavar="OUT", help="also write the results as JSON")
    args = ap.parse_args(argv)
    try:
        src = (args.data or tinystories_dir()) / "train.txt"
        sources = [P.Source.from_path(src)]
        enc_json, vocab_bpe = gpt2_files(GPT2_DIR)
    except TinyLLMError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    repeats = args.repeats or (1 if args.quick else 2)
    max_bytes = 2 * 10**6 if args.quick else None
    tok = Tokenizer.from_gpt2(enc_json, vocab_bpe)
    fresh = lambda: pickle.loads(pickle.dumps(tok))  # a new Tokenizer with an empty BPE cache
    ref = tiktoken_gpt2(enc_json, vocab_bpe)
    stories = [s for chunk, _ in P._story_chunks(sources, max_bytes, 1 << 30) for s in chunk]
    nbytes = sum(len(s.encode("utf-8")) for s in stories)
    cores = default_workers()
    print(f"# data preparation: {src} ({len(stories):,} stories, {nbytes / MB:.2f} MB of story text), GPT-2 tokenizer, "
          f"{cores} usable cores ({machine()['cpu'] or 'unknown CPU'}), best of {repeats}; load average before: "
          f"{os.getloadavg()[0]:.2f}")

    rows = []
    with tempfile.TemporaryDirectory(prefix="tinyllm-bench-data-") as tmp:
        def prepare(workers):
            t = fresh()
            c0, t0 = cpu_seconds(), time.perf_counter()
            r = P.prepare_split(sources, t, tmp, max_bytes=max_bytes, workers=workers, force=True, progress=False)
            return (time.perf_counter() - t0, cpu_seconds() - c0), r

        for workers, label in ((cores, f"tinyllm prepare, {cores} processes"), (1, "tinyllm prepare, 1 process")):
            runs = [prepare(workers) for _ in range(repeats)]
            secs, r = min(runs, key=lambda x: x[0])
            rows.append((label, "read + tokenize + write", *secs))
            assert r.meta["num_bytes"] == nbytes and r.meta["num_stories"] == len(stories)
        tokens = D.load_tokens(tmp, tokenizer=tok, verify=True).tokens
        want = np.concatenate([np.asarray(ids + [ref.eot_token], dtype=np.uint16)
                               for ids in ref.encode_ordinary_batch(stories, num_threads=cores)])
        identical = np.array_equal(np.asarray(tokens), want)
        n_tokens = len(tokens)
        del tokens

    def tinyllm_encode():
        t = fresh()
        return [t.encode_ordinary(s) for s in stories]

    secs, _ = best_of(tinyllm_encode, repeats)
    rows.append(("tinyllm Tokenizer.encode_ordinary, 1 process", "in memory", *secs))
    secs, _ = best_of(lambda: [ref.encode_ordinary(s) for s in stories], repeats)
    rows.append(("tiktoken encode_ordinary, 1 thread", "in memory", *secs))
    secs, _ = best_of(lambda: ref.encode_ordinary_batch(stories, num_threads=cores), repeats)
    rows.append((f"tiktoken encode_ordinary_batch, {cores} threads", "in memory", *secs))

    w = max(len(r[0]) for r in rows)
    print(f"\n{'what':<{w}}  {'scope':<24} {'wall s':>7} {'MB/s':>7} {'CPU s':>7}")
    for label, scope, secs, cpu in rows:
        print(f"{label:<{w}}  {scope:<24} {secs:7.2f} {nbytes / MB / secs:7.2f} {cpu:7.2f}")
    speedup = rows[1][2] / rows[0][2]
    print(f"\n{n_tokens:,} tokens ({nbytes / (n_tokens - len(stories)):.3f} bytes/token); all cores vs one process: "
          f"{speedup:.2f}x wall; ids identical to tiktoken: {identical}; load average after: {os.getloadavg()[0]:.2f}")
    print("CPU s = user + system seconds of the process and its workers; wall < CPU means cores worked in parallel, "
          "wall > CPU means the cores were busy with other work (a shared machine).")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "bytes": nbytes, "stories": len(stories),
                                         "tokens": n_tokens, "repeats": repeats, "identical": identical,
                                         "rows": [{"what": a, "scope": b, "seconds": c, "cpu_seconds": d,
                                                   "mb_per_s": nbytes / MB / c} for a, b, c, d in rows]}, indent=1))
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
