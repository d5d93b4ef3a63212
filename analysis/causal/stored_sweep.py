"""A sweep table stored with a model: FOLDER/causal/sweep_step{S}_{mode}.csv, the table `moe-explorer ablate
--out` writes per domain (one row per ablation and domain, "all" included). The shipped run has one, so its
causal numbers show at once instead of after minutes of forwards; `lookup` gives one ablation's rows in the
shape of `ablation.domain_deltas`."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from analysis.causal.ablation import MODES, Ablation

COLUMNS = ("ablation", "layer", "mode", "expert", "label", "n_docs", "n_tokens", "delta", "lo", "hi")
DOMAIN_COLUMNS = ["label", "n_docs", "n_tokens", "delta", "lo", "hi"]


def sweep_path(folder: str | os.PathLike, step: int | None, mode: str) -> Path:
    """Where a sweep of `mode` single-expert ablations at `step` is stored ("none" for a model without steps)."""
    return Path(folder) / "causal" / f"sweep_step{'none' if step is None else int(step)}_{mode}.csv"


def read_sweep(path: str | os.PathLike) -> pd.DataFrame:
    """The stored table, checked: ValueError naming the file when it is unreadable or not a sweep table."""
    path = Path(path)
    try:
        table = pd.read_csv(path)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise ValueError(f"{path}: not a readable CSV sweep table ({type(exc).__name__})") from None
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: not a sweep table (missing columns: {', '.join(missing)})")
    bad_mode = sorted(set(table["mode"].astype(str)) - set(MODES))
    if bad_mode:
        raise ValueError(f"{path}: unknown ablation modes {', '.join(bad_mode)}")
    try:
        table = table.astype({"layer": int, "expert": int, "n_docs": int, "n_tokens": int})
        table = table.astype({"delta": float, "lo": float, "hi": float})
    except (ValueError, TypeError):
        raise ValueError(f"{path}: a layer, expert, count or Δ that is not a number") from None
    return table[list(COLUMNS)]


def stored_sweeps(folder: str | os.PathLike, step: int | None) -> tuple[pd.DataFrame | None, list[str]]:
    """Every stored sweep at `step` in one table (each reference ablation once), and the one-line errors of the
    files that could not be read (those are left out, nothing else)."""
    frames, errors = [], []
    for mode in MODES:
        path = sweep_path(folder, step, mode)
        if path.is_file():
            try:
                frames.append(read_sweep(path))
            except ValueError as exc:
                errors.append(str(exc))
    if not frames:
        return None, errors
    table = pd.concat(frames, ignore_index=True).drop_duplicates(["layer", "mode", "expert", "label"])
    return table.reset_index(drop=True), errors


def lookup(table: pd.DataFrame | None, ablation: Ablation) -> pd.DataFrame | None:
    """One ablation's per-domain rows (label, n_docs, n_tokens, delta, lo, hi), or None when not stored."""
    if table is None:
        return None
    expert = -1 if ablation.expert is None else ablation.expert
    rows = table[(table["layer"] == ablation.layer) & (table["mode"] == ablation.mode) & (table["expert"] == expert)]
    return rows[DOMAIN_COLUMNS].reset_index(drop=True) if len(rows) else None
