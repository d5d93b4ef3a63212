"""Where the shipped data lies. No torch here: `moe-explorer app` finds the shipped run before it starts the
server, and importing torch would add ~1.5 s to the app's cold start."""

from __future__ import annotations

import os
from pathlib import Path

SAMPLE_DATA = Path(__file__).resolve().parents[1] / "sample_data"  # next to the `moe_core` package


def is_run_dir(path: str | os.PathLike) -> bool:
    return (Path(path) / "run.json").is_file()


def default_run_path() -> Path:
    """The shipped run: `sample_data/default_run`."""
    return SAMPLE_DATA / "default_run"


def study_runs_path() -> Path:
    """The shipped balancing-strategy study: one run per strategy, run.json + history only (no weights)."""
    return SAMPLE_DATA / "balancing_study"
