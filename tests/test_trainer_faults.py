"""The trainer under faults: SIGKILL at random moments (also in the middle of a checkpoint write), damaged checkpoints,
a full disk, an unwritable output folder, inputs that do not belong to the run being resumed, and NaN/inf."""
import errno
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tinyllm import checkpoint
from tinyllm.bpe import Tokenizer
from tinyllm.checkpoint import list_checkpoints, load_weights, verify_checkpoint
from tinyllm.cli import main as cli_main
from tinyllm.core import TinyLLMError
from tinyllm.data import RandomBatches
from tinyllm.model import GPT, GPTConfig
from tinyllm.prepare import prepare
from tinyllm.trainer import NonFiniteError, Trainer, TrainConfig, read_metrics
from helpers import learnable_stream

REPO = Path(__file__).resolve().parent.parent
EOT = "<|endoftext|>"

TOKENS = learnable_stream()


pytestmark = pytest.mark.usefixtures("one_thread")

def cfg(**kw):
    base = dict(batch_size=4, max_steps=8, lr=1e-3, min_lr=1e-4, warmup_steps=2, eval_interval=4, eval_steps=2,
                checkpoint_interval=2, log_interval=4, device="cpu", dtype="float32", compile=False, progress=False,
                samples=0, peak_flops=1e12)
    return TrainConfig(**{**base, **kw})


def make_trainer(out_dir=None, *, model=None, seed=0, print_fn=None, **kw):
    c = cfg(**kw)
    torch.manual_seed(seed)
    model = model or GPT(GPTConfig.from_preset("tiny"))
    val = RandomBatches(TOKENS[-3000:], 32, c.batch_size, seed=1)
    return Trainer(model, RandomBatches(TOKENS, 32, c.batch_size, seed=seed), c,
                   val_batches=[next(val) for _ in range(c.eval_steps)], out_dir=out_dir,
                   print_fn=print_fn or (lambda s: None))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    "An uninterrupted run of `make_trainer()`'s defaults: what every interrupted run must end up equal to."
    out = tmp_path_factory.mktemp("reference")
    make_trainer(out).fit()
    return out

def train_records(out_dir):
    return [(r["step"], r["loss"]) for r in read_metrics(Path(out_dir) / "metrics.jsonl") if "loss" in r]


def eval_records(out_dir):
    return [(r["step"], r["val_loss"]) for r in read_metrics(Path(out_dir) / "metrics.jsonl") if "val_loss" in r]


def assert_same_weights(a, b):
    a, b = load_weights(a), load_weights(b)
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"weights differ: {different[:5]}"


def temp_dirs(root):
    root = Path(root)
    return {p.name for p in root.glob(".step-*")} if root.is_dir() else set()


def snapshot(d) -> dict:
    "Every file under `d` with its bytes and mtime, and every symlink with its target: to prove nothing changed."
    snap = {}
    for dirpath, dirnames, filenames in os.walk(d):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(d))
            if p.is_symlink(): snap[rel] = ("->", os.readlink(p))
            elif p.is_file(): snap[rel] = (p.read_bytes(), p.stat().st_mtime_ns)
    return snap


# ---- 1. SIGKILL at random moments -------------------------------------------------------------------------------------
MAX_STEPS = 40

CHILD = textwrap.dedent(f"""
    import os, sys, time
    import numpy as np
    import torch
    from tinyllm import checkpoint
    from tinyllm.data import RandomBatches
    from tinyllm.model import GPT, GPTConfig
    from tinyllm.trainer import Trainer, TrainConfig

    out, resume = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else None)
    if os.environ.get("SLOW_FSYNC"):                 # a slow disk from checkpoint step N on: its temporary folder lives
        delay, from_step = map(float, os.environ["SLOW_FSYNC"].split(":"))    # a while (the folder: .step-NNNNNNN.*.tmp)
        fsync = checkpoint._fsync_file
        def slow_fsync(path):
            if int(path.parent.name[6:13]) >= from_step: time.sleep(delay)
            fsync(path)
        checkpoint._fsync_file = slow_fsync
    pace, train_step = float(os.environ.get("STEP_DELAY", "0")), Trainer.train_step
    def paced_step(self):                            # slower steps, so that a kill can land anywhere in the run
        time.sleep(pace)
        return train_step(self)
    Trainer.train_step = paced_step

    rng = np.random.default_rng(0)
    tokens = np.where(rng.random(20_000) < 0.1, rng.integers(0, 256, 20_000), np.arange(20_000) * 7 % 256).astype(np.uint16)
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_preset("tiny", dropout=0.1))      # dropout: the RNG state must survive the kill too
    cfg = TrainConfig(batch_size=4, max_steps={MAX_STEPS}, lr=1e-3, min_lr=1e-4, warmup_steps=4, eval_interval=10,
                      eval_steps=2, checkpoint_interval=2, keep_checkpoints=2, log_interval=10, device="cpu",
                      dtype="float32", compile=False, progress=False, samples=0, peak_flops=1e12)
    val = RandomBatches(tokens[-3000:], 32, 4, seed=1)
    trainer = Trainer(model, RandomBatches(tokens, 32, 4, seed=0), cfg, val_batches=[next(val) for _ in range(2)],
                      out_dir=out)
    trainer.fit(resume=resume)
    print("finished", flush=True)
""")


def _max_step(out: Path) -> int:
    path = out / "metrics.jsonl"
    if not path.is_file(): return 0
    try: return max((r.get("step", 0) for r in read_metrics(path) if "loss" in r), default=0)
    except FileNotFoundError: return 0            # replaced atomically (on resume) just as we read it


def _wait_for(cond, proc, timeout=90.0):
    t0 = time.monotonic()
    while not cond():
        if proc.poll() is not None: return False
        if time.monotonic() - t0 > timeout: raise AssertionError("the training process made no progress")
        time.sleep(0.002)
    return True


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_is_bit_identical(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    ref_log = open(tmp_path / "ref.log", "w")
    ref = subprocess.Popen([sys.executable, str(script), str(tmp_path / "ref")], env=env, stdout=ref_log,
                           stderr=subprocess.STDOUT)
    out, ckpts = tmp_path / "run", tmp_path / "run" / "checkpoints"
    rng = random.Random(1234)
    plan = ["step", "checkpoint", "step", "checkpoint", "step", None]   # None: run to the end
    kills = []
    try:
        for i, kind in enumerate(plan):
            logged, before = _max_step(out), temp_dirs(ckpts)
            target = min(max(logged + rng.randint(2, 9), 3), MAX_STEPS - 1)
            child_env = {**env, "STEP_DELAY": "0.02", **({"SLOW_FSYNC": f"2:{target}"} if kind == "checkpoint" else {})}
            log = tmp_path / f"launch-{i}.log"
            with open(log, "w") as f:
                args = [sys.executable, str(script), str(out)] + (["last"] if i else [])
                proc = subprocess.Popen(args, env=child_env, stdout=f, stderr=subprocess.STDOUT)
                try:
                    if kind == "step":                                   # after a random number of new steps
                        alive = _wait_for(lambda t=target: _max_step(out) >= t, proc)
                        time.sleep(rng.uniform(0, 0.03))
                    elif kind == "checkpoint":                           # while checkpoint >= target is written
                        writing = lambda b=before, t=target: [n for n in temp_dirs(ckpts) - b if int(n[6:13]) >= t]
                        alive = _wait_for(writing, proc)
                        time.sleep(rng.uniform(0, 1.0))                  # its two fsyncs take 4 s
                    if kind is not None:
                        assert alive, f"launch {i} ended before the kill:\n{log.read_text()}"
                        proc.send_signal(signal.SIGKILL)
                    rc = proc.wait(timeout=120)
                finally:
                    if proc.poll() is None: proc.kill(); proc.wait()
            if kind is None:
                assert rc == 0, f"the last launch failed:\n{log.read_text()}"
            else:
                assert rc == -signal.SIGKILL, log.read_text()
                left = temp_dirs(ckpts) - before
                if kind == "checkpoint": assert left, "the kill did not land during the checkpoint write"
                kills.append((kind, _max_step(out), sorted(left)))
        assert ref.wait(timeout=120) == 0, (tmp_path / "ref.log").read_text()
    finally:
        if ref.poll() is None: ref.kill(); ref.wait()
        ref_log.close()
    assert len(kills) >= 3 and sum(k == "checkpoint" for k, _, _ in kills) >= 2, kills
    assert "finished" in (tmp_path / f"launch-{len(plan) - 1}.log").read_text()
    # the same run as if nothing had happened: weights bit for bit, every logged loss, every evaluation
    assert (ckpts / "last").resolve().name == f"step-{MAX_STEPS:07d}"
    assert_same_weights(tmp_path / "ref/checkpoints/last", ckpts / "last")
    assert train_records(out) == train_records(tmp_path / "ref")
    assert [s for s, _ in train_records(out)] == list(range(1, MAX_STEPS + 1))
    assert eval_records(out) == eval_records(tmp_path / "ref")
    assert not temp_dirs(ckpts), "a half-written checkpoint folder was left behind"
    for p in list_checkpoints(ckpts): verify_checkpoint(p)


# ---- 2. a damaged checkpoint --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("victim, damage", [("model.safetensors", "corrupt"), ("state.pt", "truncate"),
                                            ("model.safetensors", "delete")])
def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, reference, victim, damage):
    make_trainer(tmp_path / "run").fit(stop_after=6)
    ckpts = tmp_path / "run/checkpoints"
    newest = ckpts / "step-0000006"
    assert (ckpts / "last").resolve() == newest.resolve()
    f = newest / victim
    if damage == "corrupt":
        data = bytearray(f.read_bytes())
        i = len(data) // 2
        data[i:i + 16] = bytes(b ^ 0xFF for b in data[i:i + 16])
        f.write_bytes(bytes(data))
    elif damage == "truncate":
        with open(f, "r+b") as fh: fh.truncate(f.stat().st_size // 2)
    else:
        f.unlink()
    lines = []
    make_trainer(tmp_path / "run", seed=99, print_fn=lines.append).fit(resume="last")
    warnings = [s for s in lines if s.startswith("warning")]
    assert len(warnings) == 1 and str(newest) in warnings[0] and victim in warnings[0], lines
    assert any(s.startswith("resumed from") and s.split()[2].endswith("step-0000004") for s in lines), lines
    assert_same_weights(reference / "checkpoints/last", ckpts / "last")
    assert train_records(tmp_path / "run") == train_records(reference)
    verify_checkpoint(newest)                        # written again by the resumed run


def test_a_named_damaged_checkpoint_is_refused(tmp_path):
    make_trainer(tmp_path).fit(stop_after=4)
    ckpt = tmp_path / "checkpoints/step-0000004"
    with open(ckpt / "state.pt", "r+b") as fh: fh.truncate(10)
    with pytest.raises(TinyLLMError, match="state.pt does not match the SHA-256"):
        make_trainer(tmp_path).fit(resume=str(ckpt))


# ---- 3. a full disk -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("writer", ["safetensors", "torch.save"])
def test_full_disk_while_checkpointing(tmp_path, reference, monkeypatch, writer):
    import safetensors.torch
    calls = []
    module, name = (safetensors.torch, "save_file") if writer == "safetensors" else (checkpoint.torch, "save")
    real = getattr(module, name)
    def full_disk(obj, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 2:                           # the second checkpoint: the disk fills up half way
            Path(path).write_bytes(b"\0" * 100)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(obj, path, *args, **kwargs)
    monkeypatch.setattr(module, name, full_disk)
    out, ckpts = tmp_path / "run", tmp_path / "run/checkpoints"
    with pytest.raises(TinyLLMError) as e:
        make_trainer(out).fit()
    msg = str(e.value)
    assert str(ckpts / "step-0000004") in msg and "No space left on device" in msg
    assert "free some disk space" in msg.lower()
    assert [p.name for p in list_checkpoints(ckpts)] == ["step-0000002"]
    verify_checkpoint(ckpts / "step-0000002")
    assert (ckpts / "last").resolve().name == "step-0000002" and not temp_dirs(ckpts)
    # space freed: the run resumes and ends as if the disk had never filled up
    monkeypatch.undo()
    make_trainer(out).fit(resume="last")
    assert_same_weights(reference / "checkpoints/last", ckpts / "last")
    assert train_records(out) == train_records(reference)


# ---- 4. an output folder that cannot be written -------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["under-a-file", "is-a-file"])
def test_unwritable_out_dir_is_a_clear_error(tmp_path, where):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    out = blocker / "run" if where == "under-a-file" else blocker
    with pytest.raises(TinyLLMError) as e:
        make_trainer(out).fit()
    assert f"cannot write to the output folder {out}" in str(e.value) and "writable out_dir" in str(e.value)
    assert blocker.read_text() == "not a folder"


# ---- 5. inputs that do not belong to the run (through the CLI) ----------------------------------------------------------
WORDS = ["the cat dog sat on a mat and ran to big red ball sun tree happy sad Tom Sue Lily park".split(),
         "once upon time girl boy saw bird fish blue green went home mom dad said yes no play fun day".split()]


def _corpus(d: Path, words, seed):
    rng = random.Random(seed)
    story = lambda: " ".join(rng.choice(words) for _ in range(rng.randint(20, 60))) + "."
    d.mkdir(parents=True)
    (d / "train.txt").write_text("".join(f"{story()}\n{EOT}\n" for _ in range(300)))
    (d / "valid.txt").write_text("".join(f"{story()}\n{EOT}\n" for _ in range(40)))
    return d


def _toml(v):
    return json.dumps(str(v)) if isinstance(v, Path) else json.dumps(v)


def write_run_config(path, *, out_dir, tokenizer, tokens, **train):
    model = dict(vocab_size=300, block_size=32, n_layer=1, n_head=2, n_embd=32)
    train = {**dict(batch_size=4, max_steps=4, lr=1e-3, min_lr=1e-4, warmup_steps=1, eval_interval=4, eval_steps=1,
                    samples=0, log_interval=2, checkpoint_interval=2, device="cpu", dtype="float32", compile=False,
                    progress=False, peak_flops=1e12), **train}
    lines = [f"out_dir = {_toml(out_dir)}", "seed = 1", "[model]", *(f"{k} = {_toml(v)}" for k, v in model.items()),
             "[data]", f"tokenizer = {_toml(tokenizer)}", f"tokens = {_toml(tokens)}",
             "[train]", *(f"{k} = {_toml(v)}" for k, v in train.items())]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    "Two tokenizers, token files of two corpora, a run config and a finished 4-step run made by `tinyllm train`."
    d = tmp_path_factory.mktemp("project")
    text1, text2 = _corpus(d / "text1", WORDS[0], 0), _corpus(d / "text2", WORDS[1], 1)
    toks = {}
    for name, text in (("tok-a", text1), ("tok-b", text2)):
        toks[name] = Tokenizer.train(text / "train.txt", vocab_size=300, special_tokens=[EOT], num_processes=1)
        toks[name].save(d / name)
    assert toks["tok-a"].vocab_size == toks["tok-b"].vocab_size == 300
    assert toks["tok-a"].fingerprint != toks["tok-b"].fingerprint
    for out, text, tok in (("tokens-a", text1, "tok-a"), ("tokens-b", text1, "tok-b"), ("tokens-c", text2, "tok-a")):
        prepare(text, d / tok, d / out, progress=False, workers=1)
    config = write_run_config(d / "run.toml", out_dir=d / "base", tokenizer=d / "tok-a", tokens=d / "tokens-a")
    assert cli_main(["train", str(config)]) == 0
    assert [p.name for p in list_checkpoints(d / "base/checkpoints")] == ["step-0000002", "step-0000004"]
    return SimpleNamespace(dir=d, config=config, fp_a=toks["tok-a"].fingerprint, fp_b=toks["tok-b"].fingerprint)


def run_cli(capsys, *argv):
    capsys.readouterr()
    status = cli_main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def assert_one_error_line(status, err, *needles):
    assert status == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    for n in needles: assert n in err, f"{n!r} not in {err!r}"


def _set_world_size(run: Path):
    meta_path = run / "checkpoints/last/meta.json"    # not covered by the checksums: a 2-process run's checkpoint
    meta = json.loads(meta_path.read_text())
    meta["identity"]["world_size"] = 2
    meta_path.write_text(json.dumps(meta, indent=2))


CASES = {
    "other-model": (["model.n_layer=2"], True, None, ["model.n_layer: checkpoint 1, this run 2", "Nothing was changed"]),
    "other-tokenizer": (["data.tokenizer='{tok_b}'", "data.tokens='{tokens_b}'"], True, None,
                        ["tokenizer: checkpoint '{fp_a}', this run '{fp_b}'", "another out_dir"]),
    "tokenizer-without-its-tokens": (["data.tokenizer='{tok_b}'"], True, None,
                                     ["was tokenized with the tokenizer of fingerprint {fp_a}", "tinyllm data prepare"]),
    "other-train-data": (["data.tokens='{tokens_c}'"], True, None, ["train_tokens: checkpoint", "Nothing was changed"]),
    "other-world-size": ([], True, _set_world_size, ["world_size: checkpoint 2, this run 1",
                                                     "resume with the same number of processes"]),
    "already-a-run": ([], False, None, ["already holds a run", "--resume last", "nothing was changed"]),
    "wrong-vocab-size": (["model.vocab_size=512"], False, None, ["has 300 ids", "model.vocab_size=300"]),
    "missing-tokens": (["data.tokens='{nowhere}'"], False, None, ["nowhere/train.json does not exist",
                                                                "tinyllm data prepare"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_inputs_that_do_not_belong_to_the_run_are_refused(project, tmp_path, capsys, case):
    overrides, resume, prep, needles = CASES[case]
    run = tmp_path / "run"
    shutil.copytree(project.dir / "base", run, symlinks=True)
    if prep: prep(run)
    subst = lambda s: s.format(tok_b=project.dir / "tok-b", tokens_b=project.dir / "tokens-b",
                               tokens_c=project.dir / "tokens-c", nowhere=tmp_path / "nowhere",
                               fp_a=project.fp_a, fp_b=project.fp_b)
    before = snapshot(run)
    status, out, err = run_cli(capsys, "train", project.config, f"out_dir={str(run)!r}",
                               *map(subst, overrides),
                               *(["--resume"] if resume else []))
    assert_one_error_line(status, err, *map(subst, needles))
    assert snapshot(run) == before, "a refused run changed what was saved"


@pytest.mark.slow
def test_resume_with_nothing_to_resume(project, tmp_path, capsys):
    status, _, err = run_cli(capsys, "train", project.config, f"out_dir={str(tmp_path / 'fresh')!r}", "--resume")
    assert_one_error_line(status, err, "nothing to resume", "without --resume")
    assert not list_checkpoints(tmp_path / "fresh/checkpoints")
    status, _, err = run_cli(capsys, "train", project.config, "--resume", tmp_path / "no-such-checkpoint")
    assert_one_error_line(status, err, "no such checkpoint folder", str(tmp_path / "no-such-checkpoint"))


@pytest.mark.slow
def test_cli_unwritable_out_dir(project, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    status, _, err = run_cli(capsys, "train", project.config, f"out_dir={str(blocker / 'run')!r}")
    assert_one_error_line(status, err, f"cannot write to the output folder {blocker / 'run'}", "writable out_dir")


@pytest.mark.slow
def test_cli_resume_continues_a_finished_run_in_full(project, tmp_path, capsys):
    "The positive control of the refusals above: the same copy with the same config resumes and trains on."
    run = tmp_path / "run"
    shutil.copytree(project.dir / "base", run, symlinks=True)
    status, out, err = run_cli(capsys, "train", project.config, f"out_dir={str(run)!r}", "train.max_steps=6",
                               "--resume")
    assert status == 0, err
    assert "resumed from" in out and [s for s, _ in train_records(run)] == list(range(1, 7))


# ---- 6. NaN and inf --------------------------------------------------------------------------------------------------
POISONED = "transformer.h.1.mlp.c_fc"


def poison(trainer, steps, name=POISONED):
    "Make module `name` output inf during the training forward passes of the given steps (1-based)."
    def hook(mod, args, out):
        if mod.training and trainer.step + 1 in steps: return torch.full_like(out, math.inf)
    trainer.model.get_submodule(name).register_forward_hook(hook)


def all_finite(ckpt) -> bool:
    return all(torch.isfinite(t).all() for t in load_weights(ckpt).values())


def test_nonfinite_halt_names_the_module_and_keeps_the_last_good_checkpoint(tmp_path):
    t = make_trainer(tmp_path)
    poison(t, {5})
    with pytest.raises(NonFiniteError) as e:
        t.fit()
    msg = str(e.value)
    assert "at step 5" in msg and f"the output of {POISONED} (Linear) is not finite although its input is" in msg
    assert str(tmp_path / "checkpoints/step-0000004") in msg
    ckpts = tmp_path / "checkpoints"
    assert [p.name for p in list_checkpoints(ckpts)] == ["step-0000002", "step-0000004"]
    assert (ckpts / "last").resolve().name == "step-0000004"
    for p in list_checkpoints(ckpts):
        verify_checkpoint(p)
        assert all_finite(p)
    assert all(torch.isfinite(p).all() for p in t.model.parameters())     # the bad step changed nothing
    assert [s for s, _ in train_records(tmp_path)] == [1, 2, 3, 4]


def test_nonfinite_weights_are_never_checkpointed(tmp_path):
    t = make_trainer(tmp_path, max_steps=4)
    t.fit()
    before = snapshot(tmp_path)
    with torch.no_grad(): t.model.transformer.h[0].mlp.c_fc.weight[0, 0] = math.nan
    t.step += 1
    with pytest.raises(NonFiniteError, match=r"parameters transformer\.h\.0\.mlp\.c_fc\.weight are not finite"):
        t.save()
    assert snapshot(tmp_path) == before


def test_nonfinite_skip_counts_logs_and_continues(tmp_path):
    lines = []
    t = make_trainer(tmp_path, nonfinite="skip", print_fn=lines.append)
    poison(t, {3})
    t.fit()
    recs = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "lr" in r]
    assert [r["step"] for r in recs] == list(range(1, 9))
    assert [r["step"] for r in recs if r.get("skipped_step")] == [3]
    assert recs[2]["skipped_step"] is True and recs[2]["loss"] is None and recs[2]["skipped"] == 1
    assert all(r["skipped"] == (r["step"] >= 3) for r in recs)
    assert any("step 3: non-finite loss; step skipped" in s for s in lines), lines
    assert (tmp_path / "checkpoints/last").resolve().name == "step-0000008" and all_finite(tmp_path / "checkpoints/last")


def test_nonfinite_skip_halts_after_max_skipped_in_a_row(tmp_path):
    t = make_trainer(tmp_path, nonfinite="skip", max_skipped=2)
    poison(t, {4, 5, 6})
    with pytest.raises(NonFiniteError, match=f"at step 6 .*{POISONED}"):
        t.fit()
    recs = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "lr" in r]
    assert [r["step"] for r in recs if r.get("skipped_step")] == [4, 5] and recs[-1]["step"] == 5
    assert (tmp_path / "checkpoints/last").resolve().name == "step-0000004"


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_nonfinite_skip_counts_only_consecutive_steps(tmp_path, dtype):
    "max_skipped bounds skips in a row: a good step in between starts the count again (with fp16 loss scaling too)."
    t = make_trainer(tmp_path, nonfinite="skip", max_skipped=2, dtype=dtype)
    poison(t, {2, 3, 5, 6})
    t.fit()
    recs = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "lr" in r]
    assert [r["step"] for r in recs if r.get("skipped_step")] == [2, 3, 5, 6] and recs[-1]["step"] == 8
