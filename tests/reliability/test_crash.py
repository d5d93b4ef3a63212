"""Crash safety: SIGKILL a training process at seeded random moments (and inside a checkpoint write), and a
disk that fills up while a checkpoint is written.

After every kill: the latest complete checkpoint loads, its optimizer state is there, history rows on disk
are 1..n without gaps or duplicates, at most one checkpoint interval of work is lost, and the next resume
continues from that checkpoint. (tests/moe_core/test_train.py covers SIGTERM and an exact resume.)
"""

from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import moe_core.run as run_module
from moe_core.config import preset
from moe_core.corpus import load_docs
from moe_core.files import read_jsonl
from moe_core.model import build_model
from moe_core.run import load_run, state_path, weights_path
from moe_core.training import CKPT_PAUSE_ENV, TrainConfig, save_checkpoint, train
from tests.reliability.conftest import REPO

CKPT_EVERY = 3
TRIALS = 12  # SIGKILLs: 9 at random moments, 3 between a checkpoint's state file and its weights file
PAUSE_TRIALS = {3, 7, 10}


def trainer(out: Path, corpus: Path, resume: bool, pause: bool) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "app.cli", "train", "--preset", "tiny", "--out", str(out), "--device", "cpu",
           "--batch-size", "4", "--seq-len", "32", "--steps", "100000", "--ckpt-every", str(CKPT_EVERY),
           "--eval-every", "4", "--quiet"]  # fmt: skip
    cmd += ["--resume"] if resume else ["--corpus", str(corpus)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop(CKPT_PAUSE_ENV, None)
    if pause:
        env[CKPT_PAUSE_ENV] = "30"  # sleeps between the state file and the weights file of every checkpoint
    return subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for(condition, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"trainer exited early ({proc.returncode}): {proc.stderr.read()}")
        assert time.monotonic() < deadline, "trainer too slow"
        time.sleep(0.01)


def history_steps(out: Path) -> list[int]:
    return [r["step"] for r in read_jsonl(out / "history" / "train.jsonl")]


def orphan_state(out: Path, since: float) -> bool:
    """A checkpoint whose state file was written after `since` but whose weights file is not (yet)."""
    folder = out / "checkpoints"
    return folder.is_dir() and any(
        p.stat().st_mtime >= since and not (folder / p.name.replace(".state.safetensors", ".safetensors")).exists()
        for p in folder.glob("step_*.state.safetensors")
    )


def rows_since(out: Path, since: float) -> int:
    return sum(r["time"] >= since for r in read_jsonl(out / "history" / "train.jsonl"))


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_at_most_one_interval(tmp_path, corpus_dir):
    out = tmp_path / "run"
    rng = random.Random(1234)  # seeded delays: the same kill schedule on every CI run
    outcomes = []
    for trial in range(TRIALS):
        resume = (out / "run.json").exists()
        before = load_run(out).latest_step() if resume else None
        pause = trial in PAUSE_TRIALS
        started = time.time()
        proc = trainer(out, corpus_dir, resume, pause)
        try:
            if pause:  # kill inside a checkpoint write: state file on disk, weights file not yet
                wait_for(lambda: orphan_state(out, started), proc)  # noqa: B023
            else:  # kill at a random moment after this process has done at least one step
                wait_for(lambda: rows_since(out, started) >= 1, proc)  # noqa: B023 - called right here
                time.sleep(rng.uniform(0.0, 1.5))
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
        assert proc.returncode == -signal.SIGKILL

        run = load_run(out)
        latest = run.latest_step()
        steps = history_steps(out)
        assert steps == list(range(1, len(steps) + 1)), f"trial {trial}: history has gaps or duplicates"
        if latest is None:  # killed before the first checkpoint: the next start resumes from step 0
            assert len(steps) <= CKPT_EVERY
        else:
            assert latest % CKPT_EVERY == 0 and (before is None or latest >= before)
            run.load_model(latest)  # the latest complete checkpoint is intact
            assert run.state_path(latest).is_file()  # and can be resumed
            assert steps[-1] >= latest  # its rows are kept ...
            assert steps[-1] - latest <= CKPT_EVERY  # ... and at most one interval of work is lost
        outcomes.append((trial, "pause" if pause else "random", latest, steps[-1] if steps else 0))

    # a last resume runs clean: history cut back to the checkpoint, then continued without duplicates
    last = load_run(out).latest_step()
    started = time.time()
    proc = trainer(out, corpus_dir, resume=True, pause=False)
    try:
        wait_for(lambda: rows_since(out, started) >= 2, proc)
        proc.send_signal(signal.SIGTERM)  # finish the step, checkpoint, exit 0
        assert proc.wait(timeout=120) == 0, proc.stderr.read()
    finally:
        proc.kill()
    steps = history_steps(out)
    assert steps == list(range(1, len(steps) + 1)) and steps[-1] >= last + 2
    assert load_run(out).latest_step() == steps[-1]
    assert not list((out / "checkpoints").glob(".*.tmp"))  # stale temp files of killed writes are cleaned
    evals = [r["step"] for r in read_jsonl(out / "history" / "eval.jsonl")]
    assert evals == sorted(set(evals))
    assert sum(kind == "pause" for _, kind, _, _ in outcomes) == len(PAUSE_TRIALS)
    assert len(outcomes) >= 10


# --- disk full -----------------------------------------------------------------------------------------------------


@pytest.fixture
def two_checkpoints(tmp_path, corpus_dir) -> Path:
    cfg = TrainConfig(steps=4, batch_size=4, seq_len=32, warmup_steps=1, eval_every=2, ckpt_every=2, eval_batches=1)
    out = tmp_path / "run"
    train(out, preset("tiny"), cfg, load_docs(corpus_dir, "train"), load_docs(corpus_dir, "val"), device="cpu",
          progress=False)  # fmt: skip
    return out


def full_disk_after(monkeypatch, calls_ok: int) -> list[str]:
    """Make the `calls_ok`+1-th safetensors write fail with ENOSPC after writing part of its temp file."""
    real = run_module.save_file
    seen: list[str] = []

    def save_file(tensors, filename, metadata=None):
        seen.append(filename)
        if len(seen) > calls_ok:
            Path(filename).write_bytes(b"\0" * 1000)  # half-written
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(tensors, filename, metadata=metadata)

    monkeypatch.setattr(run_module, "save_file", save_file)
    return seen


@pytest.mark.parametrize("calls_ok", [0, 1], ids=["state-file-fails", "weights-file-fails"])
def test_disk_full_during_a_checkpoint_keeps_the_previous_one(two_checkpoints, monkeypatch, calls_ok):
    out = two_checkpoints
    run = load_run(out)
    model = run.load_model(4).train()
    optimizer = torch.optim.AdamW(model.parameters())
    cfg = TrainConfig.from_dict(run.info["train"])
    full_disk_after(monkeypatch, calls_ok)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(out, 6, model, optimizer, cfg, keep_states=1)
    monkeypatch.undo()
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert not weights_path(out, 6).exists()  # no partial file under a final name
    assert state_path(out, 6).exists() == (calls_ok == 1)  # a complete state file only, never a partial one
    assert not [n for n in names if n.endswith(".tmp")]  # the partial temp file is removed
    run = load_run(out)
    assert run.latest_step() == 4 and run.state_path(4).is_file()
    reference = build_model(run.config).state_dict()
    assert set(run.load_model(4).state_dict()) == set(reference)  # the previous checkpoint is usable
    cfg.steps = 5
    resumed = train(out, run.config, cfg, None, None, resume=True, device="cpu", progress=False)
    assert resumed.latest_step() == 5  # and training resumes from it
    assert history_steps(out) == [1, 2, 3, 4, 5]
