"""How `moe-explorer app` (app/cli/app.py) starts the Streamlit app on a run (default: the shipped run).

It execs `python -m streamlit run app/main.py --server.headless true --server.fileWatcherType none
--browser.gatherUsageStats false --client.toolbarMode minimal --runner.postScriptGC false --server.port P` with
MOE_EXPLORER_RUN set to the run directory, so every page opens on it; other runs under ./runs (or
$MOE_EXPLORER_RUNS_DIR) stay selectable. With `--dataset DIR` it opens on a routing dataset instead
(MOE_EXPLORER_DATASET).

`--runner.postScriptGC false`: by default Streamlit forces a full garbage collection after every script run, which
walks the ~590,000 objects of torch, plotly, pandas and the app (0.3 s of CPU per rerun on the 2-core box, every
page, measured in docs/BENCHMARKS.md); Python's own generational collector still runs.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from moe_core.paths import default_run_path, is_run_dir  # torch-free: the server starts 1.5 s sooner

MAIN = Path(__file__).resolve().parent / "main.py"


def app_command(port: int) -> list[str]:
    return [
        sys.executable, "-m", "streamlit", "run", str(MAIN),
        "--server.headless", "true",
        "--server.fileWatcherType", "none",
        "--browser.gatherUsageStats", "false",
        "--client.toolbarMode", "minimal",
        "--runner.postScriptGC", "false",  # no forced full collection after every rerun (docstring)
        "--server.port", str(port),
    ]  # fmt: skip


def app_env(
    run: str | os.PathLike | None,
    hf: list[str] | None = None,
    device="auto",
    dtype="auto",
    datasets: list[str] | None = None,
) -> dict[str, str]:
    env = dict(os.environ)
    if datasets:  # routing datasets: the app opens on the first
        env["MOE_EXPLORER_DATASET"] = os.pathsep.join(str(Path(p).resolve()) for p in datasets)
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
