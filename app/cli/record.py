"""`moe-explorer record [--run RUN | --hf PATH] INPUT... --out DIR [--step S ...] [--resume]`

Records the routing of a corpus of any size into a routing dataset (a folder of Parquet shards and a
manifest; docs/ARCHITECTURE.md), in bounded memory, with a progress bar. INPUTs are text files, folders, and
JSONL/Parquet files with a `text` column (optional `label`, `doc_id`). After a crash or Ctrl-C, the same
command with --resume keeps the finished shards and records the rest.
"""

from __future__ import annotations

import argparse
import sys

from analysis.dataset import workers
from analysis.dataset.record import RecordConfig, record_dataset
from analysis.hf import DTYPES
from app.cli.model_source import open_run

DEFAULTS = RecordConfig()


def add_record_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="text files, folders, .jsonl or .parquet files")
    p.add_argument("--out", required=True, metavar="DIR", help="the dataset folder (new, or with --resume)")
    p.add_argument("--run", default=None, help="run directory (default: the shipped run)")
    p.add_argument("--hf", default=None, metavar="PATH", help="a local Hugging Face MoE model folder instead")
    p.add_argument("--hf-device", default="auto", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--hf-dtype", default="auto", choices=["auto", *DTYPES], help="auto: bfloat16 on GPU")
    p.add_argument(
        "--step", type=int, action="append", default=None, metavar="S",
        help="checkpoint step to record at; repeat for several (default: the latest)",
    )  # fmt: skip
    p.add_argument("--shard-tokens", type=int, default=DEFAULTS.shard_tokens, help="tokens per shard")
    p.add_argument("--batch-tokens", type=int, default=DEFAULTS.batch_tokens, help="tokens per model call")
    p.add_argument("--sample", type=int, default=DEFAULTS.max_hidden, help="router inputs kept (stratified sample)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted recording into --out")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def open_source(args: argparse.Namespace):
    """The model source of --run (default: the shipped run) or --hf; ValueError (one line) for both."""
    if args.hf and args.run:
        raise ValueError("give --run or --hf, not both")
    if args.hf:
        if args.step:
            raise ValueError("a Hugging Face folder has no steps: drop --step")
        from analysis.sources import HFSource

        return HFSource(args.hf, device=args.hf_device, dtype=args.hf_dtype)
    from analysis.sources import RunSource

    run = open_run(args.run)  # one-line error for a missing or broken run
    return RunSource(run.path, torch_threads=args.threads)


def run_record(args: argparse.Namespace) -> int:
    config = RecordConfig(
        batch_tokens=args.batch_tokens, shard_tokens=args.shard_tokens, max_hidden=args.sample, steps=args.step
    )
    team = workers.workers_from_env()  # torchrun's RANK / WORLD_SIZE: this process records every world-th shard
    if team.on and args.hf:
        args.hf_device = team.device(args.hf_device)  # "auto"/"cuda" -> this machine's GPU LOCAL_RANK
    source = open_source(args)
    workers.start(team, args.out, args.resume)
    try:
        result = record_dataset(
            source,
            args.inputs,
            args.out,
            config,
            resume=args.resume or team.on,  # start() checked the folder; every worker opens it as a resume
            worker=team.rank,
            n_workers=team.world,
            progress=not args.no_progress and team.main,
            log=lambda line: print(line, file=sys.stderr),
        )
    except KeyboardInterrupt:
        print(f"{args.out}: finished shards are kept; the same command with --resume continues", file=sys.stderr)
        raise
    workers.finish(team, args.out, log=lambda line: print(line, file=sys.stderr))  # rank 0 merges all logs
    if result.status != "already complete" and team.main:
        print(f"wrote {result.out}")
    return 0
