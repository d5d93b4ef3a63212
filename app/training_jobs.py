"""Background training from the Train page: the command line, starting and stopping it, its log."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import streamlit as st

from app import session, settings


def run_dir_for(name: str) -> Path:
    """The folder of a new run `name` in the runs folder; ValueError when it would be outside it
    (`..`, an absolute path, or a symlink out of the folder)."""
    from moe_core.run import resolve_run_dir

    return resolve_run_dir(settings.runs_dir(), name)


def train_command(out: Path, preset: str, steps: int, balance: list[str], experts: int, top_k: int) -> list[str]:
    """The `moe-explorer train` command line the Train page runs (0 experts / top-k = the preset's)."""
    cmd = [sys.executable, "-m", "app.cli", "train", "--preset", preset, "--out", str(out), "--steps", str(steps)]
    cmd += ["--balance", *(balance or ["none"])]
    if experts:
        cmd += ["--experts", str(experts)]
    if top_k:
        cmd += ["--top-k", str(top_k)]
    from moe_core.config import preset as model_preset

    if model_preset(preset).vocab_size < 320:  # the tiny preset's 256 is below a byte-level tokenizer's 257
        cmd += ["--vocab-size", "320"]
    every = str(max(1, steps // 4))  # 4 checkpoints, so the checkpoint slider has something to show
    return cmd + ["--corpus-size", "small", "--ckpt-every", every, "--eval-every", every, "--quiet"]


def start_training(cmd: list[str], out: Path) -> dict:
    """Start training as a background process (its own session, so stopping it signals only it)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    log = out.parent / f"{out.name}.train.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    job = {"proc": proc, "pid": proc.pid, "out": str(out.resolve()), "log": str(log), "cmd": cmd}
    st.session_state[session.KEY_TRAIN_PROC] = job
    return job


def stop_training(job: dict) -> None:
    """SIGTERM: the trainer finishes its step, writes a checkpoint and exits."""
    if job["proc"].poll() is None:
        job["proc"].send_signal(signal.SIGTERM)


def log_tail(path: str, lines: int = 8) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
