"""The numbers of one expert's profile: (layer l, expert i) of a routing trace, and its history in training.

Pure functions (numpy/pandas in, tables out) over the trace's arrays and tables (docs/ARCHITECTURE.md):
`experts_TLK` (T, L, K) chosen experts, `weights_TLK` their gate weights, `tokens` indexed by token_row
0..T-1. A routing is one (token, rank) choice: a token with i in its top-k is ONE routing to expert i, so
"share of routings" = load_i / (T*K) (uniform 1/E) and "share of tokens" = load_i / T (uniform K/E).
`summary_sentence` writes the profile as one line, saying only what these numbers say.

Shapes: T tokens, L MoE layers, K top-k, E experts, N history rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis import metrics, specialization, tables

MIN_COUNT = 5  # a token id needs this many occurrences before its lift is ranked
MIN_LIFT = 1.5  # the summary names a preferred token only from this lift on
CI = 0.95


@dataclass(frozen=True)
class Share:
    """How much of layer l's routing expert i takes."""

    routings: int  # tokens whose top-k at layer l contains i (= routings to i)
    top1: int  # tokens whose top-1 at layer l is i
    n_tokens: int  # T
    top_k: int  # K
    n_experts: int  # E

    @property
    def share(self) -> float:
        """Share of routings: routings / (T*K); uniform routing gives 1/E."""
        return self.routings / (self.n_tokens * self.top_k) if self.n_tokens else float("nan")

    @property
    def uniform(self) -> float:
        return 1.0 / self.n_experts

    @property
    def token_share(self) -> float:
        """Share of tokens that pick i in their top-k: routings / T; uniform K/E."""
        return self.routings / self.n_tokens if self.n_tokens else float("nan")


def expert_share(experts_TLK: np.ndarray, layer: int, expert: int, n_experts: int) -> Share:
    """Routings and top-1 count of `expert` at `layer`."""
    e = np.asarray(experts_TLK)[:, layer, :]
    return Share(int((e == expert).sum()), int((e[:, 0] == expert).sum()), e.shape[0], e.shape[1], n_experts)


def token_lift(
    experts_TLK: np.ndarray, tokens: pd.DataFrame, layer: int, expert: int, min_count: int = MIN_COUNT
) -> pd.DataFrame:
    """Token ids ranked by lift towards `expert` at `layer`, over the ids with >= min_count occurrences.

    For token id x with n_x occurrences, hits_x of which route to i (i in their top-k):
    p_expert_given_token = hits_x / n_x;  p_expert = load_i / T (share of all tokens routed to i);
    lift = p_expert_given_token / p_expert (1 = as often as any token; E/K at most); pmi = log2(lift).
    Sorted by lift (then count) descending; ids never routed to i are left out.
    Returns columns: token_id, token, count, hits, p_expert_given_token, p_expert, lift, pmi.
    """
    e = np.asarray(experts_TLK)[:, layer, :]
    T = e.shape[0]
    routed = (e == expert).any(axis=1)  # (T,)
    ids = metrics.token_column(tokens, "token_id", T).astype(np.int64)
    uniq, x_T, count_X = np.unique(ids, return_inverse=True, return_counts=True)
    hits_X = np.bincount(x_T, weights=routed, minlength=len(uniq)).astype(np.int64)
    p_expert = routed.mean() if T else float("nan")
    keep = (count_X >= min_count) & (hits_X > 0)
    texts = pd.Series(metrics.token_column(tokens, "token_text", T)).groupby(x_T).first()
    out = pd.DataFrame(
        {
            "token_id": uniq[keep],
            "token": [tables.short_token(t) for t in texts.to_numpy()[keep]],
            "count": count_X[keep],
            "hits": hits_X[keep],
        }
    )
    out["p_expert_given_token"] = out["hits"] / out["count"]
    out["p_expert"] = p_expert
    out["lift"] = out["p_expert_given_token"] / p_expert
    out["pmi"] = np.log2(out["lift"])
    return out.sort_values(["lift", "count"], ascending=False, kind="stable").reset_index(drop=True)


def domain_preference(
    experts_TLK: np.ndarray,
    tokens: pd.DataFrame,
    layer: int,
    expert: int,
    n_experts: int,
    n_boot: int = 200,
    seed: int = 0,
) -> pd.DataFrame:
    """Per domain label: the share of its tokens routed to `expert` at `layer` vs uniform K/E, with a bootstrap
    CI over documents (`specialization.specialization_bootstrap_ci`). Empty when no token has a label.

    share = routings of the label's tokens to i / the label's tokens; ratio = share / (K/E); lo/hi: CI of ratio.
    Returns columns: label, count, n_tokens, share, ratio, lo, hi (sorted by ratio, highest first).
    """
    columns = ["label", "count", "n_tokens", "share", "ratio", "lo", "hi"]
    if not (tokens["label"].fillna("").astype(str) != "").any():
        return pd.DataFrame(columns=columns)
    one = np.asarray(experts_TLK)[:, layer : layer + 1, :]  # only this layer: the bootstrap's cost grows with L
    cells = specialization.domain_specialization(one, tokens, n_experts)
    ci = specialization.specialization_bootstrap_ci(one, tokens, n_experts, n_boot=n_boot, ci=CI, seed=seed)
    out = cells[cells["expert"] == expert].reset_index(drop=True)
    bounds = ci[ci["expert"] == expert].set_index("label")
    out["lo"] = out["label"].map(bounds["lo"])
    out["hi"] = out["label"].map(bounds["hi"])
    return out[columns].sort_values("ratio", ascending=False, kind="stable").reset_index(drop=True)


def example_rows(
    experts_TLK: np.ndarray,
    weights_TLK: np.ndarray,
    tokens: pd.DataFrame,
    layer: int,
    expert: int,
    prefer_ids: Sequence[int] = (),
    n: int = 8,
) -> list[int]:
    """Token rows to show in context: for each id of `prefer_ids` (e.g. the top-lift ids) in order, its first
    occurrence routed to `expert` at `layer`; then, up to n, the other routed tokens with the highest gate
    weight (one per token id)."""
    e, w = np.asarray(experts_TLK)[:, layer, :], np.asarray(weights_TLK)[:, layer, :]
    hit = e == expert
    rows_R = np.flatnonzero(hit.any(axis=1))
    ids_R = metrics.token_column(tokens, "token_id", e.shape[0]).astype(np.int64)[rows_R]
    weight_R = np.where(hit, w, 0.0).sum(axis=1)[rows_R]
    first = {}
    for row, x in zip(rows_R.tolist(), ids_R.tolist()):
        first.setdefault(x, row)
    chosen = [first[x] for x in prefer_ids if x in first][:n]
    seen = {int(x) for x in prefer_ids if x in first}
    for r in np.argsort(-weight_R, kind="stable"):
        if len(chosen) >= n:
            break
        if int(ids_R[r]) not in seen:
            seen.add(int(ids_R[r]))
            chosen.append(int(rows_R[r]))
    return chosen


def coactivation_partners(co: metrics.Coactivation, layer: int, expert: int, n: int = 5) -> pd.DataFrame:
    """The experts most often chosen together with `expert` at `layer` (from `metrics.coactivation`).

    together = tokens with both in their top-k; p_partner_given_expert = together / tokens routed to `expert`
    (P(j | i)); lift = P(i, j) / (P(i) P(j)). Top n by `together`, zero rows left out (K = 1: always empty).
    Returns columns: partner, together, p_partner_given_expert, lift.
    """
    counts = co.counts_LEE[layer, expert].astype(np.int64).copy()
    counts[expert] = 0
    order = [j for j in np.argsort(-counts, kind="stable") if counts[j] > 0][:n]
    return pd.DataFrame(
        {
            "partner": np.asarray(order, dtype=np.int64),
            "together": counts[order],
            "p_partner_given_expert": co.cond_LEE[layer, expert, order],
            "lift": co.lift_LEE[layer, expert, order],
        }
    )


def layer_flow(flow_LEE: np.ndarray, layer: int, expert: int, direction: str, n: int = 5) -> pd.DataFrame:
    """Where the tokens whose top-1 at `layer` is `expert` go at layer+1 ("next"), or come from at layer-1
    ("previous"), from `metrics.cross_layer_flow(..., mode="top1")`.

    share = those tokens with top-1 j at the other layer / those tokens; baseline = all tokens with top-1 j at
    the other layer / T; lift = share / baseline. Top n by share, zero rows left out; empty at the first
    (previous) or last (next) layer.
    Returns columns: expert, tokens, share, baseline, lift.
    """
    flow = np.asarray(flow_LEE)
    if direction == "next":
        if layer >= flow.shape[0]:
            return pd.DataFrame(columns=["expert", "tokens", "share", "baseline", "lift"])
        counts, totals = flow[layer, expert, :], flow[layer].sum(axis=0)  # all tokens' top-1 at layer+1
    elif direction == "previous":
        if layer == 0:
            return pd.DataFrame(columns=["expert", "tokens", "share", "baseline", "lift"])
        counts, totals = flow[layer - 1, :, expert], flow[layer - 1].sum(axis=1)  # all tokens' top-1 at layer-1
    else:
        raise ValueError(f"direction must be 'next' or 'previous', got {direction!r}")
    order = [j for j in np.argsort(-counts, kind="stable") if counts[j] > 0][:n]
    with np.errstate(invalid="ignore", divide="ignore"):
        share = counts[order] / counts.sum()
        baseline = totals[order] / totals.sum()
        return pd.DataFrame(
            {"expert": order, "tokens": counts[order], "share": share, "baseline": baseline, "lift": share / baseline}
        ).astype({"expert": np.int64, "tokens": np.int64})


def history_series(history: pd.DataFrame, layer: int, expert: int) -> pd.DataFrame:
    """Expert i's load share and bias at `layer` over training, from the history's `load` and `bias` rows.

    share = load[l][i] / sum_j load[l][j] of each logged step's batch (uniform 1/E); bias as logged (NaN where
    a row has none). Returns columns: step, share, bias (empty when the history has no load).
    """
    steps, load = tables.history_array(history, "load")  # (N, L, E)
    if load.ndim != 3 or not len(steps):
        return pd.DataFrame(columns=["step", "share", "bias"])
    with np.errstate(invalid="ignore", divide="ignore"):
        share = load[:, layer, expert] / load[:, layer, :].sum(axis=1)
    out = pd.DataFrame({"step": steps, "share": share})
    b_steps, bias = tables.history_array(history, "bias")
    by_step = dict(zip(b_steps.tolist(), bias[:, layer, expert].tolist())) if bias.ndim == 3 else {}
    out["bias"] = [by_step.get(s, np.nan) for s in out["step"].tolist()]
    return out


def summary_sentence(
    layer: int, expert: int, share: Share, domains: pd.DataFrame, lift: pd.DataFrame, ci: float = CI
) -> str:
    """One plain-language line from the numbers above, each with its denominator.

    A domain is named as preferred only when its CI lies above 1x (avoided: below 1x); a token only when its
    lift is at least MIN_LIFT. An expert no token picks is said to be unused, and nothing more. Nothing else
    is claimed.
    """
    name = f"E{expert} at layer {layer}"
    if share.routings == 0:
        return (
            f"{name} takes none of the {share.n_tokens * share.top_k:,} routings (uniform {share.uniform:.1%}): "
            "no token of these documents picks it at this layer."
        )
    parts = [f"{name} takes {share.share:.1%} of routings (uniform {share.uniform:.1%})"]
    pct = f"{ci:.0%}"
    if len(domains):
        best = domains.iloc[0]
        highest = f"highest: {best['label']}, {best['ratio']:.2f}×, CI {best['lo']:.2f}–{best['hi']:.2f}×"
        if best["lo"] > 1:
            parts.append(
                f"its strongest domain is {best['label']}: {best['share']:.1%} of {best['label']} tokens have it in "
                f"their top-{share.top_k} (share of tokens; uniform {share.top_k / share.n_experts:.1%}), "
                f"{best['ratio']:.1f}× uniform ({pct} CI {best['lo']:.1f}–{best['hi']:.1f}× over documents)"
            )
        elif best["hi"] < 1:
            parts.append(f"every domain sends it fewer tokens than uniform ({pct} CI over documents; {highest})")
        else:
            parts.append(f"no domain sends it more tokens than uniform beyond the {pct} CI over documents ({highest})")
        avoided = domains[domains["hi"] < 1]
        if len(avoided) and best["hi"] >= 1:
            low = avoided.iloc[-1]
            parts.append(
                f"it gets fewer {low['label']} tokens than uniform ({low['ratio']:.2f}×, CI up to {low['hi']:.2f}×)"
            )
    if len(lift) and lift.iloc[0]["lift"] >= MIN_LIFT:
        top = lift.iloc[0]
        parts.append(
            f"the token it prefers most is “{top['token']}”: {top['p_expert_given_token']:.0%} of its "
            f"{int(top['count'])} occurrences go to E{expert} vs {top['p_expert']:.0%} of all tokens "
            f"({top['lift']:.1f}× lift)"
        )
    return "; ".join(parts) + "."
