"""Routing metrics of the MoE literature as pure, vectorised functions (numpy/pandas in, numpy/pandas out).

Inputs are the RoutingTrace tables (docs/ARCHITECTURE.md), never the RoutingTrace class itself:
- `routing`: one row per (token, layer, rank): token_row, layer, rank, expert, weight, score, biased_score, bias_flip
- `tokens`: index token_row (0..T-1): doc_id, position, token_id, ..., label
- `scores`: optional (T, L, E) router scores over all experts.
`dense_routing(routing)` turns `routing` into a dense `experts_TLK` array once; most metrics take that (or a
`routing` DataFrame, converted on the fly) or an (L, E) load matrix. No Python loops over tokens anywhere.

Shape legend: T tokens, L MoE layers, K experts per token (top-k), E experts. "Per layer" results have a
leading L axis (or a `layer` column); nothing is averaged over layers unless the name says so.

Expert load, MaxVio and router entropy have one copy, on tensors, in `moe_core.routing_stats` (training, both
recorders and this module agree by construction): here they are called through `torch.from_numpy`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from moe_core import routing_stats

# --- dense view of the routing table ------------------------------------------------------------------


def dense_routing(
    routing: pd.DataFrame, n_tokens: int | None = None, n_layers: int | None = None, top_k: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """`routing` (one row per (token, layer, rank)) -> (experts_TLK int64, weights_TLK float32).

    experts_TLK[t, l, r] is the expert of token t at layer l and rank r (rank 0 = top-1). Sizes default to
    max + 1 of the columns. Every (token, layer, rank) cell must appear exactly once (ValueError otherwise).
    Vectorised scatter; in canonical order (sorted by token_row, layer, rank) it is a plain reshape.
    """
    tr = routing["token_row"].to_numpy(np.int64)
    layer = routing["layer"].to_numpy(np.int64)
    rank = routing["rank"].to_numpy(np.int64)
    if len(tr) == 0:
        raise ValueError("routing table is empty")
    T = int(tr.max()) + 1 if n_tokens is None else int(n_tokens)
    L = int(layer.max()) + 1 if n_layers is None else int(n_layers)
    K = int(rank.max()) + 1 if top_k is None else int(top_k)
    if len(tr) != T * L * K:
        raise ValueError(f"routing has {len(tr)} rows, expected n_tokens*n_layers*top_k = {T}*{L}*{K} = {T * L * K}")
    flat = (tr * L + layer) * K + rank  # cell index of each row
    experts = routing["expert"].to_numpy(np.int64)
    weights = routing["weight"].to_numpy(np.float32) if "weight" in routing else np.ones(len(tr), np.float32)
    if np.array_equal(flat, np.arange(T * L * K)):  # canonical order: no scatter needed
        return experts.reshape(T, L, K), weights.reshape(T, L, K)
    if flat.min() < 0 or flat.max() >= T * L * K or np.bincount(flat, minlength=T * L * K).max() != 1:
        raise ValueError("routing must hold every (token_row, layer, rank) exactly once")
    experts_TLK = np.empty(T * L * K, np.int64)
    weights_TLK = np.empty(T * L * K, np.float32)
    experts_TLK[flat] = experts
    weights_TLK[flat] = weights
    return experts_TLK.reshape(T, L, K), weights_TLK.reshape(T, L, K)


def as_experts(x: np.ndarray | pd.DataFrame) -> np.ndarray:
    """experts_TLK from either a dense (T, L, K) array or a `routing` DataFrame."""
    if isinstance(x, pd.DataFrame):
        return dense_routing(x)[0]
    a = np.asarray(x)
    if a.ndim != 3:
        raise ValueError(f"expected experts of shape (T, L, K), got {a.shape}")
    return a.astype(np.int64, copy=False)


def token_column(tokens: pd.DataFrame, column: str, n_tokens: int) -> np.ndarray:
    """Values of `tokens[column]` in token_row order 0..n_tokens-1 (ValueError if rows are missing)."""
    if len(tokens) != n_tokens:
        raise ValueError(f"tokens has {len(tokens)} rows but the routing has {n_tokens} tokens")
    col = tokens[column]
    if not np.array_equal(tokens.index.to_numpy(), np.arange(n_tokens)):
        col = col.reindex(np.arange(n_tokens))
        if col.isna().any():
            raise ValueError("tokens index must be token_row 0..n_tokens-1")
    return col.to_numpy()


# --- load and balance ---------------------------------------------------------------------------------


def expert_load(experts: np.ndarray | pd.DataFrame, n_experts: int) -> np.ndarray:
    """(L, E) int64, per layer: load[l, i] = number of tokens whose top-k at layer l contains expert i.

    load[l, i] = sum_t sum_r [experts[t, l, r] == i]  (a token's top-k experts are distinct).
    Each row sums to T*K. Counted by `routing_stats.expert_counts` over flat (layer, expert) indices.
    """
    e_TLK = as_experts(experts)
    T, L, K = e_TLK.shape
    key_TLK = np.arange(L)[None, :, None] * n_experts + e_TLK  # flat (layer, expert) index
    counts = routing_stats.expert_counts(torch.from_numpy(np.ascontiguousarray(key_TLK)), L * n_experts)
    return counts.numpy().reshape(L, n_experts)


def load_share(load_LE: np.ndarray) -> np.ndarray:
    """(L, E), per layer: share_i = load_i / sum_j load_j (each row sums to 1; NaN for an empty layer)."""
    load = np.asarray(load_LE, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return load / load.sum(axis=-1, keepdims=True)


def max_vio(load_LE: np.ndarray) -> np.ndarray:
    """(L,), per layer: MaxVio = (max_i load_i - mean_i load_i) / mean_i load_i  (0 = perfectly balanced).

    0 also for a layer with no load at all (mean 0), as `routing_stats.max_violation`, which computes it."""
    load = torch.from_numpy(np.array(load_LE, dtype=np.float64))
    return routing_stats.max_violation(load).numpy()


def load_cv(load_LE: np.ndarray) -> np.ndarray:
    """(L,), per layer: coefficient of variation CV = std_i(load_i) / mean_i(load_i) (population std, ddof=0)."""
    load = np.asarray(load_LE, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return load.std(axis=-1) / load.mean(axis=-1)


def load_entropy(load_LE: np.ndarray) -> np.ndarray:
    """(L,), per layer: normalised load entropy H(p) / log E with p_i = load_i / sum_j load_j, 0 log 0 = 0.

    1 = perfectly balanced, 0 = every routing goes to one expert.
    """
    p = load_share(load_LE)
    E = p.shape[-1]
    plogp = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return -plogp.sum(axis=-1) / math.log(E)


def dead_experts(load_LE: np.ndarray) -> np.ndarray:
    """(L, E) bool, per layer: True where load_i == 0 (the expert got no token). `.sum(1)` counts them per layer."""
    return np.asarray(load_LE) == 0


# --- router scores and bias -----------------------------------------------------------------------------


def router_entropy(scores_TLE: np.ndarray, normalise: bool = False) -> np.ndarray:
    """(T, L) float64, per token and layer: H = -sum_i p_i ln p_i (nats), p_i = s_i / sum_j s_j over ALL E experts.

    Scores are renormalised to sum 1 first (sigmoid scores don't; softmax scores already do), so they must be
    non-negative; 0 ln 0 = 0 (an all-zero score row has H = 0). With `normalise=True` the result is divided by
    ln E (1 = uniform router). Computed by `routing_stats.router_entropy` (float32 stays float32 there: memory).
    """
    s = np.asarray(scores_TLE)
    s = s if s.dtype in (np.float32, np.float64) else s.astype(np.float64)
    if s.ndim != 3:
        raise ValueError(f"scores must have shape (T, L, E), got {s.shape}")
    if s.min(initial=0.0) < 0:
        raise ValueError("router_entropy needs non-negative scores (probabilities or sigmoid scores)")
    h = routing_stats.router_entropy(torch.from_numpy(np.ascontiguousarray(s))).numpy().astype(np.float64)
    return h / math.log(s.shape[-1]) if normalise else h


def router_entropy_per_layer(scores_TLE: np.ndarray, normalise: bool = False) -> np.ndarray:
    """(L,), per layer: mean over tokens of `router_entropy` (nats, or / ln E with normalise=True)."""
    return router_entropy(scores_TLE, normalise).mean(axis=0)


def bias_flip_rate(routing: pd.DataFrame, n_layers: int | None = None, per: str = "pair") -> np.ndarray:
    """(L,), per layer: share of routings chosen on score + bias that would not be chosen on score alone.

    per="pair":  flips / (T*K), over all (token, rank) pairs of the layer;
    per="token": share of tokens with at least one flipped expert in their top-k.
    """
    layer = routing["layer"].to_numpy(np.int64)
    flip = routing["bias_flip"].to_numpy(bool)
    L = int(layer.max()) + 1 if n_layers is None else n_layers
    if per == "pair":
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.bincount(layer, weights=flip, minlength=L) / np.bincount(layer, minlength=L)
    if per == "token":
        tr = routing["token_row"].to_numpy(np.int64)
        key = tr * L + layer  # one key per (token, layer)
        any_flip = np.bincount(key, weights=flip, minlength=(int(tr.max()) + 1) * L).reshape(-1, L) > 0
        present = np.bincount(key, minlength=(int(tr.max()) + 1) * L).reshape(-1, L) > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            return (any_flip & present).sum(axis=0) / present.sum(axis=0)
    raise ValueError(f"per must be 'pair' or 'token', got {per!r}")


# --- co-activation and cross-layer flow -----------------------------------------------------------------


@dataclass(frozen=True)
class Coactivation:
    """Per layer co-activation of expert pairs within a token's top-k (all pairs, not only adjacent ranks)."""

    counts_LEE: np.ndarray  # [l, i, j] tokens with both i and j in the top-k (i != j); diagonal = load_i
    cond_LEE: np.ndarray  # [l, i, j] P(j | i) = counts[l, i, j] / load[l, i]  (NaN for a dead expert i)
    lift_LEE: np.ndarray  # [l, i, j] P(i, j) / (P(i) P(j)) = counts[l, i, j] * T / (load_i * load_j)


def coactivation(experts: np.ndarray | pd.DataFrame, n_experts: int) -> Coactivation:
    """Co-activation per layer over ALL K*(K-1) ordered pairs of a token's top-k.

    counts[l, i, j] = #{t : i and j both in topk(t, l)}, i != j  (OLMoE's script counted only adjacent ranks).
    P(j | i) = counts[l, i, j] / load[l, i];  P(i) = load[l, i] / T;
    lift[l, i, j] = P(i, j) / (P(i) P(j)) = counts[l, i, j] * T / (load_i load_j)  (1 = independent, > 1 = together
    more often than chance; note that with K=1 all off-diagonal counts are 0). Diagonals: counts = load,
    cond = 1, lift = T / load_i.
    """
    e_TLK = as_experts(experts)
    T, L, K = e_TLK.shape
    E = n_experts
    base = (np.arange(L) * E * E)[None, :]  # (1, L)
    keys = [base + e_TLK[:, :, a] * E + e_TLK[:, :, b] for a in range(K) for b in range(K)]  # K*K arrays (T, L)
    counts = np.bincount(np.concatenate([k.ravel() for k in keys]), minlength=L * E * E).reshape(L, E, E)
    return coactivation_from_counts(counts, T)


def coactivation_from_counts(counts_LEE: np.ndarray, n_tokens: int) -> Coactivation:
    """`coactivation` from its pair counts (diagonal = load) and the number of tokens T, however they were
    counted (in memory above, or by a query over a routing dataset)."""
    counts = np.asarray(counts_LEE)
    load = np.diagonal(counts, axis1=1, axis2=2).astype(np.float64)  # (L, E) the a == b pairs are the load
    with np.errstate(invalid="ignore", divide="ignore"):
        cond = counts / load[:, :, None]
        lift = counts * float(n_tokens) / (load[:, :, None] * load[:, None, :])
    return Coactivation(counts, cond, lift)


def cross_layer_flow(experts: np.ndarray | pd.DataFrame, n_experts: int, mode: str = "top1") -> np.ndarray:
    """(L-1, E, E) int64 counts, per layer transition: flow[l, i, j] = tokens going from expert i at layer l
    to expert j at layer l+1.

    mode="top1": only the rank-0 expert of each layer (each token counts once per transition; rows sum to T);
    mode="all":  every (rank a at l, rank b at l+1) pair of the two top-k sets (each token counts K*K times).
    Row-normalise (flow / flow.sum(-1, keepdims=True)) for P(expert at l+1 | expert at l).
    """
    e_TLK = as_experts(experts)
    T, L, K = e_TLK.shape
    E = n_experts
    if L < 2:
        return np.zeros((0, E, E), np.int64)
    base = (np.arange(L - 1) * E * E)[None, :]  # (1, L-1)
    if mode == "top1":
        pairs = [(0, 0)]
    elif mode == "all":
        pairs = [(a, b) for a in range(K) for b in range(K)]
    else:
        raise ValueError(f"mode must be 'top1' or 'all', got {mode!r}")
    keys = [base + e_TLK[:, :-1, a] * E + e_TLK[:, 1:, b] for a, b in pairs]  # (T, L-1) each
    return np.bincount(np.concatenate([k.ravel() for k in keys]), minlength=(L - 1) * E * E).reshape(L - 1, E, E)


# --- consecutive tokens ----------------------------------------------------------------------------------


def _same_expert(e_TLK: np.ndarray, a: np.ndarray, b: np.ndarray, mode: str) -> np.ndarray:
    """(L,) share of token pairs (a[n], b[n]) that share their top-1 (mode="top1") or any top-k expert ("any")."""
    if len(a) == 0:
        return np.full(e_TLK.shape[1], np.nan)
    if mode == "top1":
        return (e_TLK[a, :, 0] == e_TLK[b, :, 0]).mean(axis=0)
    if mode == "any":
        ea, eb = e_TLK[a], e_TLK[b]  # (P, L, K)
        return (ea[:, :, :, None] == eb[:, :, None, :]).any(axis=(2, 3)).mean(axis=0)
    raise ValueError(f"mode must be 'top1' or 'any', got {mode!r}")


def consecutive_same_expert(
    experts: np.ndarray | pd.DataFrame,
    tokens: pd.DataFrame,
    *,
    mode: str = "top1",
    n_shuffles: int = 5,
    seed: int = 0,
) -> pd.DataFrame:
    """Per layer: how often consecutive tokens (same doc, positions p and p+1) get the same expert (Mixtral §5).

    rate[l] = #{(p, p+1) pairs : top1(p) == top1(p+1)} / #pairs          (mode="top1")
              #{pairs : topk(p) and topk(p+1) share >= 1 expert} / #pairs (mode="any")
    baseline[l] = the same rate after shuffling the token order within each document (seeded), averaged over
    `n_shuffles` shuffles; it keeps each doc's expert mix but destroys the order. ratio = rate / baseline.
    Returns columns: layer, n_pairs, rate, baseline, baseline_std, ratio.
    """
    e_TLK = as_experts(experts)
    T, L, K = e_TLK.shape
    doc = pd.factorize(token_column(tokens, "doc_id", T))[0]
    pos = token_column(tokens, "position", T).astype(np.int64)
    order = np.lexsort((pos, doc))  # rows grouped by doc, in position order
    valid = (doc[order[1:]] == doc[order[:-1]]) & (pos[order[1:]] == pos[order[:-1]] + 1)  # true neighbours
    rate = _same_expert(e_TLK, order[:-1][valid], order[1:][valid], mode)
    rng = np.random.default_rng(seed)
    shuffled = []
    for _ in range(n_shuffles):  # a few shuffles, each vectorised over all tokens
        perm = np.argsort(doc + rng.random(T))  # same doc blocks as `order`, random order inside each doc
        shuffled.append(_same_expert(e_TLK, perm[:-1][valid], perm[1:][valid], mode))
    sh = np.array(shuffled).reshape(n_shuffles, L)
    baseline = sh.mean(axis=0) if n_shuffles else np.full(L, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = rate / baseline
    return pd.DataFrame(
        {
            "layer": np.arange(L),
            "n_pairs": int(valid.sum()),
            "rate": rate,
            "baseline": baseline,
            "baseline_std": sh.std(axis=0) if n_shuffles else np.full(L, np.nan),
            "ratio": ratio,
        }
    )


# --- router saturation between two checkpoints -----------------------------------------------------------


def router_saturation(experts_a: np.ndarray | pd.DataFrame, experts_b: np.ndarray | pd.DataFrame) -> pd.DataFrame:
    """Per layer agreement of two traces of the SAME tokens (e.g. checkpoint s vs the final one; OLMoE).

    top1_agreement[l] = mean_t [top1_a(t, l) == top1_b(t, l)]
    topk_overlap[l]   = mean_t |topk_a(t, l) ∩ topk_b(t, l)| / K
    topk_exact[l]     = mean_t [topk_a(t, l) == topk_b(t, l) as sets]
    Returns columns: layer, top1_agreement, topk_overlap, topk_exact.
    """
    a, b = as_experts(experts_a), as_experts(experts_b)
    if a.shape != b.shape:
        raise ValueError(f"traces differ in shape: {a.shape} vs {b.shape} (same tokens, layers and top-k needed)")
    K = a.shape[2]
    inter = (a[:, :, :, None] == b[:, :, None, :]).any(axis=3).sum(axis=2)  # (T, L) |A ∩ B| (distinct experts)
    return pd.DataFrame(
        {
            "layer": np.arange(a.shape[1]),
            "top1_agreement": (a[:, :, 0] == b[:, :, 0]).mean(axis=0),
            "topk_overlap": (inter / K).mean(axis=0),
            "topk_exact": (inter == K).mean(axis=0),
        }
    )


# --- summary -----------------------------------------------------------------------------------------------


def summary(
    routing: pd.DataFrame,
    n_experts: int,
    tokens: pd.DataFrame | None = None,
    scores: np.ndarray | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Tidy per-layer table of the main numbers (one row per layer, nothing averaged over layers).

    Columns: layer, n_tokens, max_vio, cv, load_entropy (H/log E), dead_experts (count), min_share, max_share,
    bias_flip_rate (per pair, if `routing` has bias_flip), router_entropy (mean nats, if `scores`),
    consecutive_top1 and consecutive_baseline (if `tokens`; 1 within-doc shuffle).
    """
    e_TLK, _ = dense_routing(routing)
    T, L, K = e_TLK.shape
    out = load_summary(expert_load(e_TLK, n_experts), T)
    if "bias_flip" in routing:
        out["bias_flip_rate"] = bias_flip_rate(routing, L)
    if scores is not None:
        out["router_entropy"] = router_entropy_per_layer(scores)
    if tokens is not None:
        cons = consecutive_same_expert(e_TLK, tokens, n_shuffles=1, seed=seed)
        out["consecutive_top1"] = cons["rate"].to_numpy()
        out["consecutive_baseline"] = cons["baseline"].to_numpy()
    return out


def load_summary(load_LE: np.ndarray, n_tokens: int) -> pd.DataFrame:
    """The load columns of `summary` from an (L, E) load matrix: layer, n_tokens, max_vio, cv, load_entropy,
    dead_experts, min_share, max_share (used as is by the out-of-core queries over a routing dataset)."""
    load = np.asarray(load_LE)
    share = load_share(load)
    return pd.DataFrame(
        {
            "layer": np.arange(load.shape[0]),
            "n_tokens": n_tokens,
            "max_vio": max_vio(load),
            "cv": load_cv(load),
            "load_entropy": load_entropy(load),
            "dead_experts": dead_experts(load).sum(axis=1),
            "min_share": share.min(axis=1),
            "max_share": share.max(axis=1),
        }
    )
