"""Benchmark tinyllm's byte-level BPE against the reference libraries, side by side in one process.

    python bench/bpe.py [--data DIR] [--quick] [--repeats N] [--json OUT]

On the TinyStories training sample (``DIR/train.txt``; default ``$TINYLLM_DATA`` or ``../shared/data/tinystories``) it
measures:

* training time at vocab 10,000 with the special token ``<|endoftext|>``: ``tinyllm.bpe_train.train_bpe`` against the Hugging
  Face ``tokenizers`` BPE trainer set up with the same byte-level pre-tokenizer (ByteLevel, GPT-2 regex,
  ``add_prefix_space=False``, all 256 bytes as the initial alphabet) and fed the same text split on the special token;
* encode throughput (MB/s of UTF-8 input) of the whole file with GPT-2's vocabulary: ``Tokenizer.from_gpt2`` against
  tiktoken's ``gpt2``, on one thread and with all cores (``encode_batch`` over the 11K stories, and over a few large
  chunks of whole stories, where per-item overhead no longer dominates), and checks that the ids are identical;
* peak memory, each in a fresh subprocess so the peaks are clean: the resident-memory growth of ``encode_iterable`` over a
  ~100 MB stream (the file repeated lazily, line by line, never held in memory) and the peak RSS of both trainers.

Timings are the median of N wall-clock runs after a warm-up (the best beside it), tinyllm and the reference interleaved
(the machine may be shared). Targets (issues 3 and 19) are printed as labels; the script never fails on speed.
It exits 1 only if the tinyllm and tiktoken ids differ (a correctness failure), 2 on bad input.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
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

EOT = "<|endoftext|>"
MB = 1e6  # throughput in decimal megabytes per second, like tiktoken's README
TARGET_TRAIN = 2.0  # tinyllm training wall time <= 2x tokenizers'
TARGET_ENCODE = 1.0  # tinyllm single-thread encode throughput >= 1.0x tiktoken's (issue 19)
TARGET_STREAM_MB = 50.0  # encode_iterable over a 100 MB stream: < 50 MB of extra resident memory
ENCODE_CASES = ("encode_ordinary", "encode", "encode_batch", "encode_batch_chunks")


# ----------------------------------------------------------------------------------------------------------- helpers
def timed_pair(fa, fb, repeats: int, fresh: bool = False):
    """Two contenders timed `repeats` times each, interleaved (a, b, a, b, ...) after one warm-up each, so that a burst
    of load from other processes on a shared machine hits both alike. Returns (median_a, out_a, median_b, out_b, best,
    paired) with `best` = (best_a, best_b) and `paired` the median over the rounds of time_b / time_a (each round's own
    ratio: a machine whose speed drifts between rounds moves it less). With `fresh`, `fa` and `fb` make the function to
    time (untimed), anew each round."""
    make = (lambda f: f()) if fresh else (lambda f: f)
    make(fa)(), make(fb)()
    times, out = ([], []), [None, None]
    for _ in range(repeats):
        for k, f in enumerate((fa, fb)):
            f = make(f)
            gc.collect()
            t0 = time.perf_counter()
            out[k] = f()
            times[k].append(time.perf_counter() - t0)
    paired = statistics.median(b / a for a, b in zip(*times))
    return (statistics.median(times[0]), out[0], statistics.median(times[1]), out[1], (min(times[0]), min(times[1])),
            paired)


def proc_status_kb(key: str) -> int:
    "A `kB` field of /proc/self/status (VmRSS, VmHWM, ...)."
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"): return int(line.split()[1])
    raise KeyError(key)


def reset_peak_rss() -> bool:
    "Reset this process's peak RSS (VmHWM) to its current RSS (Linux >= 4.0); False where not possible."
    try:
        with open("/proc/self/clear_refs", "w") as f: f.write("5")
        return True
    except OSError:
        return False


def bytes_to_unicode() -> dict[int, str]:
    "GPT-2's byte -> printable character table, used by byte-level `tokenizers` vocabularies (space is 'Ġ')."
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def split_stories(text: str) -> list[str]:
    "The stories of a TinyStories file, each keeping its trailing `<|endoftext|>` (so they concatenate back to `text`)."
    parts = text.split(EOT)
    out = [p + EOT for p in parts[:-1]]
    if parts[-1]: out.append(parts[-1])
    return out


def train_file(data_dir: Path, quick: bool) -> tuple[Path, str]:
    "The training file to benchmark and a description; --quick uses the first ~1 MB (whole stories) in a temp file."
    src = data_dir / "train.txt"
    if not quick: return src, str(src)
    text = src.read_text(encoding="utf-8")
    stories, out, n = split_stories(text), [], 0
    for s in stories:
        out.append(s)
        n += len(s.encode())
        if n >= 1_000_000: break
    tmp = Path(tempfile.mkdtemp(prefix="tinyllm-bench-")) / "train-1MB.txt"
    tmp.write_text("".join(out), encoding="utf-8")
    return tmp, f"first {len(out):,} stories of {src}"


def hf_train(path: Path, vocab_size: int):
    "Train a `tokenizers` byte-level BPE like tinyllm's: text split on the special token, GPT-2 regex, 256-byte alphabet."
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT], min_frequency=0, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    # `tokenizers` would pre-tokenize "<|endoftext|>" as ordinary text ("<|", "endoftext", "|>") and learn merges from
    # it; tinyllm splits on special tokens first. Feeding the pieces between specials gives both the same input.
    pieces = path.read_text(encoding="utf-8").split(EOT)
    tok.train_from_iterator(pieces, trainer, length=len(pieces))
    return tok


def hf_vocab_bytes(tok) -> set[bytes]:
    "The token byte strings of a byte-level `tokenizers` model (specials excluded)."
    dec = {c: b for b, c in bytes_to_unicode().items()}
    return {bytes(dec[c] for c in t) for t in tok.get_vocab() if t != EOT}


def versions() -> dict:
    import tiktoken
    import tokenizers

    import tinyllm
    return {"python": platform.python_version(), "tinyllm": getattr(tinyllm, "__version__", "?"),
            "tiktoken": tiktoken.__version__, "tokenizers": tokenizers.__version__}


def machine() -> dict:
    cpu, flags = platform.processor() or "", set()
    try:
        with open("/proc/cpuinfo") as f: info = f.read().splitlines()
        cpu = next((ln.split(":", 1)[1].strip() for ln in info if ln.startswith("model name")), cpu)
        flags = set(next((ln.split(":", 1)[1].split() for ln in info if ln.startswith("flags")), []))
    except OSError:
        pass
    try: usable = len(os.sched_getaffinity(0))
    except AttributeError: usable = os.cpu_count()
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_fp16")
    return {"platform": platform.platform(), "cpu": cpu, "flags": " ".join(f for f in wanted if f in flags),
            "cores": os.cpu_count(), "usable_cores": usable, "loadavg_1m": round(os.getloadavg()[0], 2)}


# ------------------------------------------------------------------------------------ subprocess memory measurements
def _child(kind: str, path: str, arg: float) -> dict:
    "Run one memory measurement in this (fresh) process and return its figures."
    from tinyllm import core
    if kind == "stream":  # RSS growth of encode_iterable over `arg` MB of text streamed from `path`
        from tinyllm.bpe import Tokenizer
        tok = Tokenizer.from_gpt2(*core.gpt2_files(GPT2_DIR))
        target = int(arg * MB)
        def lines():
            sent = 0
            while True:
                with open(path, encoding="utf-8") as f:
                    for line in f:
                        yield line
                        sent += len(line.encode())
                        if sent >= target: return
        gc.collect()
        base = proc_status_kb("VmRSS")
        exact = reset_peak_rss()
        n, peak_sampled, t0 = 0, base, time.perf_counter()
        for _ in tok.encode_iterable(lines()):
            n += 1
            if n % 262144 == 0: peak_sampled = max(peak_sampled, proc_status_kb("VmRSS"))
        secs = time.perf_counter() - t0
        peak = proc_status_kb("VmHWM") if exact else max(peak_sampled, proc_status_kb("VmRSS"))
        return {"stream_mb": target / MB, "tokens": n, "seconds": secs, "baseline_rss_mb": base / 1024,
                "peak_rss_mb": peak / 1024, "growth_mb": (peak - base) / 1024, "peak_exact": exact}
    if kind in ("train-tinyllm", "train-hf"):
        gc.collect()
        base = proc_status_kb("VmRSS")
        reset_peak_rss()
        t0 = time.perf_counter()
        if kind == "train-tinyllm":
            from tinyllm.bpe_train import train_bpe
            train_bpe(path, int(arg), special_tokens=[EOT])
        else:
            hf_train(Path(path), int(arg))
        secs = time.perf_counter() - t0
        gc.collect()
        kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # kB on Linux: the largest reaped child
        return {"seconds": secs, "baseline_rss_mb": base / 1024, "peak_rss_mb": proc_status_kb("VmHWM") / 1024,
                "largest_worker_peak_rss_mb": kids / 1024}
    raise ValueError(kind)


def measure_in_subprocess(kind: str, path: Path, arg: float) -> dict:
    "Run `_child(kind, ...)` in a fresh interpreter and parse the JSON line it prints."
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_child", kind, str(path), str(arg)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(REPO)])))
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        return {"error": (r.stderr.strip().splitlines() or ["exit %d" % r.returncode])[-1]}
    return json.loads(r.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------------------- sections
def bench_training(path: Path, vocab_size: int, repeats: int) -> dict:
    from tinyllm.bpe_train import train_bpe
    t_ours, (vocab, merges), t_hf, hf, best, _ = timed_pair(lambda: train_bpe(path, vocab_size, special_tokens=[EOT]),
                                                         lambda: hf_train(path, vocab_size), repeats)
    # The same on one core: tinyllm without worker processes, `tokenizers` with its parallelism switched off (read
    # from the environment at each call). Less sensitive to other load on a shared machine.
    def hf_serial():
        old = os.environ.get("TOKENIZERS_PARALLELISM")
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
        try: return hf_train(path, vocab_size)
        finally:
            if old is None: del os.environ["TOKENIZERS_PARALLELISM"]
            else: os.environ["TOKENIZERS_PARALLELISM"] = old
    t_ours1, (_, merges1), t_hf1, _, best1, _ = timed_pair(
        lambda: train_bpe(path, vocab_size, special_tokens=[EOT], num_processes=1), hf_serial, repeats)
    ours = {b for b in vocab.values() if b != EOT.encode()}
    theirs = hf_vocab_bytes(hf)
    return {"vocab_size": vocab_size, "tinyllm_s": t_ours, "tokenizers_s": t_hf, "ratio": t_ours / t_hf,
            "best_s": best, "tinyllm_1core_s": t_ours1, "tokenizers_1core_s": t_hf1, "ratio_1core": t_ours1 / t_hf1,
            "best_1core_s": best1,
            "same_merges_1core": merges1 == merges,
            "tinyllm_vocab": len(vocab), "tinyllm_merges": len(merges), "tokenizers_vocab": hf.get_vocab_size(),
            "shared_tokens": len(ours & theirs), "tokens_compared": max(len(ours), len(theirs))}


def first_diff(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def bench_encoding(path: Path, repeats: int) -> dict:
    import tiktoken

    from tinyllm import core
    from tinyllm.bpe import Tokenizer
    enc_json, vocab_bpe = core.gpt2_files(GPT2_DIR)
    tk = core.tiktoken_gpt2(enc_json, vocab_bpe)
    text = path.read_text(encoding="utf-8")
    nbytes = len(text.encode("utf-8"))
    stories = split_stories(text)
    workers = os.cpu_count() or 1
    n_chunks = 4 * workers  # consecutive whole stories, about equal in size
    per = -(-len(stories) // n_chunks)
    chunks = ["".join(stories[i:i + per]) for i in range(0, len(stories), per)]
    out = {"bytes": nbytes, "stories": len(stories), "workers": workers, "chunks": len(chunks)}

    t0 = time.perf_counter()
    ours = Tokenizer.from_gpt2(enc_json, vocab_bpe)
    out["tinyllm_load_s"] = time.perf_counter() - t0
    # Cold: the first call on a fresh tokenizer (empty caches) against the first call on a fresh tiktoken Encoding,
    # both made anew (untimed) before each of the interleaved rounds.
    def fresh_ours():
        t = Tokenizer(ours.vocab, ours.merges, ours.special_tokens)
        return lambda: t.encode_ordinary(text)
    def fresh_tiktoken():
        e = tiktoken.Encoding(f"{tk.name}-fresh", pat_str=tk._pat_str, mergeable_ranks=tk._mergeable_ranks,
                              special_tokens=tk._special_tokens)
        return lambda: e.encode_ordinary(text)
    t_ours, ids_cold, t_tk, _, best, paired = timed_pair(fresh_ours, fresh_tiktoken, repeats, fresh=True)
    out["cold_paired_ratio"] = paired
    out["cold_tinyllm_mbs"], out["cold_tiktoken_mbs"] = nbytes / MB / t_ours, nbytes / MB / t_tk
    out["cold_best_tinyllm_mbs"], out["cold_best_tiktoken_mbs"] = nbytes / MB / best[0], nbytes / MB / best[1]

    cases = {
        "encode_ordinary": (lambda: ours.encode_ordinary(text), lambda: tk.encode_ordinary(text)),
        "encode": (lambda: ours.encode(text), lambda: tk.encode(text, allowed_special={EOT})),
        "encode_batch": (lambda: ours.encode_batch(stories, num_workers=workers),
                         lambda: tk.encode_batch(stories, num_threads=workers, allowed_special={EOT})),
        "encode_batch_chunks": (lambda: ours.encode_batch(chunks, num_workers=workers),
                                lambda: tk.encode_batch(chunks, num_threads=workers, allowed_special={EOT})),
    }
    ids = {}
    for name, (f_ours, f_tk) in cases.items():
        t_ours, a, t_tk, b, best, paired = timed_pair(f_ours, f_tk, repeats)
        if name.startswith("encode_batch"):
            a, b = [i for s in a for i in s], [i for s in b for i in s]
        ids[name] = (a, b)
        out[name] = {"tinyllm_mbs": nbytes / MB / t_ours, "tiktoken_mbs": nbytes / MB / t_tk,
                     "ratio": t_tk / t_ours, "paired_ratio": paired, "tokens": len(b), "equal": list(a) == list(b),
                     "best_tinyllm_mbs": nbytes / MB / best[0], "best_tiktoken_mbs": nbytes / MB / best[1]}
        if not out[name]["equal"]:
            i = first_diff(list(a), list(b))
            out[name]["first_difference"] = {"index": i, "tinyllm": list(a[i:i + 8]), "tiktoken": list(b[i:i + 8])}
    out["cold_equal"] = list(ids_cold) == list(ids["encode_ordinary"][1])
    with open(path, encoding="utf-8") as f:  # the streaming API gives the same ids as encoding the whole text
        out["iterable_equals_whole"] = list(ours.encode_iterable(f)) == list(ids["encode"][0])
    out["batch_equals_whole"] = (list(ids["encode_batch"][0]) == list(ids["encode"][0])
                                 and list(ids["encode_batch_chunks"][0]) == list(ids["encode"][0]))
    out["bytes_per_token"] = nbytes / len(ids["encode"][1])
    return out


# -------------------------------------------------------------------------------------------------------- reporting
def verdict(ok: bool) -> str: return "met" if ok else "MISSED"


def render(res: dict) -> str:
    L = []
    m, v, data = res["machine"], res["versions"], res["data"]
    L.append(f"tinyllm BPE benchmark{'  [--quick: NOT the figures the targets refer to]' if res['quick'] else ''}")
    L.append(f"data    : {data['desc']} ({data['bytes'] / MB:.2f} MB, {data['stories']:,} stories)")
    L.append(f"machine : {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable), flags: {m.get('flags') or '-'}, "
             f"load {m['loadavg_1m']}, {m['platform']}")
    L.append("versions: " + ", ".join(f"{k} {x}" for k, x in v.items()))
    L.append(f"timings : wall clock, median of {res['repeats']} after a warm-up (best in brackets), tinyllm and reference "
             "interleaved in one process")
    L.append("")
    row = "{:<42} {:>16} {:>16} {:>7}  {}"
    L.append(row.format("measure", "tinyllm", "reference", "ratio", "target"))
    L.append("-" * 112)
    tr = res.get("training")
    if tr:
        L.append(row.format(f"train BPE, vocab {tr['vocab_size']:,} (s)", f"{tr['tinyllm_s']:.2f} ({tr['best_s'][0]:.2f})",
                            f"{tr['tokenizers_s']:.2f} ({tr['best_s'][1]:.2f})", f"{tr['ratio']:.2f}x",
                            f"<= {TARGET_TRAIN:g}x tokenizers' time: {verdict(tr['ratio'] <= TARGET_TRAIN)}"))
        L.append(row.format("train BPE, one core (s)", f"{tr['tinyllm_1core_s']:.2f}", f"{tr['tokenizers_1core_s']:.2f}",
                            f"{tr['ratio_1core']:.2f}x", "(num_processes=1 / TOKENIZERS_PARALLELISM=false)"))
    en = res.get("encoding")
    if en:
        w = en["workers"]
        cold = en["cold_tinyllm_mbs"] / en["cold_tiktoken_mbs"]
        L.append(row.format("encode_ordinary, fresh tokenizer (MB/s)",
                            f"{en['cold_tinyllm_mbs']:.2f} ({en.get('cold_best_tinyllm_mbs', 0):.2f})",
                            f"{en['cold_tiktoken_mbs']:.2f} ({en.get('cold_best_tiktoken_mbs', 0):.2f})", f"{cold:.2f}x",
                            f">= {TARGET_ENCODE:g}x tiktoken, first call: {verdict(cold >= TARGET_ENCODE)}"
                            + (f" (rounds' own ratios: {en['cold_paired_ratio']:.2f}x)" if "cold_paired_ratio" in en else "")))
        for name, label, tgt in (("encode_ordinary", "encode_ordinary, 1 thread (MB/s)", True),
                                 ("encode", "encode (+specials), 1 thread (MB/s)", True),
                                 ("encode_batch", f"encode_batch, {w} workers, stories (MB/s)", False),
                                 ("encode_batch_chunks", f"encode_batch, {w} workers, {en['chunks']} chunks (MB/s)",
                                  False)):
            e = en[name]
            t = (f">= {TARGET_ENCODE:g}x tiktoken: {verdict(e['ratio'] >= TARGET_ENCODE)}" if tgt
                 else "(no target)")
            L.append(row.format(label, f"{e['tinyllm_mbs']:.2f} ({e['best_tinyllm_mbs']:.2f})",
                                f"{e['tiktoken_mbs']:.2f} ({e['best_tiktoken_mbs']:.2f})", f"{e['ratio']:.2f}x", t))
    mem = res.get("memory", {})
    st = mem.get("stream")
    if st:
        if "error" in st: L.append(row.format("encode_iterable stream: RSS growth", "error", "", "", st["error"]))
        else:
            L.append(row.format(f"encode_iterable {st['stream_mb']:.0f} MB stream: +RSS (MB)", f"{st['growth_mb']:.1f}",
                                "-", "", f"< {TARGET_STREAM_MB:g} MB: {verdict(st['growth_mb'] < TARGET_STREAM_MB)}"))
    for key, label in (("train", "train BPE: peak RSS, main process (MB)"),):
        a, b = mem.get(key + "-tinyllm"), mem.get(key + "-hf")
        if a and b:
            fa = "error" if "error" in a else f"{a['peak_rss_mb']:.0f}"
            fb = "error" if "error" in b else f"{b['peak_rss_mb']:.0f}"
            ratio = "" if "error" in a or "error" in b else f"{a['peak_rss_mb'] / b['peak_rss_mb']:.2f}x"
            L.append(row.format(label, fa, fb, ratio, "(no target)"))
            if "error" not in a and a["largest_worker_peak_rss_mb"] > 0:
                L.append(row.format("train BPE: largest worker peak RSS (MB)", f"{a['largest_worker_peak_rss_mb']:.0f}",
                                    "-", "", "(worker processes; tokenizers uses threads)"))
    L.append("-" * 112)
    L.append("reference = Hugging Face tokenizers (training), tiktoken gpt2 (encoding); ratio = speed of tinyllm "
             "relative to the reference (<1 is slower) except training (tinyllm time / tokenizers time)")
    if tr:
        L.append(f"training : tinyllm {tr['tinyllm_vocab']:,} tokens ({tr['tinyllm_merges']:,} merges), tokenizers "
                 f"{tr['tokenizers_vocab']:,}; {tr['shared_tokens']:,} of {tr['tokens_compared']:,} non-special tokens "
                 "are in both vocabularies (they break frequency ties differently); tinyllm merges identical with "
                 f"1 and all processes: {'yes' if tr['same_merges_1core'] else 'NO'}")
    if en:
        eq = all(en[k]["equal"] for k in ENCODE_CASES) and en["cold_equal"]
        L.append(f"encoding : ids identical to tiktoken gpt2: {'YES' if eq else 'NO'} "
                 f"({en['encode']['tokens']:,} tokens, {en['bytes_per_token']:.2f} bytes/token); encode_batch == "
                 f"encode: {'yes' if en['batch_equals_whole'] else 'NO'}; encode_iterable(file) == encode: "
                 f"{'yes' if en['iterable_equals_whole'] else 'NO'}; from_gpt2 load {en['tinyllm_load_s']:.2f} s")
        for k in ENCODE_CASES:
            if "first_difference" in en[k]: L.append(f"           {k} first difference: {en[k]['first_difference']}")
    if st and "error" not in st:
        L.append(f"memory   : stream of {st['tokens']:,} tokens in {st['seconds']:.1f} s, RSS {st['baseline_rss_mb']:.0f}"
                 f" -> peak {st['peak_rss_mb']:.0f} MB ({'VmHWM after reset' if st['peak_exact'] else 'sampled'})")
    a, b = mem.get("train-tinyllm"), mem.get("train-hf")
    if a and b and "error" not in a and "error" not in b:
        L.append(f"memory   : training peaks include the interpreter and imports (RSS before training: tinyllm "
                 f"{a['baseline_rss_mb']:.0f} MB, tokenizers {b['baseline_rss_mb']:.0f} MB)")
    return "\n".join(L)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", metavar="DIR", help="folder holding TinyStories' train.txt "
                   "(default: $TINYLLM_DATA, else ../shared/data/tinystories)")
    p.add_argument("--quick", action="store_true", help="smoke run: first ~1 MB of train.txt, vocab 2,000, "
                   "one timed run, 10 MB stream (figures are not comparable with the targets)")
    p.add_argument("--repeats", type=int, help="timed runs per measurement, median reported (default 5; 1 with --quick)")
    p.add_argument("--vocab-size", type=int, help="training vocabulary size (default 10,000; 2,000 with --quick)")
    p.add_argument("--stream-mb", type=float, help="size of the encode_iterable stream in MB (default 100)")
    p.add_argument("--skip", action="append", default=[], choices=["train", "encode", "memory"],
                   help="leave out a section (repeatable)")
    p.add_argument("--json", metavar="OUT", help="also write every figure to this JSON file")
    p.add_argument("--_child", nargs=3, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a._child:
        print(json.dumps(_child(a._child[0], a._child[1], float(a._child[2]))))
        return 0

    from tinyllm import core
    try:
        data_dir = Path(a.data) if a.data else core.tinystories_dir()
        if not (data_dir / "train.txt").is_file():
            raise core.TinyLLMError(f"{data_dir / 'train.txt'} does not exist; pass --data DIR with the folder "
                                    "holding TinyStories' train.txt, or set TINYLLM_DATA.")
    except core.TinyLLMError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    repeats = a.repeats or (1 if a.quick else 5)
    vocab_size = a.vocab_size or (2000 if a.quick else 10_000)
    stream_mb = a.stream_mb or (10.0 if a.quick else 100.0)
    path, desc = train_file(data_dir, a.quick)
    try: return run(a, path, desc, repeats, vocab_size, stream_mb)
    finally:
        if a.quick: shutil.rmtree(path.parent, ignore_errors=True)  # the temp copy of the first ~1 MB


def run(a, path: Path, desc: str, repeats: int, vocab_size: int, stream_mb: float) -> int:
    "Measure, print the table, write the JSON; exit status 1 if any id list differs from tiktoken's."
    text = path.read_text(encoding="utf-8")
    res = {"quick": a.quick, "repeats": repeats, "machine": machine(), "versions": versions(),
           "data": {"path": str(path), "desc": desc, "bytes": len(text.encode()), "stories": text.count(EOT)},
           "targets": {"train_ratio_max": TARGET_TRAIN, "encode_ratio_min": TARGET_ENCODE,
                       "stream_growth_mb_max": TARGET_STREAM_MB}}
    del text
    if "train" not in a.skip: res["training"] = bench_training(path, vocab_size, repeats)
    if "encode" not in a.skip: res["encoding"] = bench_encoding(path, repeats)
    if "memory" not in a.skip:
        res["memory"] = {"stream": measure_in_subprocess("stream", path, stream_mb),
                         "train-tinyllm": measure_in_subprocess("train-tinyllm", path, vocab_size),
                         "train-hf": measure_in_subprocess("train-hf", path, vocab_size)}
    print(render(res))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1) + "\n")
        print(f"figures written to {a.json}")
    en = res.get("encoding")
    ok = en is None or (all(en[k]["equal"] for k in ENCODE_CASES)
                        and en["cold_equal"] and en["batch_equals_whole"] and en["iterable_equals_whole"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
