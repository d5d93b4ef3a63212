"""Recording on several workers (GPUs or machines) into one dataset: who records which shard, and the merge.

Launched by torchrun, which sets RANK / WORLD_SIZE / LOCAL_RANK (and MASTER_ADDR / MASTER_PORT) in every
process; without them this is one worker. Every worker reads the same document stream and cuts it into the
same shards (the cut depends only on the inputs and the settings), and records shard k when
k % world == rank: shards alternate, so workers stay balanced whatever the corpus order, and no one has to
hand out work. A worker writes its own files (`part-wRRR-s...`) and its own `progress/worker-RRR.jsonl`
through `DatasetWriter`; the manifest merges every worker's log (`finalize`).

The one collective is a barrier on a gloo process group (CPU sockets; GPUs do not take part): at the
start, after rank 0 has checked the folder and made it a dataset folder, before any worker opens it; at
the end, so that rank 0 marks the dataset complete only when every worker has finished. A worker that
dies takes torchrun's group down with it; rerunning the same command with --resume and the same number
of workers resumes each worker's share (its finished shards are in its own progress log).

Without a shared folder (each machine records into its own copy of DIR), copy the copies into one folder
afterwards (their files never collide: worker ids are in the names) and merge them with `complete(DIR)`
(`python -m analysis.dataset.workers DIR N_WORKERS`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from analysis.dataset import layout

# The end barrier waits for the slowest worker; shards alternate so the wait is about one shard's time,
# but a slow machine may lag hours behind on a large corpus.
BARRIER_TIMEOUT = timedelta(hours=48)


@dataclass(frozen=True)
class Workers:
    """This process's place among the workers of one recording."""

    rank: int = 0  # worker id: in shard file names and the progress log's name
    world: int = 1  # number of workers
    local_rank: int = 0  # rank on this machine: the GPU index when recording on "cuda"

    def __post_init__(self) -> None:
        if self.world < 1 or not 0 <= self.rank < self.world:
            raise ValueError(f"worker {self.rank} of {self.world}: need 0 <= RANK < WORLD_SIZE")

    @property
    def on(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def owns(self, shard_index: int) -> bool:
        """Whether this worker records shard `shard_index` of the stream (they alternate)."""
        return shard_index % self.world == self.rank

    def device(self, device: str) -> str:
        """The device this worker records on: "cuda"/"auto" with a GPU -> this machine's GPU `local_rank`."""
        from moe_core.devices import resolve_device

        return str(resolve_device(device, self.local_rank))


def workers_from_env(environ: Mapping[str, str] | None = None) -> Workers:
    """The workers torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK); one worker when WORLD_SIZE is unset."""
    from moe_core.devices import torchrun_ranks  # torch: only once a recording starts

    try:
        rank, world, local_rank = torchrun_ranks(environ)
    except (KeyError, ValueError) as exc:
        raise ValueError(f"bad torchrun environment (RANK / WORLD_SIZE / LOCAL_RANK): {exc}") from None
    return Workers(rank=rank, world=world, local_rank=local_rank)


def barrier(workers: Workers) -> None:
    """Wait for every worker (gloo, started on first use); nothing with one worker."""
    if not workers.on:
        return
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="gloo", rank=workers.rank, world_size=workers.world, timeout=BARRIER_TIMEOUT)
    dist.barrier()


def start(workers: Workers, out: str | os.PathLike, resume: bool) -> None:
    """Before any worker opens the dataset: rank 0 refuses an unfinished dataset without `resume` and
    creates the folder's progress/ (so a worker opening it while rank 0 writes the first manifest sees a
    dataset, not a foreign folder); then all wait for each other. Every worker then opens the dataset as a
    resume: they all write the same manifest fields, which the writer checks. Nothing with one worker."""
    if not workers.on:
        return
    if workers.main:
        manifest = Path(out) / layout.MANIFEST
        if manifest.is_file() and not resume and not layout.read_manifest(out).get("complete"):
            raise layout.DatasetError(f"{out} already holds an unfinished dataset; add --resume to continue it")
        (Path(out) / layout.PROGRESS_DIR).mkdir(parents=True, exist_ok=True)
    barrier(workers)


def finish(workers: Workers, out: str | os.PathLike, log: Callable[[str], None] = print) -> dict[str, Any] | None:
    """After this worker's last shard: wait for all, then rank 0 merges every progress log into the manifest
    and marks it complete (returned) when it finds every worker's log; other workers return None. Ends the
    process group. Nothing with one worker (its recorder completes the dataset itself)."""
    if not workers.on:
        return None
    progress = layout.progress_path(out, workers.rank)
    progress.parent.mkdir(parents=True, exist_ok=True)
    progress.touch()  # an empty log says "done, no shard": rank 0 can tell a shared folder from separate ones
    barrier(workers)
    manifest = None
    if workers.main:
        missing = missing_workers(out, workers.world)
        manifest = complete(out, mark=not missing)
        if missing:
            log(
                f"{out}: no progress log of worker(s) {', '.join(map(str, missing))} here (no shared folder?): "
                f"gather every machine's {Path(out).name}/ into one folder, then: python -m analysis.dataset.workers "
                f"DIR {workers.world}"
            )
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
    return manifest


def missing_workers(out: str | os.PathLike, world: int) -> list[int]:
    """Workers 0..world-1 without a progress log in `out`."""
    return [r for r in range(world) if not layout.progress_path(out, r).is_file()]


def complete(out: str | os.PathLike, mark: bool = True) -> dict[str, Any]:
    """Merge the progress logs in `out` into its manifest and (mark) mark it complete: the writer's
    `finalize`, opened as worker 0 with the manifest's own settings. Also for datasets recorded on machines
    without a shared folder, once their copies are gathered into one."""
    from analysis.dataset.writer import DatasetWriter

    m = layout.read_manifest(out)
    writer = DatasetWriter(
        out, m["source"], 0, steps=m["steps"], inputs=m["inputs"], config=m["config"], sample=m["sample"]
    )
    return writer.finalize(complete=True if mark else None)


if __name__ == "__main__":  # python -m analysis.dataset.workers DIR N: merge the gathered folders of N workers
    import sys

    if len(sys.argv) != 3:
        sys.exit("usage: python -m analysis.dataset.workers DIR N_WORKERS")
    root, world = sys.argv[1], int(sys.argv[2])
    if missing := missing_workers(root, world):
        sys.exit(f"{root}: no progress log of worker(s) {', '.join(map(str, missing))}: copy their folders in first")
    done = complete(root)
    print(f"{root}: {len(done['shards'])} shards, {sum(s['tokens'] for s in done['shards'])} tokens, complete")
