"""`moe-explorer app`: start the Streamlit app on a run (default: the shipped run), see app/launch.py.

Torch-free, like all of this package's imports: the server starts 1.5 s sooner.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import NoReturn

from app.launch import app_command, app_env, resolve_run
from moe_core.paths import default_run_path, is_run_dir


def add_app_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", help="run directory to open (default: the shipped run sample_data/default_run)")
    parser.add_argument("--port", type=int, default=8501, help="port to serve on (default 8501)")
    parser.add_argument(
        "--hf", nargs="*", default=[], metavar="PATH", help="local Hugging Face MoE model folders to offer as runs"
    )
    parser.add_argument(
        "--dataset", nargs="*", default=[], metavar="DIR", help="routing datasets to open (`moe-explorer record`)"
    )
    parser.add_argument("--hf-device", default="auto", help="device for --hf models: cpu, cuda, cuda:N or auto")
    parser.add_argument("--hf-dtype", default="auto", help="dtype for --hf models: auto, float32, bfloat16, float16")


def run_app(args: argparse.Namespace) -> NoReturn:
    if not 0 < args.port < 65536:
        raise ValueError(f"--port must be in 1..65535, got {args.port}")
    for p in args.hf or []:
        if not (Path(p) / "config.json").is_file():
            raise ValueError(f"--hf {p}: not a Hugging Face model folder (no config.json)")
    datasets = getattr(args, "dataset", None) or []
    for p in datasets:
        from analysis.dataset.layout import read_manifest  # torch-free; a bad manifest is a one-line error here

        read_manifest(p)
    # with --hf or --dataset only, a missing shipped run is fine: the app opens on the model or the dataset
    others = args.hf or datasets
    run = None if others and args.run is None and not is_run_dir(default_run_path()) else resolve_run(args.run)
    opened = datasets[0] if datasets else run or args.hf[0]
    print(f"moe-explorer app: opening {opened} at http://localhost:{args.port}", flush=True)
    env = app_env(run, args.hf, getattr(args, "hf_device", "auto"), getattr(args, "hf_dtype", "auto"), datasets)
    cmd = app_command(args.port)
    os.execve(cmd[0], cmd, env)  # become the server: signals (Ctrl+C, SIGTERM) reach it directly, no orphan
