"""Specialization findings of a run, from its eval traces, as Markdown (the tables of docs/FINDINGS.md).

    python -m scripts.findings --run sample_data/default_run      (or `findings(load_run(RUN))` in Python)

Uses only `metrics` and `specialization`; every number is recomputed from the run's files.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis import metrics, specialization
from analysis.trace import load
from moe_core.model import count_parameters
from moe_core.run import Run


def _table(df: pd.DataFrame, floatfmt: str = ".3f") -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    for row in df.itertuples(index=False):
        cells = [format(v, floatfmt) if isinstance(v, (float, np.floating)) else str(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_summary(run: Run) -> str:
    cfg = run.config
    params = count_parameters(cfg)
    hist = run.history()
    final = run.eval_history()[-1]
    tokens = hist[-1].get("tokens", 0) if hist else 0
    moe = cfg.moe
    model = (
        f"- model: {cfg.n_layer} blocks ({len(cfg.moe_layers)} MoE), d {cfg.n_embd}, {moe.n_experts} routed experts "
        f"(hidden {moe.expert_hidden}) top-{moe.top_k} + {moe.n_shared} shared, {moe.score_func} gating, "
    )
    balance = f"balancing {', '.join(moe.balance.strategies)}; "
    size = f"{params['total'] / 1e6:.2f} M parameters, {params['active'] / 1e6:.2f} M active per token\n"
    maxvio = ", ".join(f"{v:.3f}" for v in final["maxvio_global"])
    training = (
        f"- training: {final['step']} steps, {tokens / 1e6:.2f} M tokens; final validation loss "
        f"{final['val_loss']:.3f} (PPL {final['val_ppl']:.1f}); MaxVio_global per MoE layer {maxvio}"
    )
    return model + balance + size + training


def specialization_section(trace) -> str:
    E, ex, tok = trace.n_experts, trace.experts_array(), trace.tokens
    spec = specialization.domain_specialization(ex, tok, E)
    base = specialization.specialization_permutation_baseline(ex, tok, E, n_permutations=200)
    ci = specialization.specialization_bootstrap_ci(ex, tok, E, n_boot=200)
    best = spec.loc[spec.groupby(["layer", "label"])["ratio"].idxmax()]
    best = best.merge(ci[["layer", "label", "expert", "lo", "hi"]], on=["layer", "label", "expert"])
    best = best.merge(base.cells[["layer", "label", "expert", "perm_hi", "p_value"]], on=["layer", "label", "expert"])
    best = best[["layer", "label", "expert", "share", "ratio", "lo", "hi", "perm_hi", "p_value"]]
    best = best.rename(columns={"lo": "ratio 95% CI lo", "hi": "ratio 95% CI hi", "perm_hi": "permuted 95th pct"})
    return (
        f"Most specialised expert per (layer, domain): share of the domain's routings vs the uniform "
        f"K/E = {trace.top_k / E:.3f} (ratio), bootstrap CI over documents, and the label-permutation null "
        f"(200 permutations).\n\n{_table(best)}\n\nPer layer, the largest ratio against its permutation null:\n\n"
        f"{_table(base.max_ratio)}"
    )


def saturation_section(run: Run) -> str:
    steps = sorted(int(p.stem.split("_")[-1]) for p in (run.path / "eval").glob("trace_step_*.parquet"))
    final = load(run.trace_path(steps[-1])).experts_array()
    rows = []
    for step in steps:
        sat = metrics.router_saturation(load(run.trace_path(step)).experts_array(), final)
        rows.append({"step": step, **{f"top-1 agreement, layer {r.layer}": r.top1_agreement for r in sat.itertuples()}})
    return _table(pd.DataFrame(rows))


def coactivation_section(trace, top: int = 3) -> str:
    co = metrics.coactivation(trace.experts_array(), trace.n_experts)
    rows = []
    for layer, lift in enumerate(co.lift_LEE):
        lift = np.where(np.eye(len(lift), dtype=bool) | ~np.isfinite(lift), -np.inf, lift)
        for flat in np.argsort(lift, axis=None)[::-1][: 2 * top : 2]:  # each pair appears twice (i, j), (j, i)
            i, j = np.unravel_index(flat, lift.shape)
            rows.append(
                {"layer": layer, "pair": f"{i}+{j}", "lift": lift[i, j], "P(j given i)": co.cond_LEE[layer, i, j]}
            )
    return _table(pd.DataFrame(rows))


def findings(run: Run) -> str:
    step = run.checkpoints()[-1]
    trace = load(run.trace_path(step))
    E, ex, tok = trace.n_experts, trace.experts_array(), trace.tokens
    probe = specialization.domain_probe(ex, tok, E)
    mi = specialization.mi_summary(ex, tok, E)
    token_spec = specialization.token_specialization_summary(specialization.token_specialization(ex, tok, E))
    flips = pd.DataFrame(
        {"layer": range(trace.n_layers), "bias-flip rate": metrics.bias_flip_rate(trace.routing, trace.n_layers)}
    )
    consecutive = metrics.consecutive_same_expert(ex, tok)
    load_LE = metrics.expert_load(ex, E)
    balance = pd.DataFrame(
        {
            "layer": range(trace.n_layers),
            "MaxVio": metrics.max_vio(load_LE),
            "dead experts": metrics.dead_experts(load_LE).sum(1),
        }
    )
    return "\n\n".join(
        [
            f"### The run\n\n{run_summary(run)}\n- eval set: {tok['doc_id'].nunique()} held-out documents, "
            f"{trace.n_tokens} tokens, labels {', '.join(sorted(tok['label'].unique()))}",
            f"### Domain × expert specialization\n\n{specialization_section(trace)}",
            f"### Domain probe (5-fold logistic regression on per-document routing histograms)\n\n{_table(probe)}",
            f"### Mutual information (plug-in, bits; baseline = labels / token ids shuffled)\n\n{_table(mi)}",
            "### Token specialization (OLMoE: share of a token id's routings to its most frequent expert)\n\n"
            + _table(token_spec),
            f"### Co-activation: strongest pairs by lift\n\n{coactivation_section(trace)}",
            f"### Consecutive tokens on the same top-1 expert vs shuffled order\n\n{_table(consecutive)}",
            f"### Router saturation (top-1 agreement with the final checkpoint)\n\n{saturation_section(run)}",
            f"### Balance and bias flips on the eval set\n\n{_table(balance.merge(flips, on='layer'))}",
        ]
    )
