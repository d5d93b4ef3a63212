"""One text's routing at two training steps, token by token (Token routing's "Compare with step").

Inputs are the chosen experts of the same T tokens at step A and at step B as (T, L, K) arrays (rank 0 = the
top-1; `tables.routing_arrays` or `RoutingTrace.experts_array()`), and for the token table their gate weights.
Every share has the document's T tokens as its denominator, per MoE layer.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from analysis import tables


def _check(experts_a: np.ndarray, experts_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(experts_a), np.asarray(experts_b)
    if a.ndim != 3 or a.shape != b.shape:
        raise ValueError(f"the two steps hold different tokens or layers: shapes {a.shape} and {b.shape}")
    return a, b


def top1_changed(experts_a: np.ndarray, experts_b: np.ndarray) -> np.ndarray:
    """(T, L) bool: the token's top-1 expert at step B is not its top-1 at step A."""
    a, b = _check(experts_a, experts_b)
    return a[:, :, 0] != b[:, :, 0]


def topk_changed(experts_a: np.ndarray, experts_b: np.ndarray) -> np.ndarray:
    """(T, L) bool: the token's set of K chosen experts differs (order ignored; a new rank alone is no change)."""
    a, b = _check(experts_a, experts_b)
    return (np.sort(a, axis=2) != np.sort(b, axis=2)).any(axis=2)


def change_by_layer(experts_a: np.ndarray, experts_b: np.ndarray) -> pd.DataFrame:
    """One row per MoE layer: tokens (T, the denominator of both shares), top1_changed (tokens whose top-1 expert
    differs), top1_changed_share = top1_changed / T, topk_changed (tokens whose top-k set differs) and
    topk_changed_share = topk_changed / T. Two experts that swap ranks change the top-1 but not the set; a new
    second expert changes the set but not the top-1."""
    top1, topk = top1_changed(experts_a, experts_b), topk_changed(experts_a, experts_b)
    T = top1.shape[0]
    out = pd.DataFrame(
        {
            "layer": np.arange(top1.shape[1]),
            "tokens": T,
            "top1_changed": top1.sum(axis=0).astype(np.int64),
            "topk_changed": topk.sum(axis=0).astype(np.int64),
        }
    )
    out["top1_changed_share"] = out["top1_changed"] / T if T else np.nan
    out["topk_changed_share"] = out["topk_changed"] / T if T else np.nan
    return out[["layer", "tokens", "top1_changed", "top1_changed_share", "topk_changed", "topk_changed_share"]]


def experts_text(experts_K: Sequence[int], weights_K: Sequence[float]) -> str:
    """'E3 0.62, E1 0.38': the chosen experts by rank with their gate weights (missing ranks, -1, left out)."""
    return ", ".join(f"E{int(e)} {float(w):.2f}" for e, w in zip(experts_K, weights_K) if int(e) >= 0)


def token_table(
    token_texts: Sequence[str],
    experts_a: np.ndarray,
    weights_a: np.ndarray,
    experts_b: np.ndarray,
    weights_b: np.ndarray,
    layer: int,
    names: tuple[str, str] = ("step A", "step B"),
) -> pd.DataFrame:
    """One row per token at one MoE layer, aligned by position: token (index), text (as shown,
    `tables.short_token`), the experts with gate weights at each step (columns "experts at NAME"), and whether
    the top-1 expert and the top-k set changed."""
    top1 = top1_changed(experts_a, experts_b)[:, layer]
    topk = topk_changed(experts_a, experts_b)[:, layer]
    a_col, b_col = (f"experts at {n}" for n in names)
    return pd.DataFrame(
        {
            "token": np.arange(len(top1)),
            "text": [tables.short_token(t) for t in token_texts],
            a_col: [experts_text(e, w) for e, w in zip(experts_a[:, layer], weights_a[:, layer])],
            b_col: [experts_text(e, w) for e, w in zip(experts_b[:, layer], weights_b[:, layer])],
            "top-1 changed": top1,
            "top-k set changed": topk,
        }
    )
