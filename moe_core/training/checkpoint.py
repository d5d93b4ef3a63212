"""Checkpoints: the optimizer/schedule/RNG state file, then the weights file (both atomic safetensors).

The weights file is written last, so a weights file means the checkpoint is complete.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from moe_core.model import MoETransformer
from moe_core.run import Run, check_state_dict, load_weights, save_weights, state_path, weights_path
from moe_core.training.config import TrainConfig

CKPT_PAUSE_ENV = "MOE_EXPLORER_TEST_CKPT_PAUSE"  # seconds to sleep between a checkpoint's two files (tests)


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: MoETransformer,
    optimizer: torch.optim.Optimizer,
    train_cfg: TrainConfig,
    keep_states: int,
) -> None:
    """State file (optimizer, schedule position, RNG, data position) first, then the weights file."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for pid, st in sd["state"].items():
        for key, value in st.items():
            if torch.is_tensor(value):
                tensors[f"optim.{pid}.{key}"] = value
            else:
                scalars[f"{pid}.{key}"] = value
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    meta = {
        "step": str(step),
        "param_groups": sd["param_groups"],
        "optim_scalars": scalars,
        "scheduler": {"step": step, "kind": "warmup_cosine"},
        "data": {"seed": train_cfg.seed, "next_step": step + 1},  # batches are a function of (seed, step)
        "train": train_cfg.to_dict(),
    }
    save_weights(state_path(run_dir, step), tensors, meta)
    if os.environ.get(CKPT_PAUSE_ENV):  # crash tests: a window to SIGKILL between the two files
        time.sleep(float(os.environ[CKPT_PAUSE_ENV]))
    save_weights(weights_path(run_dir, step), model.state_dict(), {"config": model.config.to_dict(), "step": str(step)})
    if keep_states > 0:  # old optimizer states are only needed for resume, and resume takes the latest
        states = sorted((run_dir / "checkpoints").glob("step_*.state.safetensors"))
        for old in states[:-keep_states]:
            old.unlink(missing_ok=True)


def load_checkpoint(run: Run, step: int, model: MoETransformer, optimizer: torch.optim.Optimizer) -> None:
    tensors, _ = load_weights(run.weights_path(step))
    expected = model.state_dict()
    check_state_dict(expected, tensors, str(run.weights_path(step)))
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in tensors.items()})
    state, meta = load_weights(run.state_path(step))
    opt_state: dict[int, dict[str, Any]] = {}
    for name, value in state.items():
        if name.startswith("optim."):
            _, pid, key = name.split(".", 2)
            opt_state.setdefault(int(pid), {})[key] = value
    for name, value in json.loads(meta.get("optim_scalars", "{}")).items():
        pid, key = name.split(".", 1)
        opt_state.setdefault(int(pid), {})[key] = value
    optimizer.load_state_dict({"state": opt_state, "param_groups": json.loads(meta["param_groups"])})
    if "rng.torch" in state:
        torch.set_rng_state(state["rng.torch"])
    if "rng.cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["rng.cuda"])
