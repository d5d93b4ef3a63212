"""The balancing-strategy study: one model size, data, seed and step count; only the balancing differs.

    python -m scripts.balancing_study --out runs/study --steps 1000 --seeds 0 1 2 3   # 7 runs per seed
    python -m scripts.balancing_study --out runs/study --ship sample_data/balancing_study
    python -m scripts.balancing_study --table sample_data/balancing_study [--write docs/FINDINGS.md]

Runs go to OUT/seed{S}/{strategy}, each a normal run directory. `--ship` copies the seed-0 runs'
run.json + history (no weights) so the Training-dynamics page can overlay them, and every seed's final
summary as STRATEGY/final_seed{S}.json (a few hundred bytes each). `--table FOLDER` prints the Markdown of
docs/FINDINGS.md §3 from those shipped files alone (after Wang et al. 2024, Table 2): final validation
perplexity, MaxVio_global and MaxVio_batch per strategy (mean ± sample std over seeds, ddof = 1), seed 0's
MaxVio_batch along training, and the sentences that quote them; `--write DOC` puts it into DOC's
generated block instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
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


def run_study(
    out: Path, steps: int, seeds: list[int], batch_size: int = 16, strategies: list[str] | None = None
) -> None:
    """Train OUT/seed{S}/{strategy} for each seed and strategy (default: all, in STRATEGIES order); a run whose
    run.json exists is skipped, so several processes can share the work."""
    docs_train, docs_val, info = corpus_docs(None, seed=0)  # one corpus; the seed varies init and data order
    for seed in seeds:
        for name in strategies or STRATEGIES:
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


def summarise(run_dir: Path, seed: int | None = None) -> dict:
    """Final validation PPL and MaxVio_global (per layer and mean over layers), and MaxVio_batch (mean over
    layers) averaged over the last 10% of training steps."""
    final = read_jsonl(run_dir / "history" / "eval.jsonl")[-1]
    rows = read_jsonl(run_dir / "history" / "train.jsonl")
    tail = rows[-max(len(rows) // 10, 1) :]
    return {
        "strategy": run_dir.name,
        "seed": seed,
        "steps": final["step"],
        "val_loss": final.get("val_loss"),
        "val_ppl": final["val_ppl"],
        "maxvio_global_per_layer": list(final["maxvio_global"]),
        "maxvio_global": float(np.mean(final["maxvio_global"])),
        "maxvio_batch_tail": float(np.mean([np.mean(r["maxvio_batch"]) for r in tail])),
        "tail_steps": len(tail),
    }


def _ordered(runs: list[Path]) -> list[Path]:
    return sorted(runs, key=lambda p: list(STRATEGIES).index(p.name) if p.name in STRATEGIES else 99)


def finished(run_dir: Path) -> bool:
    """Whether the run reached its configured step count with a final validation (an unfinished run's numbers
    are not the study's)."""
    steps = load_run(run_dir).info.get("train", {}).get("steps")
    evals = read_jsonl(run_dir / "history" / "eval.jsonl") if (run_dir / "history" / "eval.jsonl").exists() else []
    return bool(evals) and steps is not None and evals[-1]["step"] == steps


def study_summaries(out: Path) -> list[dict]:
    """`summarise` of every finished run under OUT/seed{S}/ (seed from the folder name)."""
    rows = []
    for run_dir in list_runs(out):
        if finished(run_dir):
            seed = run_dir.parent.name.removeprefix("seed")
            rows.append(summarise(run_dir, int(seed) if seed.isdigit() else None))
    return rows


def write_summaries(rows: list[dict], dest: Path) -> None:
    """One small JSON per (strategy, seed): DEST/STRATEGY/final_seed{S}.json."""
    for r in rows:
        (dest / r["strategy"]).mkdir(parents=True, exist_ok=True)
        (dest / r["strategy"] / f"final_seed{r['seed']}.json").write_text(json.dumps(r, indent=1) + "\n")


def load_summaries(folder: Path) -> list[dict]:
    """The shipped final summaries: FOLDER/STRATEGY/final_seed*.json."""
    return [json.loads(p.read_text()) for p in sorted(Path(folder).glob("*/final_seed*.json"))]


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and SAMPLE standard deviation (ddof = 1; NaN for one value) of the seeds' results."""
    v = np.asarray(values, dtype=float)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else float("nan")


def strategy_stats(rows: list[dict]) -> dict[str, dict[str, tuple[float, float]]]:
    """{strategy: {"seeds": n, key: (mean, sample std)}} for val_ppl, maxvio_global, maxvio_batch_tail."""
    out = {}
    for name in STRATEGIES:
        mine = [r for r in rows if r["strategy"] == name]
        if mine:
            keys = ("val_ppl", "maxvio_global", "maxvio_batch_tail")
            out[name] = {"seeds": len(mine), **{k: mean_sd([r[k] for r in mine]) for k in keys}}
    return out


def markdown_table(rows: list[dict]) -> str:
    """Final val PPL, MaxVio_global and tail MaxVio_batch per strategy: mean ± sample std (ddof = 1) over seeds."""
    lines = [
        "| strategy | seeds | validation PPL | MaxVio_global | MaxVio_batch (last 10% of steps) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, st in strategy_stats(rows).items():
        cells = []
        for k, d in (("val_ppl", 2), ("maxvio_global", 3), ("maxvio_batch_tail", 3)):
            m, sd = st[k]
            cells.append(f"{m:.{d}f} ± {sd:.{d}f}" if np.isfinite(sd) else f"{m:.{d}f}")
        lines.append(f"| {name} | {st['seeds']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def curves(folder: Path, points: int = 8, window: int = 25) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(steps (points,), {strategy: MaxVio_batch (mean over layers) averaged over the `window` steps before
    each of those steps}) of the runs at `folder` (seed 0's shipped histories)."""
    full = {}
    for run_dir in _ordered(list_runs(folder)):
        rows = read_jsonl(run_dir / "history" / "train.jsonl")
        full[run_dir.name] = np.array([np.mean(r["maxvio_batch"]) for r in rows])
    n = min(len(c) for c in full.values())
    ends = np.linspace(window, n, points).astype(int)
    return ends, {name: np.array([c[e - window : e].mean() for e in ends]) for name, c in full.items()}


def curve_table(folder: Path, points: int = 8, window: int = 25) -> str:
    """MaxVio_batch (mean over layers, averaged over `window` steps) at `points` places along training."""
    ends, values = curves(folder, points, window)
    lines = ["| strategy | " + " | ".join(f"step {e}" for e in ends) + " |", "|---|" + "---:|" * len(ends)]
    for name, v in values.items():
        lines.append(f"| {name} | " + " | ".join(f"{x:.2f}" for x in v) + " |")
    return "\n".join(lines)


def _span(v, fmt: str) -> str:
    lo, hi = format(min(v), fmt), format(max(v), fmt)
    return lo if lo == hi else f"{lo}–{hi}"


def _pm(stat: tuple[float, float], fmt: str) -> str:
    m, sd = stat
    return f"{m:{fmt}} ± {sd:{fmt}}" if np.isfinite(sd) else f"{m:{fmt}}"


def _se_diff(a: dict, b: dict, key: str) -> float:
    """Standard error of the difference of two strategies' seed means (NaN with fewer than 2 seeds each)."""
    return float(np.sqrt(a[key][1] ** 2 / a["seeds"] + b[key][1] ** 2 / b["seeds"]))


def sentences(rows: list[dict], ends: np.ndarray, values: dict[str, np.ndarray]) -> list[str]:
    """The bullets of docs/FINDINGS.md §3, each quoting only the two tables (names as in STRATEGIES); a
    difference is called resolved only when it exceeds 2 standard errors of the difference of seed means."""
    st = strategy_stats(rows)
    g = {k: v["maxvio_global"][0] for k, v in st.items()}
    ppl = {k: v["val_ppl"] for k, v in st.items()}
    tail = {k: v["maxvio_batch_tail"][0] for k, v in st.items()}
    af = g["aux_free_u1e-3"]
    n_af = st["aux_free_u1e-3"]["seeds"]
    later = values["aux_free_u1e-2"][2:]
    several = [k for k in ppl if st[k]["seeds"] > 1]  # only these have a std to compare against
    single = [k for k in ppl if st[k]["seeds"] == 1]
    pool = several or list(ppl)
    lo_ppl, hi_ppl = min(pool, key=lambda k: ppl[k][0]), max(pool, key=lambda k: ppl[k][0])
    gap, se = ppl[hi_ppl][0] - ppl[lo_ppl][0], _se_diff(st[hi_ppl], st[lo_ppl], "val_ppl")
    lowest_tail = min(tail, key=tail.get)
    wins = all(af < g[k] for k in ("none", "switch_a1e-3", "switch_a1e-2"))
    if not np.isfinite(se):
        verdict = "**Perplexity: one seed per strategy cannot tell the strategies apart.**"
    elif gap > 2 * se:
        verdict = (
            f"**Perplexity: the extremes differ by more than 2 standard errors ({2 * se:.2f})** — the largest of "
            f"{len(several) * (len(several) - 1) // 2} pairwise gaps, so not a corrected test."
        )
    else:
        verdict = f"**Perplexity: no difference we can resolve** (2 standard errors of the gap: {2 * se:.2f})."
    sds = [v[1] for v in ppl.values() if np.isfinite(v[1])]
    seq, base = st["aux_free_u1e-3+seq"], st["aux_free_u1e-3"]
    seq_gaps = [abs(seq[k][0] - base[k][0]) / _se_diff(seq, base, k) for k in ("maxvio_global", "val_ppl")]
    seq_verdict = (
        "within 2 standard errors of the difference for both"
        if all(np.isfinite(x) and x < 2 for x in seq_gaps)
        else "not resolved with one seed"
        if not all(np.isfinite(x) for x in seq_gaps)
        else f"{seq_gaps[0]:.1f} and {seq_gaps[1]:.1f} standard errors of the difference"
    )
    return [
        ("**Balance: the aux-loss-free bias wins clearly.** " if wins else "**Balance.** ")
        + f"u = 1e-3 ends at MaxVio_global {_pm(st['aux_free_u1e-3']['maxvio_global'], '.3f')} (mean ± sample "
        f"std over its {n_af} seed{'s' if n_af > 1 else ''}), {g['none'] / af:.0f}× below no balancing "
        f"({g['none']:.2f}) and "
        f"{g['switch_a1e-2'] / af:.0f}× below the stronger Switch loss (α = 1e-2: {g['switch_a1e-2']:.2f}); the "
        f"weaker Switch loss (α = 1e-3) ends at {g['switch_a1e-3']:.2f}.",
        f"**The update rate** (seed 0's MaxVio_batch along training): u = 1e-4 falls from "
        f"{values['aux_free_u1e-4'][0]:.2f} at step {ends[0]} to {values['aux_free_u1e-4'][-1]:.2f} at step "
        f"{ends[-1]} (at step {ends[-2]}: {values['aux_free_u1e-4'][-2]:.2f}); u = 1e-2 is at "
        f"{values['aux_free_u1e-2'][0]:.2f} by step {ends[0]} (u = 1e-3: {values['aux_free_u1e-3'][0]:.2f}) "
        f"but from step {ends[2]} on stays at {_span(later, '.2f')}; over the last 10 % of steps, averaged over "
        f"seeds, {lowest_tail} has the lowest MaxVio_batch ({tail[lowest_tail]:.3f}; u = 1e-2: "
        f"{tail['aux_free_u1e-2']:.3f}, u = 1e-4: {tail['aux_free_u1e-4']:.3f}).",
        f"{verdict} The mean validation PPL of the {len(pool)} strategies with "
        f"{'more than one seed' if several else 'one seed'} lie between {ppl[lo_ppl][0]:.2f} ({lo_ppl}) and "
        f"{ppl[hi_ppl][0]:.2f} ({hi_ppl}), a gap of {gap:.2f}"
        + (f"; the seed-to-seed sample std of a strategy is {_span(sds, '.2f')}" if sds else "")
        + (
            f"; {', '.join(single)} ({', '.join(f'{ppl[k][0]:.2f}' for k in single)}) "
            f"{'has' if len(single) == 1 else 'have'} one seed, no std, and {'is' if len(single) == 1 else 'are'} "
            "not compared"
            if several and single
            else ""
        )
        + f". No balancing ends at {ppl['none'][0]:.2f} and u = 1e-3 at {ppl['aux_free_u1e-3'][0]:.2f}.",
        f"Adding DeepSeek-V3's sequence-wise loss (α = 1e-4) to the bias rule: MaxVio_global "
        f"{seq['maxvio_global'][0]:.3f} vs {base['maxvio_global'][0]:.3f}, PPL {seq['val_ppl'][0]:.2f} vs "
        f"{base['val_ppl'][0]:.2f}: {seq_verdict}.",
    ]


def seeds_of(rows: list[dict]) -> dict[str, list[int]]:
    """{strategy: its seeds, sorted} in STRATEGIES order."""
    return {name: sorted(r["seed"] for r in rows if r["strategy"] == name) for name in STRATEGIES}


def study_markdown(folder: Path) -> str:
    """The generated block of docs/FINDINGS.md §3, from the shipped folder alone (summaries + seed-0 histories)."""
    rows = load_summaries(folder)
    ends, values = curves(folder)
    return "\n\n".join(
        [
            "Final validation perplexity, MaxVio_global (mean over the two MoE layers) and MaxVio_batch (mean over "
            "the layers and the last 10% of training steps): mean ± sample standard deviation (ddof = 1) over the "
            "seeds, after Wang et al. 2024, Table 2:",
            markdown_table(rows),
            "Seeds shipped per strategy: "
            + "; ".join(f"{name} {', '.join(map(str, seeds))}" for name, seeds in seeds_of(rows).items())
            + ".",
            "MaxVio_batch along training (seed 0, mean over the two MoE layers, averaged over the 25 steps before "
            "each point):",
            curve_table(folder),
            "What it shows:",
            "\n".join(f"- {x}" for x in sentences(rows, ends, values)),
        ]
    )


def ship(out: Path, dest: Path) -> None:
    """Copy run.json + history of the seed-0 runs at OUT/seed0 (no weights, no token cache), and write every
    finished run's final summary (`write_summaries`). What OUT does not hold stays as shipped, so seeds trained
    in several sessions (or OUTs) can be shipped one after the other."""
    for run_dir in list_runs(out / "seed0") if (out / "seed0").is_dir() else []:
        load_run(run_dir)  # a valid run, or a clear error
        shutil.rmtree(dest / run_dir.name / "history", ignore_errors=True)
        (dest / run_dir.name).mkdir(parents=True, exist_ok=True)
        shutil.copy2(run_dir / "run.json", dest / run_dir.name / "run.json")
        shutil.copytree(run_dir / "history", dest / run_dir.name / "history")
    write_summaries(study_summaries(out), dest)


def main(argv: list[str] | None = None) -> int:
    from scripts.findings import replace_block

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, help="folder holding OUT/seed{S}/{strategy} runs")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--strategies", nargs="+", choices=list(STRATEGIES), help="train only these (in this order)")
    p.add_argument("--ship", type=Path, help="copy seed-0 histories (no weights) and every seed's summary here")
    p.add_argument("--table", type=Path, help="print the Markdown of the shipped study folder")
    p.add_argument("--write", type=Path, help="with --table: replace the `balancing_study` block of this file")
    args = p.parse_args(argv)
    if args.out is None and (args.ship or not args.table):
        p.error("--out is needed to train or ship")
    if not args.ship and not args.table:
        run_study(args.out, args.steps, args.seeds, args.batch_size, args.strategies)
    if args.ship:
        ship(args.out, args.ship)
    if args.table:
        text = study_markdown(args.table)
        if args.write:
            doc = args.write.read_text(encoding="utf-8")
            args.write.write_text(replace_block(doc, "balancing_study", text), encoding="utf-8")
        else:
            print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
