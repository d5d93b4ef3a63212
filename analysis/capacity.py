"""Capacity simulation: which routings a capacity factor would drop, and where in a document they fall.

Pure numpy/pandas on the RoutingTrace tables, like `analysis.metrics` (its shape legend: T tokens, L MoE layers,
K experts per token, E experts).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.metrics import as_experts, token_column


@dataclass(frozen=True)
class CapacityDrop:
    """Result of `capacity_drop`."""

    capacity: np.ndarray  # (G,) per-expert capacity of each group (one group = the whole trace by default)
    dropped_TLK: np.ndarray  # (T, L, K) bool, True where that routing would be dropped
    dropped: pd.DataFrame  # token_row, layer, rank, expert of the dropped routings
    drop_rate: np.ndarray  # (L,) per layer: dropped routings / (T*K)


def capacity_drop(
    experts: np.ndarray | pd.DataFrame, n_experts: int, capacity_factor: float, groups: np.ndarray | None = None
) -> CapacityDrop:
    """Which routings a capacity factor C would drop, per layer, processing tokens in token_row order.

    capacity = ceil(C * T * K / E) per expert and layer (T = tokens in the group). Routings are processed in
    (token_row, rank) order, as moe_core.moe.capacity_keep_mask does: the n-th routing to expert i at layer l
    (n counted from 0) is dropped when n >= capacity, so earlier tokens win.
    `groups` (T,) optionally splits the tokens into independent groups (e.g. training batches or documents),
    each with its own capacity from its own size; by default the whole trace is one group.
    """
    e_TLK = as_experts(experts)
    T, L, K = e_TLK.shape
    E = n_experts
    if capacity_factor <= 0:
        raise ValueError("capacity_factor must be > 0")
    g_T = np.zeros(T, np.int64) if groups is None else pd.factorize(np.asarray(groups))[0].astype(np.int64)
    G = int(g_T.max()) + 1 if T else 0
    size_G = np.bincount(g_T, minlength=G)
    cap_G = np.ceil(capacity_factor * size_G * K / E).astype(np.int64)
    # flat routings in (token, layer, rank) order; a stable sort by (layer, group, expert) keeps token order
    key = ((np.arange(L)[None, :, None] * G + g_T[:, None, None]) * E + e_TLK).ravel()  # (T*L*K,)
    if L * G * E < 2**15:  # numpy's stable sort of 16-bit ints is a radix sort: O(n)
        key = key.astype(np.int16)
    order = np.argsort(key, kind="stable")
    counts = np.bincount(key, minlength=L * G * E)
    starts = np.cumsum(counts) - counts
    nth = np.empty(len(order), np.int64)
    nth[order] = np.arange(len(order)) - starts[key[order]]  # arrival index of each routing at its expert
    dropped_TLK = (nth >= np.broadcast_to(cap_G[g_T][:, None, None], e_TLK.shape).ravel()).reshape(T, L, K)
    t, l, r = np.nonzero(dropped_TLK)
    dropped = pd.DataFrame({"token_row": t, "layer": l, "rank": r, "expert": e_TLK[t, l, r]})
    return CapacityDrop(cap_G, dropped_TLK, dropped, dropped_TLK.mean(axis=(0, 2)) if T else np.zeros(L))


def drop_rate_by_position(dropped_TLK: np.ndarray, tokens: pd.DataFrame, bucket_size: int = 64) -> pd.DataFrame:
    """Per layer and position bucket: dropped routings / routings of the tokens whose position is in the bucket.

    bucket = position // bucket_size. Returns columns: layer, bucket, position_start, n_tokens, drop_rate.
    """
    T, L, K = dropped_TLK.shape
    b_T = token_column(tokens, "position", T).astype(np.int64) // bucket_size
    B = int(b_T.max()) + 1
    n_B = np.bincount(b_T, minlength=B)
    key = (np.arange(L)[None, :] * B + b_T[:, None]).ravel()  # (T*L,) flat (layer, bucket)
    drops = np.bincount(key, weights=dropped_TLK.sum(axis=2).ravel(), minlength=L * B).reshape(L, B)
    out = pd.DataFrame(
        {
            "layer": np.repeat(np.arange(L), B),
            "bucket": np.tile(np.arange(B), L),
            "position_start": np.tile(np.arange(B) * bucket_size, L),
            "n_tokens": np.tile(n_B, L),
        }
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        out["drop_rate"] = (drops / (n_B[None, :] * K)).ravel()
    return out[out["n_tokens"] > 0].reset_index(drop=True)
