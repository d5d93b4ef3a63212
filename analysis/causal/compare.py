"""Causal next to observational: the sentence of an expert's ablation effect per domain, and the table
that sets each (layer, expert, domain)'s specialization ratio (analysis.specialization) beside its ablation
Δ loss (analysis.causal.ablation), so a user sees where "specialised" and "needed" disagree."""

from __future__ import annotations

import pandas as pd

MODE_WORDS = {"reroute": "its tokens re-routed to the other experts", "zero": "its output zeroed"}


def _num(x: float) -> str:
    """Signed nats: 4 decimals, or 3 significant digits below 0.001 (a tiny effect is not shown as 0)."""
    return f"{x:+.4f}" if x == 0 or abs(x) >= 1e-3 else f"{x:+.2e}"


def _effect(delta: float, lo: float, hi: float) -> str:
    """'+0.0161 nats/token (95% CI +0.0097 to +0.0244)', with a note when the CI holds 0."""
    text = f"{_num(delta)} nats/token (95% CI {_num(lo)} to {_num(hi)})"
    return text + ", not distinguishable from 0" if lo <= 0 <= hi else text


def effect_sentence(layer: int, expert: int, per_domain: pd.DataFrame, mode: str = "reroute") -> str:
    """'Removing E3 at layer 1 (its tokens re-routed …) changes the loss of code by +0.0161 nats/token (95% CI
    …), prose by …; over all 64 documents by ….' from a `domain_deltas` table (label, n_docs, n_tokens,
    delta, lo, hi); Δ is the mean change of next-token loss per scored token, the CI over documents."""
    rows = per_domain.set_index("label")
    parts = [
        f"{label} by {_effect(r.delta, r.lo, r.hi)}" for label, r in rows.drop(index="all", errors="ignore").iterrows()
    ]
    head = f"Removing E{expert} at layer {layer} ({MODE_WORDS.get(mode, mode)}) changes the loss of "
    sentence = head + ("; ".join(parts) if parts else "these documents")
    if "all" in rows.index:
        r = rows.loc["all"]
        scope = f"over all {int(r.n_docs)} documents ({int(r.n_tokens):,} scored tokens)"
        sentence += f"; {scope} by {_effect(r.delta, r.lo, r.hi)}"
    return sentence + "."


def specialization_vs_ablation(spec: pd.DataFrame, sweep_table: pd.DataFrame) -> pd.DataFrame:
    """One row per (layer, expert, domain) with both numbers: `ratio` (share of the domain's tokens whose
    top-k holds the expert ÷ uniform K/E; analysis.specialization.domain_specialization) and `delta`, `lo`,
    `hi` (Δ loss in nats/token on the domain's tokens when the expert is removed). `top_domain` marks the
    domain with the expert's highest ratio at its layer; `rank_delta` ranks the experts of a layer and domain by
    Δ (1 = most needed). Only the single-expert ablations of `sweep_table` are used."""
    single = sweep_table[(sweep_table["expert"] >= 0) & (sweep_table["label"] != "all")]
    single = single[["layer", "expert", "label", "mode", "n_docs", "n_tokens", "delta", "lo", "hi"]]
    out = spec[["layer", "label", "expert", "share", "ratio"]].merge(
        single, on=["layer", "expert", "label"], how="inner"
    )
    out["top_domain"] = False
    out.loc[out.groupby(["layer", "expert"])["ratio"].idxmax(), "top_domain"] = True  # one per pair (first of ties)
    out["rank_delta"] = out.groupby(["layer", "label"])["delta"].rank(ascending=False, method="min").astype(int)
    return out.sort_values(["layer", "expert", "label"]).reset_index(drop=True)


def disagreements(table: pd.DataFrame) -> pd.DataFrame:
    """Each (layer, expert)'s top domain by specialization ratio with its Δ loss there, and whether that Δ is
    the largest of the layer's experts on that domain (`agrees`): the "domain expert" claim checked causally."""
    top = table[table["top_domain"]].copy()
    top["agrees"] = top["rank_delta"] == 1
    return top[["layer", "expert", "label", "ratio", "delta", "lo", "hi", "rank_delta", "agrees"]].reset_index(
        drop=True
    )


def agreement_sentence(top: pd.DataFrame, n_domains: int | None = None) -> str:
    """How often an expert's top domain by specialization is also where removing it costs the most, from
    `disagreements(...)`; the denominator is the (layer, expert) pairs with a top domain. With `n_domains`,
    also how many could agree at most: one expert per (layer, domain) is that domain's rank 1."""
    n, agree = len(top), int(top["agrees"].sum())
    clear = int(((top["lo"] > 0) & top["agrees"]).sum())
    most = f" (at most {top['layer'].nunique() * n_domains} can: one per (layer, domain))" if n_domains else ""
    return (
        f"For {agree} of {n} (layer, expert) pairs{most}, the domain the expert is most specialised in (highest "
        f"share ÷ uniform) is also the domain where removing it raises the loss most among its layer's experts "
        f"({clear} of them with a 95% CI above 0); for the other {n - agree} the two disagree."
    )
