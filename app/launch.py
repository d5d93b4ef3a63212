"""`moe-explorer app`: start the Streamlit app on a run (default: the shipped run).

Execs `python -m streamlit run app/main.py --server.headless true --server.fileWatcherType none
--browser.gatherUsageStats false --client.toolbarMode minimal --server.port P` with MOE_EXPLORER_RUN set
to the run directory, so every page opens on it; other runs under ./runs (or $MOE_EXPLORER_RUNS_DIR) stay
selectable.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import NoReturn

from moe_core.paths import default_run_path, is_run_dir  # torch-free: the server starts 1.5 s sooner

MAIN = Path(__file__).resolve().parent / "main.py"


def add_app_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", help="run directory to open (default: the shipped run sample_data/default_run)")
    parser.add_argument("--port", type=int, default=8501, help="port to serve on (default 8501)")
    parser.add_argument(
        "--hf", nargs="*", default=[], metavar="PATH", help="local Hugging Face MoE model folders to offer as runs"
    )
    parser.add_argument("--hf-device", default="auto", help="device for --hf models: cpu, cuda, cuda:N or auto")
    parser.add_argument("--hf-dtype", default="auto", help="dtype for --hf models: auto, float32, bfloat16, float16")


def app_command(port: int) -> list[str]:
    return [
        sys.executable, "-m", "streamlit", "run", str(MAIN),
        "--server.headless", "true",
        "--server.fileWatcherType", "none",
        "--browser.gatherUsageStats", "false",
        "--client.toolbarMode", "minimal",
        "--server.port", str(port),
    ]  # fmt: skip


def app_env(run: str | os.PathLike | None, hf: list[str] | None = None, device="auto", dtype="auto") -> dict[str, str]:
    env = dict(os.environ)
    if run is not None:
        env["MOE_EXPLORER_RUN"] = str(Path(run).resolve())
    if hf:
        env["MOE_EXPLORER_HF"] = os.pathsep.join(str(Path(p).resolve()) for p in hf)
        env["MOE_EXPLORER_HF_DEVICE"], env["MOE_EXPLORER_HF_DTYPE"] = device, dtype
    return env


def resolve_run(run: str | None) -> Path:
    """The run to open; ValueError with what to do when it is missing."""
    if run is None:
        path = default_run_path()
        if not is_run_dir(path):
            raise ValueError(
                f"the shipped run is missing ({path}); train one with `moe-explorer train --out runs/mine` "
                "and open it with `moe-explorer app --run runs/mine`"
            )
        return path
    path = Path(run)
    if not is_run_dir(path):
        raise ValueError(f"not a run directory (no run.json): {path}")
    return path


def run_app(args: argparse.Namespace) -> NoReturn:
    if not 0 < args.port < 65536:
        raise ValueError(f"--port must be in 1..65535, got {args.port}")
    for p in args.hf or []:
        if not (Path(p) / "config.json").is_file():
            raise ValueError(f"--hf {p}: not a Hugging Face model folder (no config.json)")
    # with --hf only, a missing shipped run is fine: the app opens on the HF model
    run = None if args.hf and args.run is None and not is_run_dir(default_run_path()) else resolve_run(args.run)
    print(f"moe-explorer app: opening {run or args.hf[0]} at http://localhost:{args.port}", flush=True)
    env = app_env(run, args.hf, getattr(args, "hf_device", "auto"), getattr(args, "hf_dtype", "auto"))
    cmd = app_command(args.port)
    os.execve(cmd[0], cmd, env)  # become the server: signals (Ctrl+C, SIGTERM) reach it directly, no orphan
