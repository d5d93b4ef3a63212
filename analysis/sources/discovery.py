"""Which model sources there are, and opening one.

`discover_sources` lists them by display name: the routing datasets given to the app ("dataset: NAME"), the run
given to it, the Hugging Face folders given to it,
the shipped default run ("default (shipped)"), the shipped balancing-strategy study ("study: NAME", history
only) and every run in the runs folder. It reads no environment: the app passes its settings in.
`open_source` turns a listed path into a `RunSource`, an `HFSource` or a `DatasetSource`; nothing else asks which
kind a path is.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from analysis.sources.base import ModelSource
from analysis.sources.dataset_source import DatasetSource
from analysis.sources.hf_source import HFSource
from analysis.sources.run_source import RunSource
from moe_core.paths import default_run_path, is_run_dir, study_runs_path
from moe_core.run import list_runs, resolve_run_dir

SHIPPED = "default (shipped)"


def is_hf_folder(path: str | Path) -> bool:
    """A Hugging Face model folder: config.json and no run.json."""
    return not is_run_dir(path) and (Path(path) / "config.json").is_file()


DATASET_FORMAT = "moe-explorer-dataset/"  # the manifest's format, any version (a wrong one errors on opening)


def is_dataset_dir(path: str | Path) -> bool:
    """A routing dataset: manifest.json whose "format" is a moe-explorer dataset's (a corpus folder's manifest
    has none)."""
    try:
        manifest = json.loads((Path(path) / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and str(manifest.get("format", "")).startswith(DATASET_FORMAT)


def study_runs() -> list[str]:
    """The shipped balancing-strategy study's runs (history only, for the Training-dynamics overlay)."""
    return [str(p.resolve()) for p in list_runs(study_runs_path())]


def discover_sources(
    run: str | Path | None, hf_folders: Sequence[str | Path], runs_dir: str | Path, datasets: Sequence[str | Path] = ()
) -> dict[str, str]:
    """{display name: absolute path} of every source, in this order: `datasets`, `run`, `hf_folders`, the shipped run,
    the shipped study, the runs in `runs_dir` (a symlink out of it is not offered; an unreadable folder
    gives nothing). A path is listed once, under its first name."""
    found: dict[str, str] = {}
    shipped = default_run_path().resolve()

    def add(path: Path, name: str | None = None) -> None:
        path = path.resolve()
        if is_run_dir(path) and str(path) not in found.values():
            label = SHIPPED if path == shipped else name or path.name
            while label in found:
                label += "'"
            found[label] = str(path)

    for folder in datasets:  # routing datasets given with `moe-explorer app --dataset DIR`: the app opens on the first
        folder = Path(folder).resolve()
        if is_dataset_dir(folder) and str(folder) not in found.values():
            found[f"dataset: {folder.name}"] = str(folder)
    if run:  # `moe-explorer app` sets it (also to the shipped run)
        add(Path(run))
    for folder in hf_folders:  # local Hugging Face MoE folders given with `moe-explorer app --hf PATH`
        folder = Path(folder).resolve()
        if is_hf_folder(folder) and str(folder) not in found.values():
            found[f"HF: {folder.name}"] = str(folder)
    add(shipped)
    for child in study_runs():
        add(Path(child), f"study: {Path(child).name}")
    root = Path(runs_dir).resolve()
    try:
        for child in list_runs(root):
            try:
                resolve_run_dir(root, str(child.relative_to(root)))
            except ValueError:  # a symlink out of the runs folder: not offered
                continue
            add(child)
    except OSError:  # an unreadable runs folder: nothing from it
        pass
    return found


def open_source(
    path: str | Path,
    *,
    torch_threads: int | None = None,
    hf_device: str = "auto",
    hf_dtype: str = "auto",
    duckdb_memory: str = "1GB",
    duckdb_threads: int = 2,
) -> ModelSource:
    """The source at `path`: a `RunSource` for a run directory, an `HFSource` for a Hugging Face folder, a
    `DatasetSource` for a routing dataset (queried by DuckDB with `duckdb_memory` and `duckdb_threads`).
    Opening reads nothing yet (a broken run says so on first use); ValueError when `path` is none of them."""
    if is_run_dir(path):
        return RunSource(path, torch_threads=torch_threads)
    if is_hf_folder(path):
        return HFSource(path, device=hf_device, dtype=hf_dtype)
    if is_dataset_dir(path):
        return DatasetSource(path, memory_limit=duckdb_memory, threads=duckdb_threads)
    raise ValueError(f"not a run directory or a Hugging Face folder or a routing dataset: {path}")
