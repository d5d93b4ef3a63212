"""Shuffle baselines of the plug-in mutual information from count tables, for a routing dataset (DuckDB counts)
where the in-memory `specialization.mi_shuffle_baseline` would need every token in memory.

- I(expert; domain): labels belong to documents, so a shuffle permutes the labels of the labelled documents
  (`mi_label_shuffles_of`, from `specialization.DocCounts`). It draws the same permutations from the same seed
  as the in-memory function, so on the same documents (in the same order) it gives the same numbers.
- I(expert; token id): a shuffle permutes token ids across tokens, i.e. pairs the token ids with the tokens'
  top-k sets at random. Only how many tokens carry each id and how many tokens chose each top-k set matter
  (`mi_token_shuffles_of`): the same distribution as the in-memory shuffle, not the same draws.
"""

from __future__ import annotations

import numpy as np

from analysis.specialization import DocCounts, mi_from_counts


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


def mi_token_shuffles_of(
    n_X: np.ndarray, sets_SK: np.ndarray, m_S: np.ndarray, n_experts: int, n_shuffles: int = 10, seed: int = 0
) -> np.ndarray:
    """(n_shuffles,) plug-in I(expert; token id) in bits of one layer with the token ids shuffled across tokens.

    n_X: tokens per token id; sets_SK: the distinct top-k expert sets chosen at the layer; m_S: tokens per set
    (sum(n_X) == sum(m_S) == T). Pairing the ids, sorted, with a random permutation of the tokens' sets is a
    uniformly random pairing, as permuting the ids over the tokens is. Memory O(T) per shuffle."""
    n_X, m_S = np.asarray(n_X, np.int64), np.asarray(m_S, np.int64)
    if n_X.sum() != m_S.sum():
        raise ValueError(f"{n_X.sum():,} tokens have a token id but {m_S.sum():,} have a top-k set")
    X, E = len(n_X), int(n_experts)
    x_T = np.repeat(np.arange(X, dtype=np.int64), n_X) * E
    set_T = np.repeat(np.arange(len(m_S), dtype=np.int64), m_S)
    sets_SK = np.asarray(sets_SK, np.int64)
    rng = np.random.default_rng(seed)
    runs = np.zeros(n_shuffles)
    for b in range(n_shuffles):
        shuffled = set_T[rng.permutation(len(set_T))]
        c = np.zeros(X * E, np.int64)
        for k in range(sets_SK.shape[1]):  # one rank at a time: arrays of T, not T x K
            c += np.bincount(x_T + sets_SK[shuffled, k], minlength=X * E)
        runs[b] = mi_from_counts(c.reshape(X, E))
    return runs
