"""Where a model runs: the one resolution of "auto" / "cpu" / "cuda" / "cuda:N" used by training, the
recorder's command line and the Hugging Face loader."""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"


def resolve_device(device: str | torch.device = "auto", local_rank: int = 0) -> torch.device:
    """ "auto" -> cuda when available, else cpu; "cuda" -> cuda:`local_rank` (one GPU per DDP rank).

    ValueError (one line) for an unknown name or a CUDA device on a machine without CUDA."""
    name = str(device)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name != "cpu" and name != "cuda" and not name.startswith("cuda:"):
        raise ValueError(f"unknown device {name!r}; use {DEVICE_CHOICES}")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} requested but CUDA is not available")
        if name == "cuda":
            name = f"cuda:{local_rank}"
    return torch.device(name)


def torchrun_ranks(environ: Mapping[str, str] | None = None) -> tuple[int, int, int]:
    """(rank, world size, local rank) of this process as torchrun describes it (RANK, WORLD_SIZE, LOCAL_RANK);
    (0, 1, 0) without torchrun. KeyError or ValueError for a broken environment."""
    env = os.environ if environ is None else environ
    world = int(env.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    rank = int(env["RANK"])
    return rank, world, int(env.get("LOCAL_RANK", rank))
