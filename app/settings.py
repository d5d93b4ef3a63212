"""The app's settings from the environment, read in one place and passed down as arguments.

MOE_EXPLORER_RUN       the run given to `moe-explorer app --run` (first in the sidebar)
MOE_EXPLORER_HF        Hugging Face model folders (os.pathsep-separated; `moe-explorer app --hf`)
MOE_EXPLORER_DATASET   routing datasets (os.pathsep-separated; `moe-explorer app --dataset`): the app opens on the first
MOE_EXPLORER_DUCKDB_MEMORY / MOE_EXPLORER_DUCKDB_THREADS   DuckDB's memory limit and threads on a dataset (1GB, 2)
MOE_EXPLORER_RUNS_DIR  where runs are found and the Train page writes new ones (default ./runs)
MOE_EXPLORER_HF_DEVICE / MOE_EXPLORER_HF_DTYPE   how a Hugging Face model is loaded (default auto)
MOE_EXPLORER_TORCH_THREADS   torch threads for our runs' models (default 1)
MOE_EXPLORER_WARM_UMAP  0 turns off compiling UMAP in the background when Router geometry opens
MOE_EXPLORER_CLASS_DB  the live classes' SQLite file (default: moe-explorer/classes.sqlite3 in the user's data folder)
MOE_EXPLORER_CLASS_HOURS  how long a live class lasts after its last change (default 4)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def run_path() -> str | None:
    return os.environ.get("MOE_EXPLORER_RUN") or None


def hf_folders() -> tuple[str, ...]:
    return tuple(p for p in os.environ.get("MOE_EXPLORER_HF", "").split(os.pathsep) if p)


def datasets() -> tuple[str, ...]:
    return tuple(p for p in os.environ.get("MOE_EXPLORER_DATASET", "").split(os.pathsep) if p)


def duckdb_memory() -> str:
    return os.environ.get("MOE_EXPLORER_DUCKDB_MEMORY", "1GB")


def duckdb_threads() -> int:
    return int(os.environ.get("MOE_EXPLORER_DUCKDB_THREADS", "2"))


def runs_dir() -> Path:
    return Path(os.environ.get("MOE_EXPLORER_RUNS_DIR") or "runs")


def hf_device() -> str:
    return os.environ.get("MOE_EXPLORER_HF_DEVICE", "auto")


def hf_dtype() -> str:
    return os.environ.get("MOE_EXPLORER_HF_DTYPE", "auto")


def torch_threads() -> int:
    # one torch thread: routing 2,000 tokens is small work, and on a busy 2-core box a second (spinning) OpenMP
    # thread competes with the server and the browser (bench/app_timings.py, route 2k tokens: 2.87 vs 3.05 s
    # quiet, 3.4 vs 5.0 s at load ~2.6).
    return int(os.environ.get("MOE_EXPLORER_TORCH_THREADS", "1"))


def warm_umap() -> bool:
    return os.environ.get("MOE_EXPLORER_WARM_UMAP", "1") != "0"


def class_db() -> Path:
    """Where live classes are kept: one file shared by every session and kept across server restarts."""
    if os.environ.get("MOE_EXPLORER_CLASS_DB"):
        return Path(os.environ["MOE_EXPLORER_CLASS_DB"])
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "moe-explorer" / "classes.sqlite3"


def class_hours() -> float:
    return float(os.environ.get("MOE_EXPLORER_CLASS_HOURS", "4"))
