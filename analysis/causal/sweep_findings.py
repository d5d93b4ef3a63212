"""The generated block of docs/FINDINGS.md §4: a run's full ablation sweep (every expert of every MoE layer
removed in turn, plus the references) set beside the domain specialization of the same eval documents. Do the
"domain experts" matter for their domain? The sentences are made from the tables they quote.

    python -m scripts.findings --run sample_data/default_run --sweep sample_data/default_run/causal/sweep.csv
    sweep_markdown(trace, sweep_table) -> the block

Δ loss: next-token loss with the expert removed minus without, in nats per scored token of a domain (mean over
its tokens), with a 95% bootstrap CI over documents (analysis.causal.ablation). Specialization ratio: share of
the domain's tokens whose top-k holds the expert ÷ uniform K/E (analysis.specialization).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis import findings, specialization
from analysis.causal import compare


def joined_table(trace, sweep: pd.DataFrame) -> pd.DataFrame:
    """`compare.specialization_vs_ablation` of the trace's domain specialization and a sweep table."""
    spec = specialization.domain_specialization(trace.experts_array(), trace.tokens, trace.n_experts)
    return compare.specialization_vs_ablation(spec, sweep)


def named_experts(joined: pd.DataFrame) -> pd.DataFrame:
    """Per (layer, domain) the most specialised expert (the "domain expert" of §2) with its Δ loss on that domain,
    the rank of that Δ among the layer's experts on the domain (1 = most needed), its mean Δ on the other
    domains, and whether its own domain is the one where removing it costs most (`own_domain_largest`)."""
    rows = []
    for (layer, label), cells in joined.groupby(["layer", "label"]):
        best = cells.loc[cells["ratio"].idxmax()]
        mine = joined[(joined["layer"] == layer) & (joined["expert"] == best["expert"])]
        others = mine[mine["label"] != label]["delta"]
        rows.append(
            {
                "layer": int(layer),
                "domain": label,
                "expert": int(best["expert"]),
                "ratio": float(best["ratio"]),
                "Δ own domain": float(best["delta"]),
                "CI lo": float(best["lo"]),
                "CI hi": float(best["hi"]),
                "rank in layer": int(best["rank_delta"]),
                "mean Δ other domains": float(others.mean()),
                "own_domain_largest": bool(best["delta"] >= mine["delta"].max()),
            }
        )
    return pd.DataFrame(rows)


def references(sweep: pd.DataFrame) -> pd.DataFrame:
    """Per layer, Δ loss over all documents of the references (all routed experts zeroed, the shared expert
    zeroed) and of the single expert whose removal costs most."""
    everything = sweep[sweep["label"] == "all"]
    rows = []
    for layer, cells in everything.groupby("layer"):
        single = cells[cells["expert"] >= 0]
        worst = single.loc[single["delta"].idxmax()]
        rows.append(
            {
                "layer": int(layer),
                "all routed experts": float(cells[cells["mode"] == "layer"]["delta"].iloc[0]),
                "shared expert": float(cells[cells["mode"] == "shared"]["delta"].iloc[0]),
                "costliest single expert": f"E{int(worst['expert'])}",
                "its Δ": float(worst["delta"]),
                "median single expert Δ": float(single["delta"].median()),
            }
        )
    return pd.DataFrame(rows)


def spearman_by_layer(joined: pd.DataFrame) -> pd.DataFrame:
    """Per layer, the Spearman rank correlation of specialization ratio and Δ loss over its (expert, domain)
    cells, and over all layers' cells."""
    rows = [(str(layer), cells) for layer, cells in joined.groupby("layer")] + [("all", joined)]
    return pd.DataFrame(
        [
            {"layer": name, "cells": len(cells), "spearman": float(cells["ratio"].corr(cells["delta"], "spearman"))}
            for name, cells in rows
        ]
    )


def _between(values, fmt: str) -> str:
    return findings.span(values, fmt, sep=" to ")  # '+0.0022 to +0.0396': signed values read badly with a dash


def sentences(named: pd.DataFrame, top: pd.DataFrame, refs: pd.DataFrame, rho: pd.DataFrame) -> list[str]:
    """The bullets of §4, each quoting only the tables of the block."""
    n = len(named)
    rank1 = named[named["rank in layer"] == 1]
    above = named[named["CI lo"] > 0]
    own = named[named["own_domain_largest"]]
    missed = named[named["rank in layer"] > 1]
    missed_text = ", ".join(
        f"{r['domain']} E{r['expert']} of layer {r['layer']} (rank {r['rank in layer']})" for _, r in missed.iterrows()
    )
    per_layer = rho[rho["layer"] != "all"]["spearman"]
    out = [
        f"**The named domain experts** (the most specialised expert of each (layer, domain), §2): removing one "
        f"raises its own domain's loss by {_between(named['Δ own domain'], '+.4f')} nats/token, with a 95% CI "
        f"above 0 for {len(above)} of {n}. For {len(rank1)} of {n} it is the expert whose removal costs that "
        f"domain the most in its layer (rank 1 of the layer's experts)"
        + (f"; not for {missed_text}" if len(missed) else "")
        + f". For {len(own)} of {n} its own domain is the one (of the {named['domain'].nunique()}) where removing "
        f"it costs the most.",
        "**Every expert**: " + compare.agreement_sentence(top, named["domain"].nunique()),
        f"**Specialization vs Δ loss over all cells**: Spearman rank correlation "
        f"{rho[rho['layer'] == 'all']['spearman'].iloc[0]:.2f} over {int(rho[rho['layer'] == 'all']['cells'].iloc[0])} "
        f"(layer, expert, domain) cells ({findings.span(per_layer, '.2f')} within a layer): a descriptive number, "
        f"not a test (the cells of one expert share its tokens).",
        f"**References** (over all documents): zeroing all routed experts of a layer raises the loss by "
        f"{_between(refs['all routed experts'], '+.3f')} nats/token, zeroing the shared expert by "
        f"{_between(refs['shared expert'], '+.3f')}, removing the costliest single expert by "
        f"{_between(refs['its Δ'], '+.4f')} (the median single expert: "
        f"{_between(refs['median single expert Δ'], '+.4f')}).",
    ]
    return out


def sweep_markdown(trace, sweep: pd.DataFrame) -> str:
    """The generated block of docs/FINDINGS.md §4 from a run's final eval trace and its sweep table (the
    `moe-explorer ablate --out` table: ablation, layer, mode, expert, label, n_docs, n_tokens, delta, lo, hi)."""
    modes = sorted(set(sweep.loc[sweep["expert"] >= 0, "mode"]))
    if len(modes) != 1:
        raise ValueError(f"the sweep must hold one single-expert mode, got {modes}")
    joined = joined_table(trace, sweep)
    named, refs, rho = named_experts(joined), references(sweep), spearman_by_layer(joined)
    top = compare.disagreements(joined)
    n_docs = int(sweep.loc[sweep["label"] == "all", "n_docs"].iloc[0])
    n_tokens = int(sweep.loc[sweep["label"] == "all", "n_tokens"].iloc[0])
    head = (
        f"{len(sweep['ablation'].unique())} ablations ({compare.MODE_WORDS.get(modes[0], modes[0])} for single "
        f"experts) on {n_docs} eval documents ({n_tokens:,} scored tokens):"
    )
    named_shown = named.drop(columns=["own_domain_largest"]).assign(
        **{"own domain costs most": np.where(named["own_domain_largest"], "yes", "no")}
    )
    parts = [
        head,
        "",
        *[f"- {s}" for s in sentences(named, top, refs, rho)],
        "",
        "### The named domain experts (Δ loss in nats/token on the domain's tokens; CI over documents)",
        "",
        findings.table(named_shown, ".4f"),
        "",
        "### References per layer (Δ loss over all documents, nats/token)",
        "",
        findings.table(refs, ".4f"),
        "",
        "### Spearman correlation of specialization ratio and Δ loss",
        "",
        findings.table(rho, ".3f"),
    ]
    return "\n".join(parts)
