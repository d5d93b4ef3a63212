"""`moe-explorer stats DIR [--step S] [--out FOLDER]`: routing statistics of a routing dataset, out of core.

Prints one line per MoE layer (load share min/max, MaxVio, dead experts, load entropy H/log E, router entropy)
computed by DuckDB over the dataset's Parquet shards (analysis.dataset.queries); with --out it also writes the
full tables: summary, load, co-activation (all pairs, P(j|i), lift), domain specialization, mutual information,
token specialization, consecutive-token rate and saturation across steps, as CSV (or Parquet).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd


def add_stats_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", metavar="DIR", help="a routing dataset (written by `moe-explorer record`)")
    p.add_argument("--step", default=None, help="step to analyse (default: the last recorded; 'none' for HF)")
    p.add_argument("--out", default=None, metavar="FOLDER", help="write the full tables into this folder")
    p.add_argument("--format", choices=("csv", "parquet"), default="csv", help="format of --out tables")
    p.add_argument("--memory-limit", default="1GB", help="DuckDB memory limit; beyond it, it spills (default 1GB)")
    p.add_argument("--threads", type=int, default=2, help="DuckDB threads (default 2)")
    p.add_argument("--temp-dir", default=None, help="DuckDB spill folder (default: in the system temp folder)")


def pick_step(steps: list, wanted: str | None):
    """The step to analyse: `wanted` ("none" or a number) if recorded, else the last; ValueError otherwise."""
    if wanted is None:
        if not steps:
            raise ValueError("the dataset records no step")
        return steps[-1]
    value = None if wanted.lower() == "none" else int(wanted) if wanted.lstrip("-").isdigit() else wanted
    if value not in steps:
        shown = ", ".join("none" if s is None else str(s) for s in steps)
        raise ValueError(f"--step {wanted}: not recorded in this dataset (steps: {shown})")
    return value


def format_summary(summary: pd.DataFrame) -> str:
    """The per-layer summary as a fixed-width text table."""
    cols = {
        "layer": ("layer", "{:d}"),
        "min_share": ("min share", "{:.2%}"),
        "max_share": ("max share", "{:.2%}"),
        "max_vio": ("MaxVio", "{:.3f}"),
        "dead_experts": ("dead", "{:d}"),
        "load_entropy": ("load H/logE", "{:.3f}"),
        "router_entropy": ("router H (nats)", "{:.3f}"),
        "consecutive_top1": ("same top-1 next", "{:.2%}"),
    }
    shown = [c for c in cols if c in summary]
    rows = [[cols[c][0] for c in shown]]
    for _, r in summary.iterrows():
        rows.append([cols[c][1].format(int(r[c]) if cols[c][1] == "{:d}" else float(r[c])) for c in shown])
    widths = [max(len(row[i]) for row in rows) for i in range(len(shown))]
    return "\n".join("  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in rows)


def full_tables(q, step) -> dict[str, pd.DataFrame]:
    """Every table of the query suite at `step` (domain tables only when the documents carry labels)."""
    from analysis.tables import matrix_frame

    L, E = q.n_layers, q.n_experts
    load = q.load(step)
    out = {"summary": q.summary(step), "load": matrix_frame(load, "layer", "expert", "load")}
    co = q.coactivation(step)
    pairs = pd.DataFrame(
        {
            "layer": np.repeat(np.arange(L), E * E),
            "expert_i": np.tile(np.repeat(np.arange(E), E), L),
            "expert_j": np.tile(np.arange(E), L * E),
            "count": co.counts_LEE.ravel(),
            "p_j_given_i": co.cond_LEE.ravel(),
            "lift": co.lift_LEE.ravel(),
        }
    )
    out["coactivation"] = pairs
    try:
        out["domain_specialization"] = q.domain_specialization(step)
    except ValueError:  # no labels: no domain table
        pass
    out["mutual_information"] = q.mutual_information(step)
    out["token_specialization"] = q.token_specialization(step)
    out["consecutive"] = q.consecutive(step)
    if len([s for s in q.steps() if s is not None]) > 1:
        out["saturation"] = q.saturation()
    return out


def run_stats(args: argparse.Namespace) -> int:
    from analysis.dataset.queries import DatasetQueries, QueryConfig

    config = QueryConfig(memory_limit=args.memory_limit, threads=args.threads, temp_directory=args.temp_dir)
    q = DatasetQueries(args.dir, config)
    try:
        step = pick_step(q.steps(), args.step)
        summary = q.summary(step)
        name = q.manifest["source"].get("name") or Path(args.dir).name
        T = int(summary["n_tokens"].iloc[0])
        print(
            f"{name}, step {'none' if step is None else step}: {T:,} tokens, {q.n_layers} MoE layers, "
            f"{q.n_experts} experts, top-{q.top_k} (shares are of the {T * q.top_k:,} routings of a layer)"
        )
        print(format_summary(summary))
        if args.out:
            folder = Path(args.out)
            folder.mkdir(parents=True, exist_ok=True)
            for table_name, table in full_tables(q, step).items():
                path = folder / f"{table_name}.{args.format}"
                if args.format == "csv":
                    table.to_csv(path, index=False)
                else:
                    table.to_parquet(path, index=False)
                print(f"wrote {path} ({len(table):,} rows)")
    finally:
        q.close()
    return 0
