"""The balancing-strategy study: one model size, data, seed and step count; only the balancing differs.

    python -m scripts.balancing_study --out runs/study --steps 1000 --seeds 0 1 2   # 7 runs per seed
    python -m scripts.balancing_study --out runs/study --ship sample_data/balancing_study --table

Runs go to OUT/seed{S}/{strategy}, each a normal run directory. `--ship` copies the seed-0 runs'
run.json + history (no weights) so the Training-dynamics page can overlay them; `--table` prints the
Markdown tables of docs/FINDINGS.md (after Wang et al. 2024, Table 2): final validation perplexity and
MaxVio_global per strategy (mean ± std over seeds), and seed 0's MaxVio_batch along training.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
from pathlib import Path

import numpy as np

from moe_core.config import ModelConfig, preset
from moe_core.files import read_jsonl
from moe_core.run import list_runs, load_run
from moe_core.training import TrainConfig, corpus_docs, train

# name -> balancing settings (BalanceConfig fields); everything else is identical across runs
STRATEGIES: dict[str, dict[str, float]] = {
    "aux_free_u1e-3": {"bias_rate": 1e-3},
    "switch_a1e-3": {"bias_rate": 0.0, "switch_alpha": 1e-3},
    "switch_a1e-2": {"bias_rate": 0.0, "switch_alpha": 1e-2},
    "none": {"bias_rate": 0.0},
    "aux_free_u1e-3+seq": {"bias_rate": 1e-3, "seq_alpha": 1e-4},
    "aux_free_u1e-4": {"bias_rate": 1e-4},
    "aux_free_u1e-2": {"bias_rate": 1e-2},
}


def study_config(strategy: str, base: str = "small") -> ModelConfig:
    cfg = preset(base)
    cfg.moe.balance = dataclasses.replace(cfg.moe.balance, **STRATEGIES[strategy])
    return ModelConfig.from_dict(cfg.to_dict())  # re-validate


def run_study(out: Path, steps: int, seeds: list[int], batch_size: int = 16) -> None:
    docs_train, docs_val, info = corpus_docs(None, seed=0)  # one corpus; the seed varies init and data order
    for seed in seeds:
        for name in STRATEGIES:
            run_dir = out / f"seed{seed}" / name
            if (run_dir / "run.json").exists():
                print(f"{run_dir}: exists, skipped")
                continue
            tcfg = TrainConfig(
                steps=steps,
                batch_size=batch_size,
                seed=seed,
                eval_every=max(steps // 10, 1),
                ckpt_every=0,
                warmup_steps=50,
            )
            train(run_dir, study_config(name), tcfg, docs_train, docs_val, progress=False, corpus_info=info)
            print(f"{run_dir}: done")


def summarise(run_dir: Path) -> dict:
    """Final validation PPL and MaxVio_global (mean over layers), and MaxVio_batch over the last 10% of steps."""
    final = read_jsonl(run_dir / "history" / "eval.jsonl")[-1]
    rows = read_jsonl(run_dir / "history" / "train.jsonl")
    tail = rows[-max(len(rows) // 10, 1) :]
    return {
        "strategy": run_dir.name,
        "val_ppl": final["val_ppl"],
        "maxvio_global": float(np.mean(final["maxvio_global"])),
        "maxvio_batch_tail": float(np.mean([np.mean(r["maxvio_batch"]) for r in tail])),
        "steps": final["step"],
    }


def _ordered(runs: list[Path]) -> list[Path]:
    return sorted(runs, key=lambda p: list(STRATEGIES).index(p.name) if p.name in STRATEGIES else 99)


def markdown_table(out: Path) -> str:
    """Final val PPL, MaxVio_global and tail MaxVio_batch per strategy: mean ± std over the seeds found."""
    rows = [summarise(run_dir) for run_dir in list_runs(out)]
    lines = [
        "| strategy | seeds | validation PPL | MaxVio_global | MaxVio_batch (last 10% of steps) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in STRATEGIES:
        mine = [r for r in rows if r["strategy"] == name]
        if mine:
            cells = [
                f"{np.mean([r[k] for r in mine]):.{d}f} ± {np.std([r[k] for r in mine]):.{d}f}"
                for k, d in (("val_ppl", 2), ("maxvio_global", 3), ("maxvio_batch_tail", 3))
            ]
            lines.append(f"| {name} | {len(mine)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def curve_table(out: Path, points: int = 8, window: int = 25) -> str:
    """MaxVio_batch (mean over layers, averaged over `window` steps) at `points` places along training."""
    runs = _ordered(list_runs(out))
    curves = {}
    for run_dir in runs:
        rows = read_jsonl(run_dir / "history" / "train.jsonl")
        curves[run_dir.name] = np.array([np.mean(r["maxvio_batch"]) for r in rows])
    n = min(len(c) for c in curves.values())
    ends = np.linspace(window, n, points).astype(int)
    lines = ["| strategy | " + " | ".join(f"step {e}" for e in ends) + " |", "|---|" + "---:|" * len(ends)]
    for name, c in curves.items():
        lines.append(f"| {name} | " + " | ".join(f"{c[e - window : e].mean():.2f}" for e in ends) + " |")
    return "\n".join(lines)


def ship(out: Path, dest: Path) -> None:
    """Copy run.json + history of the study's runs at `out` (no weights, no token cache)."""
    if dest.exists():
        shutil.rmtree(dest)
    for run_dir in list_runs(out):
        load_run(run_dir)  # a valid run, or a clear error
        (dest / run_dir.name).mkdir(parents=True)
        shutil.copy2(run_dir / "run.json", dest / run_dir.name / "run.json")
        shutil.copytree(run_dir / "history", dest / run_dir.name / "history")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path, help="folder holding one run per strategy")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--ship", type=Path, help="copy histories (no weights) here")
    p.add_argument("--table", action="store_true", help="print the Markdown results table")
    args = p.parse_args(argv)
    if not args.ship and not args.table:
        run_study(args.out, args.steps, args.seeds, args.batch_size)
    if args.ship:
        ship(args.out / "seed0", args.ship)
    if args.table:
        print(markdown_table(args.out))
        print()
        print(curve_table(args.out / "seed0"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
