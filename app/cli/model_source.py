"""Where `moe-explorer route` and `report` get their model and texts: a run's checkpoint (default: the shipped
run) or, with --hf PATH, a local Hugging Face MoE model (app/cli/hf_args.py, docs/HF_MODELS.md).

User errors raise ValueError or OSError with one line; app/cli prints it without a traceback.
"""

from __future__ import annotations

import argparse
from typing import Any

from app.cli.hf_args import add_hf_arguments


def add_source_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", default=None, help="run directory (default: the shipped run)")
    p.add_argument("--checkpoint", type=int, default=None, metavar="STEP", help="checkpoint step (default: latest)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (cuda when available)")
    p.add_argument("--batch-size", type=int, default=None, help="windows per forward (default: ~4096 tokens)")
    add_hf_arguments(p)  # --hf PATH: a local Hugging Face MoE model instead of a run (docs/HF_MODELS.md)


def check_source(args: argparse.Namespace) -> None:
    if getattr(args, "hf", None) and (args.run or args.checkpoint is not None):
        raise ValueError("give --run/--checkpoint or --hf, not both")


def open_run(path: str | None):
    """The run at `path`, or the shipped default run; ValueError (one line) when there is none."""
    from moe_core.paths import default_run_path
    from moe_core.run import load_run

    if path is None:
        default = default_run_path()
        if not default.is_dir():
            raise ValueError(f"no --run given and the default run {default} does not exist yet")
        return load_run(default)
    return load_run(path)


def load_checkpoint_model(run, checkpoint: int | None, device: str):
    """(model, tokenizer, step) of the run's checkpoint (default: the latest)."""
    from moe_core.devices import resolve_device

    step = run.latest_step() if checkpoint is None else checkpoint
    model = run.load_model(step, device=resolve_device(device))  # ValueError if the run/step has no checkpoint
    return model, run.tokenizer(), step


def docs_from_files(files: list[str]) -> list[Any]:
    from moe_core.corpus import docs_from_paths

    return docs_from_paths(files)  # one-line ValueError for missing, empty or binary files


def record_run(run, model, tok, step, docs, batch_size):
    from analysis.recording import record

    return record(model, tok, docs, batch_size=batch_size, meta={"run": run.name, "step": step})
