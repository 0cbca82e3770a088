"""The run folder as a user handles it: copied without its links, killed at every point of a checkpoint save, filled
up by a size limit, resumed from a relative path. Each test fails on a run folder that loses or misreads a checkpoint."""
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tinyllm.checkpoint import list_checkpoints, read_pointer, remove_stale, verify_checkpoint
from tinyllm.trainer import Trainer
from test_trainer_faults import (REPO, assert_one_error_line, assert_same_weights, make_trainer, project, reference,  # noqa: F401
                                 run_cli, temp_dirs, train_records)

pytestmark = pytest.mark.usefixtures("one_thread")


# ---- 1. a copy that lost its links -----------------------------------------------------------------------------------
def _links_as_files(src: Path, dst: Path):
    "A copy onto a file system without symlinks: each pointer becomes a small file naming its step."
    shutil.copytree(src, dst, symlinks=True)
    for p in (dst / "checkpoints").iterdir():
        if p.is_symlink():
            target = os.readlink(p)
            p.unlink()
            p.write_text(target + "\n")

COPIES = {
    "copytree": lambda src, dst: shutil.copytree(src, dst),              # follows links: last and best become folders
    "zip": lambda src, dst: shutil.unpack_archive(shutil.make_archive(str(dst) + "-archive", "zip", src), dst),
    "links-as-files": _links_as_files,
}

@pytest.mark.parametrize("how", list(COPIES))
def test_a_copied_run_resumes_exactly_like_the_original(tmp_path, reference, how):  # noqa: F811
    orig, copy = tmp_path / "orig", tmp_path / "copy"
    make_trainer(orig).fit(stop_after=4)
    COPIES[how](orig, copy)
    assert not (copy / "checkpoints/last").is_symlink()
    assert read_pointer(copy / "checkpoints", "last").name == "step-0000004"
    lines = []
    make_trainer(copy, print_fn=lines.append).fit(resume="last")      # today: IsADirectoryError at the first save
    make_trainer(orig).fit(resume="last")
    assert not [s for s in lines if s.startswith("warning")], lines
    assert any(s.startswith("resumed from") and s.split()[2].endswith("step-0000004") for s in lines), lines
    assert_same_weights(orig / "checkpoints/last", copy / "checkpoints/last")
    assert_same_weights(reference / "checkpoints/last", copy / "checkpoints/last")
    assert train_records(copy) == train_records(orig) == train_records(reference)
    for name in ("last", "best"):
        assert read_pointer(copy / "checkpoints", name).name == read_pointer(orig / "checkpoints", name).name
    assert not [p.name for p in (copy / "checkpoints").glob(".*")]


# ---- 2. a kill at every point of a save ------------------------------------------------------------------------------
KILLED = 77

def _file_ops():
    "Every call a save makes that changes the disk: writes, fsyncs, renames, links, deletions."
    import safetensors.torch
    return [(os, "rename"), (os, "replace"), (os, "symlink"), (os, "unlink"), (os, "fsync"), (shutil, "rmtree"),
            (torch, "save"), (safetensors.torch, "save_file")]

def _resume_and_die_at(out: Path, resume: str, k: int) -> int:
    "In a forked child: resume the run in `out` and exit at the k-th file operation made inside `Trainer.save`."
    pid = os.fork()
    if pid:
        return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    try:
        count, inside = [0], [False]
        def wrap(mod, name):
            real = getattr(mod, name)
            def op(*a, **kw):
                if inside[0]:
                    count[0] += 1
                    if count[0] == k: os._exit(KILLED)                  # no cleanup runs: what SIGKILL leaves
                return real(*a, **kw)
            setattr(mod, name, op)
        for mod, name in _file_ops(): wrap(mod, name)
        save = Trainer.save
        def counted_save(self, *a, **kw):
            inside[0] = True
            try: return save(self, *a, **kw)
            finally: inside[0] = False
        Trainer.save = counted_save
        make_trainer(out, keep_checkpoints=10).fit(resume=resume)
        os._exit(0)
    except BaseException:
        os._exit(1)

@pytest.mark.slow
@pytest.mark.parametrize("scenario", ["new-steps", "re-saved-steps"])
def test_a_kill_at_every_point_of_a_save_never_loses_a_checkpoint(tmp_path, reference, scenario):  # noqa: F811
    """`new-steps`: resume at step 4 and save steps 6 and 8 for the first time; `re-saved-steps`: resume a finished
    run from step 4, so steps 6 and 8 are saved again over the old folders (moved aside, then replaced)."""
    base = tmp_path / "base"
    make_trainer(base, keep_checkpoints=10).fit(stop_after=4 if scenario == "new-steps" else None)
    resume = "last" if scenario == "new-steps" else str(base / "checkpoints/step-0000004")
    before = {p.name for p in list_checkpoints(base / "checkpoints")}
    k = 0
    while True:
        k += 1
        run = tmp_path / f"kill-{k}"
        shutil.copytree(base, run, symlinks=True)
        code = _resume_and_die_at(run, resume.replace(str(base), str(run)), k)
        root = run / "checkpoints"
        if code == 0: break                                          # k is past the last operation of the last save
        assert code == KILLED, f"the child failed before the kill at operation {k}"
        remove_stale(root)                                           # what the next start does first
        kept = {p.name for p in list_checkpoints(root)}
        assert before <= kept, f"kill at operation {k}: lost {sorted(before - kept)}"
        for p in list_checkpoints(root): verify_checkpoint(p)
        assert not temp_dirs(root) and not list(root.glob(".*.tmp")), sorted(p.name for p in root.glob(".*"))
        lines = []
        make_trainer(run, keep_checkpoints=10, print_fn=lines.append).fit(resume="last")
        assert not [s for s in lines if s.startswith("warning")], (k, lines)
        assert_same_weights(reference / "checkpoints/last", root / "last")
        shutil.rmtree(run)
    assert k > 20, f"only {k - 1} file operations were interrupted: the injection missed the saves"


# ---- 3. a full disk, for real: a file-size limit ---------------------------------------------------------------------
@pytest.mark.slow
def test_a_file_size_limit_during_a_save_is_one_line_and_keeps_the_last_checkpoint(project, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    shutil.copytree(project.dir / "base", run, symlinks=True)
    root = run / "checkpoints"
    limit = min(f.stat().st_size for f in (root / "last").iterdir() if f.name != "meta.json") // 2
    def small_files():                                        # like a disk that fills up: writes past `limit` fail
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    before = {p.name for p in list_checkpoints(root)}
    p = subprocess.run([sys.executable, "-m", "tinyllm", "train", str(project.config), f"out_dir={str(run)!r}",
                        "train.max_steps=6", "--resume"], capture_output=True, text=True, cwd=REPO,
                       preexec_fn=small_files, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert_one_error_line(p.returncode, p.stderr, "could not write checkpoint", str(root / "step-0000006"),
                          "File too large", "the checkpoints already in")
    assert {p.name for p in list_checkpoints(root)} == before and not temp_dirs(root)
    assert read_pointer(root, "last").name == "step-0000004"
    verify_checkpoint(root / "step-0000004")


# ---- 4. a damaged checkpoint, resumed through a relative path ----------------------------------------------------------
@pytest.mark.slow
def test_a_damaged_last_checkpoint_is_reported_once(project, tmp_path, capsys, monkeypatch):  # noqa: F811
    shutil.copytree(project.dir / "base", tmp_path / "run", symlinks=True)
    with open(tmp_path / "run/checkpoints/step-0000004/model.safetensors", "r+b") as f: f.truncate(100)
    monkeypatch.chdir(tmp_path)                                # out_dir as users write it: relative
    status, out, err = run_cli(capsys, "train", project.config, "out_dir='run'", "train.max_steps=6", "--resume")
    assert status == 0, err
    warnings = [s for s in (out + err).splitlines() if s.startswith("warning")]
    assert len(warnings) == 1 and "step-0000004" in warnings[0], out + err
    assert "resumed from" in out and "step-0000002" in out
