"""Shuffle baselines of the plug-in mutual information from count tables, for a routing dataset (DuckDB counts)
where the in-memory `specialization.mi_shuffle_baseline` would need every token in memory.

- I(expert; domain): labels belong to documents, so a shuffle permutes the labels of the labelled documents
  (`mi_label_shuffles_of`, from `specialization.DocCounts`). It draws the same permutations from the same seed
  as the in-memory function, so on the same documents (in the same order) it gives the same numbers.
- I(expert; token id): a shuffle permutes token ids across tokens. Its expected value needs only how many
  tokens carry each id and each expert's load (`mi_token_shuffle_expectation`): exact, where the in-memory
  function averages a few random shuffles (it estimates this number), and without reading any token.
"""

from __future__ import annotations

import numpy as np

from analysis.specialization import DocCounts, mi_from_counts

CHUNK_POINTS = 1_000_000  # support points of the hypergeometric sums per step (~50 MB of temporaries)


def mi_label_shuffles_of(docs: DocCounts, n_experts: int, n_shuffles: int = 10, seed: int = 0) -> np.ndarray:
    """(n_shuffles, L) plug-in I(expert; domain) in bits with the documents' labels permuted: the runs of
    `specialization.mi_shuffle_baseline(..., groups=doc ids)` (same seed, same permutations: documents in
    `docs` order = their order of appearance in a trace)."""
    L, N, E = docs.counts_LNE.shape
    D = len(docs.labels)
    flat_NM = docs.counts_LNE.transpose(1, 0, 2).reshape(N, L * E).astype(np.float64)
    rng = np.random.default_rng(seed)
    runs = np.zeros((n_shuffles, L))
    for b in range(n_shuffles):
        label_N = docs.label_N[rng.permutation(N)]  # doc n takes the label of doc perm[n], as the in-memory one
        onehot_DN = np.zeros((D, N))
        onehot_DN[label_N, np.arange(N)] = 1.0
        c_DM = onehot_DN @ flat_NM  # sums of whole counts: exact in float64, equal to the in-memory bincount
        runs[b] = [mi_from_counts(c_DM[:, l * E : (l + 1) * E]) for l in range(L)]
    return runs


def mi_token_shuffle_expectation(n_X: np.ndarray, m_E: np.ndarray, top_k: int) -> float:
    """The expected plug-in I(expert; token id) in bits of one layer when the token ids are permuted across the
    tokens: what `specialization.mi_shuffle_baseline` estimates with a few random shuffles, computed exactly.

    n_X: tokens per token id; m_E: tokens whose top-k contains expert i (`metrics.expert_load` of the layer);
    T = sum(n_X) tokens, n = T * top_k routings. A permutation keeps the margins (id x: n_x * top_k routings,
    expert i: m_i), so I = (sum c log2 c - sum_x r_x log2 r_x - sum_i m_i log2 m_i) / n + log2 n with
    c = c(x, i), r_x = n_x * top_k, and only sum c log2 c varies. Each c(x, i) is the number of the m_i tokens
    holding expert i among the n_x tokens that get id x: hypergeometric (T, m_i, n_x), whatever the rest of the
    table does, so E[c log2 c] is a sum over its support (cut 9 sd + 12 from the mean, where the tail is
    negligible) and depends on n_x only through its value: ids with the same count are counted once. Exact up
    to that cut and the rounding of log-gamma differences: 3e-10 relative against the whole support with
    scipy's pmf on 20,000 tokens; equal to the mean over every permutation on a tiny case (tests)."""
    n_X = np.asarray(n_X, np.int64)
    m_E = np.asarray(m_E, np.int64)
    n_X, m_E = n_X[n_X > 0], m_E[m_E > 0]
    T, K = int(n_X.sum()), int(top_k)
    if T == 0:
        return float("nan")
    if int(m_E.sum()) != T * K:
        raise ValueError(f"{T:,} tokens x top-{K} is not the {int(m_E.sum()):,} routings of the experts' loads")
    values, ids = np.unique(n_X, return_counts=True)
    v, m = np.repeat(values, len(m_E)), np.tile(m_E, len(values))  # every (count, expert) pair
    weight = np.repeat(ids, len(m_E)).astype(np.float64)
    mean = v * m / T
    sd = np.sqrt(v * (m / T) * (1 - m / T) * (T - v) / max(T - 1, 1))
    lo = np.maximum(np.maximum(0, v + m - T), np.floor(mean - 9 * sd - 12)).astype(np.int64)
    hi = np.minimum(np.minimum(v, m), np.ceil(mean + 9 * sd + 12)).astype(np.int64)
    size = hi - lo + 1
    log_total = _log_choose(T, v)
    expected_cc = 0.0  # E[sum_{x,i} c log2 c]
    chunk = np.searchsorted(np.cumsum(size), np.arange(CHUNK_POINTS, int(size.sum()), CHUNK_POINTS))
    for part in np.split(np.arange(len(v)), chunk):  # a bounded number of support points at a time
        sz = size[part]
        pair = np.repeat(part, sz)  # ragged ranges lo..hi, one after another
        k = lo[pair] + np.arange(sz.sum()) - np.repeat(np.cumsum(sz) - sz, sz)
        mp, vp = m[pair], v[pair]  # log pmf from log-gammas: ~20x faster than scipy.stats.hypergeom.pmf here
        pmf = np.exp(_log_choose(mp, k) + _log_choose(T - mp, vp - k) - log_total[pair])
        expected_cc += float(np.dot(weight[pair] * pmf, np.where(k > 0, k * np.log2(np.maximum(k, 1)), 0.0)))
    n = T * K
    r = n_X * K
    return (expected_cc - float(r @ np.log2(r)) - float(m_E @ np.log2(m_E))) / n + float(np.log2(n))


def _log_choose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """ln C(a, b), elementwise (0 <= b <= a)."""
    from scipy.special import gammaln

    return gammaln(a + 1.0) - gammaln(b + 1.0) - gammaln(a - b + 1.0)
