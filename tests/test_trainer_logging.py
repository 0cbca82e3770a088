"""What a run logs, read back from where it lands: metrics.jsonl, TensorBoard event files, an offline W&B run, and the
console (log lines, or a tqdm bar on a terminal)."""
import io
import json
import math
import re
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tinyllm.data import RandomBatches
from tinyllm.model import GPT, GPTConfig
from tinyllm.trainer import Trainer, TrainConfig, read_metrics
from helpers import learnable_stream

TOKENS = learnable_stream()
TRAIN_KEYS = {"step", "loss", "lr", "grad_norm", "tokens_per_sec", "memory_mb", "skipped"}


pytestmark = pytest.mark.usefixtures("one_thread")

def make_trainer(out_dir=None, *, seed=0, print_fn=None, bytes_per_token=2.5, **kw):
    base = dict(batch_size=4, max_steps=8, lr=1e-3, min_lr=1e-4, warmup_steps=2, eval_interval=4, eval_steps=2,
                checkpoint_interval=4, log_interval=4, device="cpu", dtype="float32", compile=False, progress=False,
                samples=0, peak_flops=1e12)
    c = TrainConfig(**{**base, **kw})
    torch.manual_seed(seed)
    val = RandomBatches(TOKENS[-3000:], 32, c.batch_size, seed=1)
    return Trainer(GPT(GPTConfig.from_preset("tiny")), RandomBatches(TOKENS, 32, c.batch_size, seed=seed), c,
                   val_batches=[next(val) for _ in range(c.eval_steps)], out_dir=out_dir,
                   bytes_per_token=bytes_per_token, print_fn=print_fn or (lambda s: None))


def split(out_dir):
    recs = read_metrics(Path(out_dir) / "metrics.jsonl")
    return [r for r in recs if "loss" in r], [r for r in recs if "val_loss" in r]


# ---- 7. metrics.jsonl -----------------------------------------------------------------------------------------------
def test_jsonl_has_every_field_of_every_record(tmp_path):
    make_trainer(tmp_path).fit()
    train, evals = split(tmp_path)
    assert [r["step"] for r in train] == list(range(1, 9)) and [r["step"] for r in evals] == [4, 8]
    for r in train:
        assert TRAIN_KEYS <= r.keys(), r
        assert all(isinstance(r[k], (int, float)) and math.isfinite(r[k]) for k in TRAIN_KEYS), r
        assert r["tokens_per_sec"] > 0 and r["grad_norm"] > 0 and r["tokens"] == r["step"] * 4 * 32
        assert r["memory_mb"] > 10            # the peak resident set of a process that has imported torch
    assert train[0]["lr"] == pytest.approx(1e-3 / 2) and train[1]["lr"] == pytest.approx(1e-3)     # warmup, then peak
    for r in evals:
        assert {"step", "val_loss", "val_ppl", "val_bpb"} <= r.keys(), r
        assert r["val_ppl"] == pytest.approx(math.exp(r["val_loss"]))
        assert r["val_bpb"] == pytest.approx(r["val_loss"] / math.log(2) / 2.5)
    without = make_trainer(tmp_path / "no-bpt", bytes_per_token=None)
    without.fit()
    assert all("val_bpb" not in r for r in split(tmp_path / "no-bpt")[1])


def test_resumed_run_does_not_duplicate_steps(tmp_path):
    t = make_trainer(tmp_path)
    step = t.train_step
    def crash_after_6():
        if t.step == 6: raise KeyboardInterrupt     # killed after step 6 was logged; the checkpoint is step 4
        return step()
    t.train_step = crash_after_6
    with pytest.raises(KeyboardInterrupt):
        t.fit()
    first, _ = split(tmp_path)
    assert [r["step"] for r in first] == list(range(1, 7))
    with open(tmp_path / "metrics.jsonl", "a") as f: f.write('{"step": 7, "loss": 4.1')    # a line cut short
    make_trainer(tmp_path, seed=5).fit(resume="last")
    train, evals = split(tmp_path)
    assert [r["step"] for r in train] == list(range(1, 9)) and [r["step"] for r in evals] == [4, 8]
    assert [r["loss"] for r in train[:6]] == [r["loss"] for r in first]              # steps 5, 6 again, identically
    make_trainer(tmp_path / "straight").fit()
    assert [r["loss"] for r in train] == [r["loss"] for r in split(tmp_path / "straight")[0]]


# ---- 8. TensorBoard -------------------------------------------------------------------------------------------------
def test_tensorboard_scalars_match_the_jsonl(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    make_trainer(tmp_path, tensorboard=True).fit()
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    acc = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    assert {"loss", "lr", "grad_norm", "tokens_per_sec", "memory_mb", "val_loss", "val_ppl", "val_bpb"} <= set(acc.Tags()["scalars"])
    train, evals = split(tmp_path)
    for tag, recs in (("loss", train), ("lr", train), ("grad_norm", train), ("val_loss", evals), ("val_bpb", evals)):
        logged = [(e.step, e.value) for e in acc.Scalars(tag)]
        assert logged == [(r["step"], float(np.float32(r[tag]))) for r in recs], tag     # float32 in event files
    from tinyllm.report import tensorboard_scalars                # chapter 5's reader gives the same
    assert tensorboard_scalars(tmp_path / "tensorboard", "loss") == [(r["step"], float(np.float32(r["loss"]))) for r in train]


# ---- 9. Weights & Biases, offline -----------------------------------------------------------------------------------
def wandb_records(path: Path):
    """The records of a W&B transaction log (`run-*.wandb`): a 7-byte header (':W&B', magic, version), then LevelDB log
    blocks of 32 KiB whose chunks (checksum u32, length u16, type u8: full/first/middle/last) carry protobuf Records."""
    from wandb.proto import wandb_internal_pb2 as pb
    data = path.read_bytes()
    assert data[:4] == b":W&B", data[:7]
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:                  # too little room for a chunk header: the block's zero trailer
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 0: continue                       # zero padding
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(pending)
            yield rec


@pytest.mark.slow
def test_wandb_offline_run_holds_the_logged_values(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    for k in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DIR", "WANDB_RUN_ID", "WANDB_PROJECT", "WANDB_ENTITY"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    for k in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(k, str(tmp_path / "wandb-home" / k.lower()))
    out = tmp_path / "run"
    try:
        make_trainer(out, wandb=True).fit()
    finally:
        wandb.teardown()
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, list((out / "wandb").iterdir()) if (out / "wandb").exists() else "no wandb folder"
    train, evals = split(out)
    # the history, read back from the run's transaction log
    logs = list(runs[0].glob("run-*.wandb"))
    assert len(logs) == 1
    history, config, summary = {}, None, {}
    key = lambda it: it.key or "/".join(it.nested_key)
    for rec in wandb_records(logs[0]):
        kind = rec.WhichOneof("record_type")
        if kind == "history":
            items = {key(it): json.loads(it.value_json) for it in rec.history.item}
            history[items["_step"]] = items
        elif kind == "run":
            config = {it.key: json.loads(it.value_json) for it in rec.run.config.update}
        elif kind == "summary":
            summary.update({key(it): json.loads(it.value_json) for it in rec.summary.update})
    assert sorted(history) == list(range(1, 9)), sorted(history)
    for r in train:
        h = history[r["step"]]
        assert h["loss"] == r["loss"] and h["lr"] == r["lr"] and h["grad_norm"] == r["grad_norm"], (h, r)
    for r in evals:
        assert history[r["step"]]["val_loss"] == r["val_loss"] and history[r["step"]]["val_bpb"] == r["val_bpb"]
    assert config is not None and config["train"]["max_steps"] == 8 and config["train"]["wandb"] is True
    # the summary (what the W&B run page shows): the last value of each key
    assert summary["loss"] == train[-1]["loss"] and summary["val_loss"] == evals[-1]["val_loss"], summary
    from tinyllm.report import wandb_history                      # chapter 5's reader, through wandb's own CLI
    read = {r["step"]: r for r in wandb_history(runs[0])}
    assert sorted(read) == list(range(1, 9)) and all(read[r["step"]]["loss"] == r["loss"] for r in train)
    assert all(read[r["step"]]["val_loss"] == r["val_loss"] for r in evals)
    summary_file = runs[0] / "files" / "wandb-summary.json"      # written offline by some wandb versions only
    if summary_file.is_file():
        assert json.loads(summary_file.read_text())["loss"] == train[-1]["loss"]


# ---- 10. the console: log lines, or a progress bar ------------------------------------------------------------------
def test_no_bar_when_stderr_is_not_a_terminal(tmp_path, capsys):
    assert not sys.stderr.isatty()
    make_trainer(tmp_path, progress="auto", print_fn=print).fit()
    out, err = capsys.readouterr()
    assert re.search(r"^step +4/8 \| loss \d+\.\d{4} \| lr [\d.e+-]+ \| grad norm [\d.]+ \| [\d,]+ tok/s", out, re.M), out
    assert re.search(r"^step +8/8 \| loss ", out, re.M) and "eval @ step 8: val loss" in out
    assert "step/s" not in err + out and "%|" not in err + out and "\r" not in err + out, err


def test_bar_when_asked_or_on_a_terminal(tmp_path, capsys, monkeypatch):
    make_trainer(tmp_path / "on", progress=True, print_fn=print).fit()
    out, err = capsys.readouterr()
    assert "8/8" in err and "%|" in err and "step/s" in err, err
    assert not re.search(r"^step +\d+/8 \| loss", out, re.M)           # the bar replaces the log lines
    assert "eval @ step 8: val loss" in out                           # ... but not the evaluations
    class Terminal(io.StringIO):
        def isatty(self): return True
    monkeypatch.setattr(sys, "stderr", Terminal())
    make_trainer(tmp_path / "auto", progress="auto", print_fn=print).fit()
    assert "8/8" in sys.stderr.getvalue() and "%|" in sys.stderr.getvalue()
