"""Data-parallel training on 2 CPU processes (gloo) under torchrun: the same update as one process with the doubled
batch, bit-exact resume, a lost process, peers that never come, and the errors for bad set-ups."""
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tinyllm.core import TinyLLMError
from tinyllm.distributed import RankShard
from tinyllm.trainer import read_metrics

WORKER = Path(__file__).parent / "dist_worker.py"
pytestmark = pytest.mark.slow


def run(out_dir, *args, procs=2, timeout=240):
    "Run tests/dist_worker.py under torchrun with `procs` processes (or plainly for 1); return the CompletedProcess."
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"] if procs > 1 \
        else [sys.executable]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run(launcher + [str(WORKER), str(out_dir), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env)


def ok(p):
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p


def weights(out_dir):
    return torch.load(Path(out_dir) / "final.pt", weights_only=True)


def losses(out_dir):
    return [r["loss"] for r in read_metrics(Path(out_dir) / "metrics.jsonl") if "loss" in r]


def test_two_processes_make_the_update_of_one_process_with_twice_the_batch(tmp_path):
    ok(run(tmp_path / "one", "--batch", 8, "--accum", 2, procs=1))
    two = ok(run(tmp_path / "two", "--batch", 4, "--accum", 2))
    assert "effective batch 4 x 2 accumulation x 2 process(es) = 16 rows per step" in two.stdout
    assert losses(tmp_path / "one") == pytest.approx(losses(tmp_path / "two"), abs=1e-6)
    a, b = weights(tmp_path / "one"), weights(tmp_path / "two")
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst < 1e-5, worst          # 4 AdamW steps in float32; the sums run in another order
    assert len(list((tmp_path / "two").glob("metrics.jsonl"))) == 1 and len(losses(tmp_path / "two")) == 4  # rank 0 only


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_processes_resume_bit_exactly(tmp_path, parallel):
    common = ("--steps", 6, "--dropout", 0.1, "--parallel", parallel)   # dropout: each process's generator must be restored
    ok(run(tmp_path / "straight", *common))
    ok(run(tmp_path / "resumed", *common, "--stop-after", 2))
    resumed = ok(run(tmp_path / "resumed", *common, "--resume", "last"))
    assert "resumed from" in resumed.stdout
    assert losses(tmp_path / "straight") == losses(tmp_path / "resumed")
    a, b = weights(tmp_path / "straight"), weights(tmp_path / "resumed")
    assert all(torch.equal(a[k], b[k]) for k in a)
    if parallel == "fsdp":                                     # the sharded run resumed as DDP: refused, clearly
        p = run(tmp_path / "resumed", "--steps", 8, "--resume", "last")
        assert p.returncode != 0 and "parallel: checkpoint 'fsdp', this run None" in p.stderr, p.stderr[-2000:]
        assert "same train.parallel" in p.stderr


def test_a_lost_process_stops_the_other_and_the_last_checkpoint_resumes(tmp_path):
    # rank 1 dies in its 11th forward pass: step 3's first micro-batch (2 per step, plus 2 evaluation batches at step 2)
    p = run(tmp_path / "run", "--steps", 6, "--die-at", 11, "--timeout", 30)
    assert p.returncode != 0
    # the survivor sees the broken connection, or torchrun's SIGTERM first (it stops the others when one fails)
    assert "lost contact with another process" in p.stderr or "was told to stop (SIGTERM)" in p.stderr, p.stderr[-3000:]
    assert "error: process 0" in p.stderr and "step-0000002, is intact" in p.stderr, p.stderr[-3000:]
    ok(run(tmp_path / "run", "--steps", 6, "--resume", "last"))
    ok(run(tmp_path / "straight", "--steps", 6))
    assert losses(tmp_path / "run") == losses(tmp_path / "straight")


def test_a_peer_that_never_comes_is_a_clear_error(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(port)}
    p = subprocess.run([sys.executable, str(WORKER), str(tmp_path / "x"), "--timeout", "3"], capture_output=True,
                       text=True, timeout=120, env={k: str(v) for k, v in env.items()})
    assert p.returncode == 2, p.stderr[-2000:]
    assert "could not reach its peers at 127.0.0.1" in p.stderr and "train.dist_timeout" in p.stderr, p.stderr


def test_resuming_with_another_number_of_processes_is_refused(tmp_path):
    ok(run(tmp_path / "run", "--stop-after", 2))
    p = run(tmp_path / "run", "--resume", "last", procs=1)
    assert p.returncode == 2 and "world_size: checkpoint 2, this run 1" in p.stderr, p.stderr[-2000:]
    assert "same number of processes" in p.stderr


def test_rank_shard_splits_rows_and_refuses_uneven_batches():
    x = torch.arange(12).reshape(6, 2)
    parts = [next(RankShard(iter([(x, x)]), r, 3)) for r in range(3)]
    assert torch.equal(torch.cat([p[0] for p in parts]), x)
    with pytest.raises(TinyLLMError, match="does not split evenly across 4 processes"):
        next(RankShard(iter([x]), 0, 4))
    with pytest.raises(TinyLLMError, match="rank 2 is not in"):
        RankShard(iter([x]), 2, 2)


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_tinyllm_train_under_torchrun_on_two_processes(tmp_path, parallel):
    from test_trainer_faults import EOT, WORDS, _corpus, write_run_config

    from tinyllm.bpe import Tokenizer
    from tinyllm.prepare import prepare
    text = _corpus(tmp_path / "text", WORDS[0], 0)
    Tokenizer.train(text / "train.txt", vocab_size=300, special_tokens=[EOT], num_processes=1).save(tmp_path / "tok")
    prepare(text, tmp_path / "tok", tmp_path / "tokens", progress=False, workers=1)
    config = write_run_config(tmp_path / "run.toml", out_dir=tmp_path / "run", tokenizer=tmp_path / "tok",
                              tokens=tmp_path / "tokens", parallel=parallel, samples=1, sample_tokens=8)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    p = subprocess.run(torchrun + ["-m", "tinyllm", "train", str(config)], capture_output=True, text=True, timeout=240,
                       env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"})
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert p.stdout.count("effective batch 4 x 1 accumulation x 2 process(es)") == 1, p.stdout
    assert p.stdout.count("  sample: ") == 1, p.stdout        # every process samples under FSDP; rank 0 prints
    assert [r["step"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "loss" in r] == [1, 2, 3, 4]
    assert (tmp_path / "run" / "checkpoints" / "last").exists()


def test_sigterm_stops_a_run_with_a_message_and_its_checkpoint_resumes(tmp_path):
    # what torchrun sends the survivors of a failed run, and what schedulers send before pre-empting a job
    import signal
    import time
    out = tmp_path / "run"
    p = subprocess.Popen([sys.executable, str(WORKER), str(out), "--steps", "60"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    while not (out / "checkpoints" / "step-0000004").exists() and time.time() < deadline and p.poll() is None:
        time.sleep(0.1)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 2, err[-2000:]
    assert "error: process 0 was told to stop (SIGTERM)" in err and "is intact: continue with --resume last" in err, err
    ok(run(out, "--steps", 60, "--resume", "last", procs=1))


def test_fsdp_makes_the_update_of_one_process_and_saves_sharded_checkpoints(tmp_path):
    from tinyllm.checkpoint import verify_checkpoint
    from tinyllm.model import GPT, GPTConfig
    ok(run(tmp_path / "one", "--batch", 8, "--accum", 2, procs=1))
    two = ok(run(tmp_path / "fsdp", "--batch", 4, "--accum", 2, "--parallel", "fsdp"))
    assert "x 2 process(es) (FSDP-sharded) = 16 rows per step" in two.stdout
    assert losses(tmp_path / "one") == pytest.approx(losses(tmp_path / "fsdp"), abs=1e-5)
    a, b = weights(tmp_path / "one"), weights(tmp_path / "fsdp")
    assert a.keys() == b.keys() and max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
    last = (tmp_path / "fsdp" / "checkpoints" / "last").resolve()
    files = verify_checkpoint(last)["files"]                # every shard is checksummed with the rest
    assert {"sharded/.metadata", "sharded/__0_0.distcp", "sharded/__1_0.distcp"} <= files.keys()
    assert torch.load(last / "state.pt", weights_only=True)["optimizer"] is None   # it lives in the shards
    from tinyllm.checkpoint import load_weights
    GPT(GPTConfig.from_preset("tiny")).load_state_dict(load_weights(last))   # model.safetensors is whole, as always
    with open(last / "sharded" / "__1_0.distcp", "r+b") as f: f.write(b"garbage")
    with pytest.raises(TinyLLMError, match="sharded/__1_0.distcp does not match the SHA-256"):
        verify_checkpoint(last)


def test_fsdp_refuses_muon_which_needs_whole_matrices(tmp_path):
    p = run(tmp_path / "run", "--parallel", "fsdp", "--optimizer", "muon")
    assert p.returncode != 0 and "orthogonalises whole weight matrices" in p.stderr, p.stderr[-2000:]
