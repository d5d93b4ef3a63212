"""DDP plumbing: which rank this process is, and the device it trains on.

Launched by torchrun (env RANK/WORLD_SIZE): gloo on CPU, nccl on CUDA; otherwise a single process.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from moe_core.devices import resolve_device, torchrun_ranks


@dataclass
class Dist:
    rank: int = 0  # this process's rank (0 writes the run's files)
    world: int = 1  # number of processes
    local_rank: int = 0  # rank on this machine: the GPU index for device "cuda"

    @property
    def on(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str) -> Dist:
    """Init the process group when launched under torchrun (env RANK/WORLD_SIZE); else a single process."""
    rank, world, local_rank = torchrun_ranks()
    if world <= 1:
        return Dist()
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)  # nccl needs each rank on its own GPU before init
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo", rank=rank, world_size=world)
    return Dist(rank, world, local_rank)


def setup_device(device: str) -> tuple[Dist, torch.device]:
    """(ranks, this rank's device) for `device` = auto, cpu, cuda or cuda:N."""
    d = init_distributed(resolve_device(device).type)  # the backend (nccl / gloo) before the rank's device
    return d, resolve_device(device, d.local_rank)


def shutdown_distributed() -> None:
    """Destroy the process group if this process started one (the CLI's last act under torchrun)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
