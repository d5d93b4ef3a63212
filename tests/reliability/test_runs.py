"""Hostile run directories and run names: clear errors, nothing loaded but safetensors + JSON, no escape from
the runs folder, one trainer per run directory.

Already proven elsewhere (referenced in docs/RELIABILITY.md): pickle renamed to .safetensors, truncated
weights, shapes/missing tensors vs run.json (tests/moe_core/test_run.py::test_corrupt_checkpoints_give_clear_errors),
run.json unknown/missing fields and bad JSON (tests/moe_core/test_run.py::test_load_run_errors_name_the_problem).
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from moe_core.config import preset
from moe_core.corpus import load_docs
from moe_core.run import RUN_FORMAT, load_run, load_weights, resolve_run_dir, state_path, weights_path
from moe_core.training import LOCK_NAME, RunLock, TrainConfig, train
from tests.reliability.conftest import REPO

TINY_TRAIN = dict(steps=4, batch_size=4, seq_len=32, warmup_steps=1, eval_every=2, ckpt_every=2, eval_batches=1)


def train_tiny(out: Path, corpus: Path, **overrides) -> None:
    cfg = TrainConfig(**{**TINY_TRAIN, **overrides})
    train(out, preset("tiny"), cfg, load_docs(corpus, "train"), load_docs(corpus, "val"), device="cpu", progress=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, corpus_dir) -> Path:
    """A real 4-step run (checkpoints 2 and 4, with their optimizer state files kept)."""
    out = tmp_path_factory.mktemp("trained") / "run"
    train_tiny(out, corpus_dir, keep_states=0)
    return out


def copy_run(src: Path, dst: Path) -> Path:
    subprocess.run(["cp", "-r", str(src), str(dst)], check=True)
    return dst


# --- checkpoints and run.json ----------------------------------------------------------------------------------


def test_pickled_state_file_is_refused_on_resume(trained, tmp_path):
    out = copy_run(trained, tmp_path / "run")
    state = state_path(out, 4)
    state.write_bytes(pickle.dumps({"step": 4, "payload": torch.zeros(3).numpy()}))  # never unpickled
    with pytest.raises(ValueError, match="not a valid safetensors file"):
        train(out, preset("tiny"), TrainConfig(**{**TINY_TRAIN, "steps": 6}), None, None, resume=True,
              device="cpu", progress=False)  # fmt: skip


def test_truncated_and_empty_weights_give_clear_errors(trained, tmp_path):
    out = copy_run(trained, tmp_path / "run")
    good = weights_path(out, 4).read_bytes()
    for size in (0, 7, 8 + 10, len(good) - 1):  # empty, shorter than the header length, cut header, cut data
        weights_path(out, 4).write_bytes(good[:size])
        with pytest.raises(ValueError, match="not a valid safetensors file"):
            load_run(out).load_model(4)
    assert load_run(out).load_model(2) is not None  # the other checkpoint is untouched


def test_weights_with_other_shapes_than_run_json(trained, tmp_path):
    out = copy_run(trained, tmp_path / "run")
    info = json.loads((out / "run.json").read_text())
    info["model"]["n_embd"] = 64  # run.json now promises a wider model than the checkpoints hold
    info["model"]["n_head"] = 4
    (out / "run.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="does not match the model config.*shape"):
        load_run(out).load_model(4)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda i: i.pop("format"), "unknown run format None"),
        (lambda i: i.update(secret="x"), "unknown field.*secret"),
        (lambda i: i["model"].update(colour="red"), "invalid model config"),
        (lambda i: i["model"].pop("n_embd"), None),  # a missing model field takes its default: loads or says why
        (lambda i: i.pop("model"), "no 'model'"),
    ],
)
def test_run_json_with_unknown_or_missing_fields(trained, tmp_path, edit, message):
    out = copy_run(trained, tmp_path / "run")
    info = json.loads((out / "run.json").read_text())
    edit(info)
    (out / "run.json").write_text(json.dumps(info))
    if message is None:
        with pytest.raises(ValueError, match="does not match the model config"):
            load_run(out).load_model(4)
    else:
        with pytest.raises(ValueError, match=message):
            load_run(out)


def test_unknown_train_field_blocks_resume_with_a_message(trained, tmp_path):
    out = copy_run(trained, tmp_path / "run")
    info = json.loads((out / "run.json").read_text())
    info["train"]["turbo"] = True
    (out / "run.json").write_text(json.dumps(info))
    from app.cli import main

    assert main(["train", "--out", str(out), "--resume", "--steps", "6", "--device", "cpu", "--quiet"]) == 2


def test_only_safetensors_are_opened(monkeypatch, trained):
    """Loading a run and a model never touches pickle or torch.load."""

    def boom(*args, **kwargs):
        raise AssertionError("pickle/torch.load used")

    monkeypatch.setattr(pickle, "load", boom)
    monkeypatch.setattr(pickle, "loads", boom)
    monkeypatch.setattr(torch, "load", boom)
    run = load_run(trained)
    run.load_model(4)
    run.tokenizer()
    run.history()
    load_weights(run.state_path(4))


# --- run names ----------------------------------------------------------------------------------------------------


def test_resolve_run_dir_accepts_plain_names(tmp_path):
    assert resolve_run_dir(tmp_path, "my-run") == (tmp_path / "my-run").resolve()
    assert resolve_run_dir(tmp_path, "study/seed_1") == (tmp_path / "study" / "seed_1").resolve()


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("../outside", r"contains '\.\.'"),
        ("a/../../outside", r"contains '\.\.'"),
        ("..", r"contains '\.\.'"),
        ("/etc", "absolute path"),
        ("//server/share", "absolute path"),
        ("C:evil", "absolute path"),
        ("\\\\evil", "absolute path"),
        ("a\0b", "NUL"),
        (".", "outside the runs folder"),
    ],
)
def test_resolve_run_dir_refuses_escapes(tmp_path, name, message):
    with pytest.raises(ValueError, match=message):
        resolve_run_dir(tmp_path / "runs", name)


def test_resolve_run_dir_refuses_symlinks_out(tmp_path):
    runs, outside = tmp_path / "runs", tmp_path / "outside"
    runs.mkdir()
    outside.mkdir()
    (runs / "link").symlink_to(outside)  # an existing folder outside
    (runs / "dangling").symlink_to(tmp_path / "nowhere")  # exists() is False, yet training would write there
    (runs / "inner").symlink_to(runs / "real")  # a link that stays inside is fine
    for name in ("link", "link/run", "dangling"):
        with pytest.raises(ValueError, match="outside the runs folder"):
            resolve_run_dir(runs, name)
    assert resolve_run_dir(runs, "inner") == (runs / "real").resolve()


# --- one trainer per run directory ---------------------------------------------------------------------------------


def test_lock_refuses_a_second_trainer_in_process(tmp_path, corpus_dir):
    out = tmp_path / "run"
    held = RunLock(out)
    held.acquire()
    try:
        with pytest.raises(ValueError, match=rf"run run is already being trained by process {os.getpid()}"):
            train_tiny(out, corpus_dir)
        assert not (out / "run.json").exists()  # refused before writing anything
    finally:
        held.release()
    train_tiny(out, corpus_dir, steps=2)  # free again: trains
    assert load_run(out).latest_step() == 2
    assert (out / LOCK_NAME).read_text().strip() == str(os.getpid())  # a stale file does not block


@pytest.mark.slow
def test_lock_refuses_a_second_trainer_process(tmp_path, corpus_dir):
    """A CLI trainer holds the lock; a second CLI trainer (resume) on the same run exits with the message."""
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "app.cli", "train", "--preset", "tiny", "--out", str(out), "--corpus", str(corpus_dir),
           "--device", "cpu", "--batch-size", "4", "--seq-len", "32", "--quiet"]  # fmt: skip
    first = subprocess.Popen([*cmd, "--steps", "100000", "--ckpt-every", "5"], env=env, cwd=REPO,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not list((out / "checkpoints").glob("step_*.safetensors")):
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        second = subprocess.run([*cmd, "--resume", "--steps", "100001"], env=env, cwd=REPO, capture_output=True,
                                text=True, timeout=120)  # fmt: skip
        assert second.returncode == 2
        assert f"is already being trained by process {first.pid}" in second.stderr
        assert first.poll() is None  # the first trainer is unharmed
    finally:
        first.kill()
        first.wait()
    assert json.loads((out / "run.json").read_text())["format"] == RUN_FORMAT


def test_resuming_a_missing_run_creates_nothing(tmp_path):
    out = tmp_path / "typo"
    with pytest.raises(ValueError, match="nothing to resume"):
        train(out, preset("tiny"), TrainConfig(**TINY_TRAIN), None, None, resume=True, device="cpu", progress=False)
    assert not out.exists()  # no stray folder or .lock file
