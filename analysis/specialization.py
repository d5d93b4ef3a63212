"""Domain and token specialization of experts: shares vs uniform, permutation baselines, bootstrap CIs,
mutual information. Pure, vectorised functions (numpy/pandas). The linear domain probe is `analysis.domain_probe`.

Inputs as in analysis.metrics: `experts` is a dense (T, L, K) expert array (`metrics.dense_routing`) or a
`routing` DataFrame; `tokens` is the tokens table (index token_row 0..T-1) with `doc_id`, `token_id`, `label`.
Tokens with an empty/missing label are left out of everything that needs a label. Labels belong to
documents: a document with two labels is a ValueError.

Shape legend: T tokens, L layers, K top-k, E experts, N documents, D labels (domains), B resamples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.metrics import as_experts, token_column

# --- shared plumbing ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DocCounts:
    """Labelled documents and their routing histograms (from a trace by `doc_counts`, or counted by a query
    over a routing dataset): the input of the `..._of` functions below."""

    counts_LNE: np.ndarray  # [l, n, i] routings of doc n's tokens to expert i at layer l (top-k contains i)
    tokens_N: np.ndarray  # tokens per doc
    label_N: np.ndarray  # label code per doc, 0..D-1
    labels: list[str]  # label names, label code -> name
    doc_ids: list[str]
    top_k: int


def doc_counts(experts: np.ndarray | pd.DataFrame, tokens: pd.DataFrame, n_experts: int) -> DocCounts:
    """Group the labelled tokens by document: (L, N, E) routing counts via one bincount (unlabelled tokens
    left out). The input of every document-level resampling (bootstrap, label permutations)."""
    e_TLK = as_experts(experts)
    T, L, K = e_TLK.shape
    lab_T, labels = _label_codes(tokens, T)
    keep = lab_T >= 0
    if not keep.any():
        raise ValueError("no labelled tokens: domain specialization needs a 'label' per document")
    doc_all, doc_names = pd.factorize(token_column(tokens, "doc_id", T))
    doc_T, doc_used = pd.factorize(doc_all[keep])  # compact: labelled docs only, in order of appearance
    doc_ids = [str(doc_names[i]) for i in doc_used]
    N = len(doc_ids)
    lab_T = lab_T[keep]
    label_N = np.full(N, -1, np.int64)
    label_N[doc_T] = lab_T
    if (label_N[doc_T] != lab_T).any():  # a later token of the doc overwrote a different label
        raise ValueError("a document has more than one label; labels must be per document")
    e = e_TLK[keep]  # (T', L, K)
    key = (np.arange(L)[None, :, None] * N + doc_T[:, None, None]) * n_experts + e  # flat (layer, doc, expert)
    counts = np.bincount(key.ravel(), minlength=L * N * n_experts).reshape(L, N, n_experts)
    return DocCounts(counts, np.bincount(doc_T, minlength=N), label_N, labels, doc_ids, K)


def _ratio(docs: DocCounts, W_BND: np.ndarray, n_experts: int) -> np.ndarray:
    """(B, L, D, E) ratio = share / (K/E) for B weightings W[b, n, d] of documents into labels."""
    counts = np.einsum("bnd,lne->blde", W_BND, docs.counts_LNE, optimize=True)  # (B, L, D, E)
    n_tok = W_BND.transpose(0, 2, 1) @ docs.tokens_N  # (B, D)
    with np.errstate(invalid="ignore", divide="ignore"):
        return counts / n_tok[:, None, :, None] / (docs.top_k / n_experts)


def _onehot(label_N: np.ndarray, D: int) -> np.ndarray:
    return (label_N[:, None] == np.arange(D)[None, :]).astype(np.float64)  # (N, D)


def cell_index(L: int, labels: list[str], E: int) -> pd.DataFrame:
    """The (layer, label, expert) index in C order of an (L, D, E) array."""
    D = len(labels)
    return pd.DataFrame(
        {
            "layer": np.repeat(np.arange(L), D * E),
            "label": np.tile(np.repeat(np.array(labels, dtype=object), E), L),
            "expert": np.tile(np.arange(E), L * D),
        }
    )


# --- domain specialization ---------------------------------------------------------------------------------


def domain_specialization(experts: np.ndarray | pd.DataFrame, tokens: pd.DataFrame, n_experts: int) -> pd.DataFrame:
    """Per layer, label and expert: the label's "share of tokens" of the expert, vs uniform K/E.

    share[l, d, i] = #{tokens t of label d : i in topk(t, l)} / #{tokens of label d}
        the SHARE OF TOKENS: sums to K over i, uniform K/E. The "share of routings" (each (token, rank) choice
        one routing; sums to 1 over i, uniform 1/E) is share / K, and has the same ratio to its uniform value.
    ratio[l, d, i] = share / (K / E)      (1 = as often as uniform routing, 0 = never, E/K = always)
    Returns columns: layer, label, expert, count, n_tokens, share (of tokens), ratio.
    """
    return domain_specialization_of(doc_counts(experts, tokens, n_experts), n_experts)


def domain_specialization_of(docs: DocCounts, n_experts: int) -> pd.DataFrame:
    """`domain_specialization` of labelled documents' routing counts."""
    L, D = docs.counts_LNE.shape[0], len(docs.labels)
    onehot = _onehot(docs.label_N, D)
    counts = np.einsum("nd,lne->lde", onehot, docs.counts_LNE)  # (L, D, E)
    n_tok = onehot.T @ docs.tokens_N  # (D,)
    out = cell_index(L, docs.labels, n_experts)
    out["count"] = counts.ravel().astype(np.int64)
    out["n_tokens"] = np.broadcast_to(n_tok[None, :, None], counts.shape).ravel().astype(np.int64)
    out["share"] = out["count"] / out["n_tokens"]
    out["ratio"] = out["share"] / (docs.top_k / n_experts)
    return out


@dataclass(frozen=True)
class PermutationBaseline:
    """Result of `specialization_permutation_baseline`."""

    cells: pd.DataFrame  # layer, label, expert, ratio, perm_mean, perm_lo, perm_hi, p_value
    max_ratio: pd.DataFrame  # layer, max_ratio, perm_mean, perm_lo, perm_hi, p_value


def specialization_permutation_baseline(
    experts: np.ndarray | pd.DataFrame,
    tokens: pd.DataFrame,
    n_experts: int,
    *,
    n_permutations: int = 200,
    quantiles: tuple[float, float] = (0.05, 0.95),
    seed: int = 0,
) -> PermutationBaseline:
    """Domain-specialization ratios under label permutations across documents (null: routing ignores domain).

    Each permutation shuffles the labels of the labelled documents (seeded; label sizes in docs are kept) and
    recomputes ratio[l, d, i] as in `domain_specialization`. Per cell: perm_mean and the `quantiles` of the
    permuted ratios, p_value = (1 + #{perm >= observed}) / (1 + n_permutations) (one-sided, "more than chance").
    Per layer: the same for max_{d,i} ratio (the headline "most specialised expert" number).
    """
    docs = doc_counts(experts, tokens, n_experts)
    return permutation_baseline_of(docs, n_experts, n_permutations=n_permutations, quantiles=quantiles, seed=seed)


def permutation_baseline_of(
    docs: DocCounts,
    n_experts: int,
    *,
    n_permutations: int = 200,
    quantiles: tuple[float, float] = (0.05, 0.95),
    seed: int = 0,
) -> PermutationBaseline:
    """`specialization_permutation_baseline` of labelled documents' routing counts."""
    L, N = docs.counts_LNE.shape[:2]
    D = len(docs.labels)
    observed = _ratio(docs, _onehot(docs.label_N, D)[None], n_experts)[0]  # (L, D, E)
    rng = np.random.default_rng(seed)
    perm_label_BN = rng.permuted(np.broadcast_to(docs.label_N, (n_permutations, N)), axis=1)
    W = (perm_label_BN[:, :, None] == np.arange(D)[None, None, :]).astype(np.float64)  # (B, N, D)
    perm = _ratio(docs, W, n_experts)  # (B, L, D, E)
    lo, hi = quantiles
    cells = cell_index(L, docs.labels, n_experts)
    cells["ratio"] = observed.ravel()
    cells["perm_mean"] = perm.mean(axis=0).ravel()
    cells["perm_lo"] = np.quantile(perm, lo, axis=0).ravel()
    cells["perm_hi"] = np.quantile(perm, hi, axis=0).ravel()
    cells["p_value"] = ((1 + (perm >= observed[None] - 1e-12).sum(axis=0)) / (1 + n_permutations)).ravel()
    obs_max = observed.reshape(L, -1).max(axis=1)  # (L,)
    perm_max = perm.reshape(n_permutations, L, -1).max(axis=2)  # (B, L)
    max_ratio = pd.DataFrame(
        {
            "layer": np.arange(L),
            "max_ratio": obs_max,
            "perm_mean": perm_max.mean(axis=0),
            "perm_lo": np.quantile(perm_max, lo, axis=0),
            "perm_hi": np.quantile(perm_max, hi, axis=0),
            "p_value": (1 + (perm_max >= obs_max[None] - 1e-12).sum(axis=0)) / (1 + n_permutations),
        }
    )
    return PermutationBaseline(cells, max_ratio)


def specialization_bootstrap_ci(
    experts: np.ndarray | pd.DataFrame,
    tokens: pd.DataFrame,
    n_experts: int,
    *,
    n_boot: int = 200,
    ci: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Bootstrap confidence interval of each domain-specialization ratio, resampling DOCUMENTS.

    Each resample draws, for every label d, n_d documents with replacement from that label's n_d documents
    (stratified, so every label stays present), and recomputes ratio[l, d, i] (tokens of a doc stay together,
    which respects the correlation of tokens within a doc). lo/hi are the (1-ci)/2 and (1+ci)/2 quantiles
    (percentile bootstrap). A label with one document gets lo == hi == ratio (no variation to resample).
    Returns columns: layer, label, expert, ratio, lo, hi.
    """
    docs = doc_counts(experts, tokens, n_experts)
    L, N = docs.counts_LNE.shape[:2]
    D = len(docs.labels)
    rng = np.random.default_rng(seed)
    W = np.zeros((n_boot, N, D))
    for d in range(D):  # a loop over labels (few), each vectorised over resamples and documents
        members = np.flatnonzero(docs.label_N == d)
        draws = members[rng.integers(0, len(members), size=(n_boot, len(members)))]  # (B, n_d) doc indices
        np.add.at(W, (np.arange(n_boot)[:, None], draws, d), 1.0)
    boot = _ratio(docs, W, n_experts)  # (B, L, D, E)
    out = cell_index(L, docs.labels, n_experts)
    out["ratio"] = _ratio(docs, _onehot(docs.label_N, D)[None], n_experts)[0].ravel()
    out["lo"] = np.quantile(boot, (1 - ci) / 2, axis=0).ravel()
    out["hi"] = np.quantile(boot, (1 + ci) / 2, axis=0).ravel()
    return out


# --- mutual information -----------------------------------------------------------------------------------------


def mutual_information(experts: np.ndarray | pd.DataFrame, codes: np.ndarray, n_experts: int) -> np.ndarray:
    """(L,) per layer: plug-in mutual information I(expert; X) in bits, each (token, rank) routing one sample.

    p(x, i) = c(x, i) / n with c(x, i) = #{tokens t with X_t = x and i in topk(t, l)}, n = T' * K;
    I = sum_{x,i} p(x,i) log2( p(x,i) / (p(x) p(i)) ).  Tokens with a negative code are left out.
    Plug-in estimator: biased upward, strongly so when X has many values with few tokens each (token ids);
    compare with `mi_shuffle_baseline`.
    """
    e_TLK = as_experts(experts)
    codes = np.asarray(codes)
    keep = codes >= 0
    x_T = pd.factorize(codes[keep])[0].astype(np.int64)  # compact codes 0..X-1
    return _mi_compact(e_TLK[keep], x_T, int(x_T.max()) + 1 if len(x_T) else 0, n_experts)


def _mi_compact(e: np.ndarray, x_T: np.ndarray, X: int, n_experts: int) -> np.ndarray:
    """`mutual_information` for codes already compact (0..X-1, none missing); e is (T', L, K)."""
    L = e.shape[1]
    mi = np.zeros(L)
    for l in range(L):  # a loop over layers only; each layer is one bincount over all tokens
        c = np.bincount((x_T[:, None] * n_experts + e[:, l, :]).ravel(), minlength=X * n_experts).astype(np.float64)
        mi[l] = mi_from_counts(c.reshape(X, n_experts))
    return mi


def mi_from_counts(c_XE: np.ndarray) -> float:
    """Plug-in I(expert; X) in bits of one layer's counts c[x, i] (see `mutual_information`); NaN when empty."""
    c = np.asarray(c_XE, dtype=np.float64)
    n = c.sum()
    if n == 0:
        return np.nan
    px, pe = c.sum(axis=1) / n, c.sum(axis=0) / n
    nz = c > 0
    pxe = c[nz] / n
    return float((pxe * np.log2(pxe / np.outer(px, pe)[nz])).sum())


def _label_codes(tokens: pd.DataFrame, T: int) -> tuple[np.ndarray, list[str]]:
    """(T,) label code per token (-1 = unlabelled: empty or missing) and the sorted label names."""
    codes, names = pd.factorize(token_column(tokens, "label", T), sort=True)  # factorize, not str ops: fast
    names = [str(x) for x in names]
    if "" in names:  # "" sorts first: drop it and shift the other codes down
        empty = names.index("")
        codes = np.where(codes == empty, -1, codes - (codes > empty))
        names.remove("")
    return codes.astype(np.int64), names


def mi_shuffle_baseline(
    experts: np.ndarray | pd.DataFrame,
    codes: np.ndarray,
    n_experts: int,
    *,
    groups: np.ndarray | None = None,
    n_shuffles: int = 20,
    seed: int = 0,
) -> pd.DataFrame:
    """Per layer: plug-in MI (bits) next to its value when X is shuffled (the plug-in bias under independence).

    groups=None: X is permuted across tokens (for token ids). groups (T,), e.g. document ids: X is constant
    within a group and the group -> X mapping is permuted (for domains, which belong to documents).
    Returns columns: layer, mi_bits, baseline_mean, baseline_hi (95th percentile), mi_corrected
    (mi_bits - baseline_mean, a simple bias correction).
    """
    e_TLK = as_experts(experts)
    codes = np.asarray(codes).astype(np.int64)
    keep = codes >= 0
    x_T = pd.factorize(codes[keep])[0].astype(np.int64)  # compact once; shuffles permute these codes
    X = int(x_T.max()) + 1 if len(x_T) else 0
    e = e_TLK[keep]
    observed = _mi_compact(e, x_T, X, n_experts)
    rng = np.random.default_rng(seed)
    if groups is not None:
        g_T = pd.factorize(np.asarray(groups)[keep])[0]
        G = int(g_T.max()) + 1 if len(g_T) else 0
        code_G = np.full(G, -1, np.int64)
        code_G[g_T] = x_T
        if (code_G[g_T] != x_T).any():
            raise ValueError("codes must be constant within each group")
    runs = []
    for _ in range(n_shuffles):  # a few shuffles, each one vectorised MI
        shuffled = code_G[rng.permutation(G)][g_T] if groups is not None else rng.permutation(x_T)
        runs.append(_mi_compact(e, shuffled, X, n_experts))
    base = np.array(runs).reshape(n_shuffles, -1)
    return pd.DataFrame(
        {
            "layer": np.arange(len(observed)),
            "mi_bits": observed,
            "baseline_mean": base.mean(axis=0) if n_shuffles else np.nan,
            "baseline_hi": np.quantile(base, 0.95, axis=0) if n_shuffles else np.nan,
            "mi_corrected": observed - base.mean(axis=0) if n_shuffles else np.nan,
        }
    )


def mi_expert_domain(experts: np.ndarray | pd.DataFrame, tokens: pd.DataFrame, n_experts: int) -> np.ndarray:
    """(L,) per layer: plug-in I(expert; domain label) in bits (see `mutual_information`); unlabelled left out."""
    e_TLK = as_experts(experts)
    return mutual_information(e_TLK, _label_codes(tokens, e_TLK.shape[0])[0], n_experts)


def mi_expert_token(experts: np.ndarray | pd.DataFrame, tokens: pd.DataFrame, n_experts: int) -> np.ndarray:
    """(L,) per layer: plug-in I(expert; token id) in bits (see `mutual_information`; heavily biased upward)."""
    e_TLK = as_experts(experts)
    return mutual_information(e_TLK, token_column(tokens, "token_id", e_TLK.shape[0]).astype(np.int64), n_experts)


def mi_summary(
    experts: np.ndarray | pd.DataFrame, tokens: pd.DataFrame, n_experts: int, *, n_shuffles: int = 10, seed: int = 0
) -> pd.DataFrame:
    """Per layer: I(expert; domain) and I(expert; token id) in bits (plug-in), each with its shuffle baseline.

    Domain labels are shuffled across documents, token ids across tokens (`mi_shuffle_baseline`).
    Columns: layer, mi_domain_bits, mi_domain_baseline, mi_token_bits, mi_token_baseline.
    """
    e_TLK = as_experts(experts)
    T = e_TLK.shape[0]
    dom = mi_shuffle_baseline(
        e_TLK,
        _label_codes(tokens, T)[0],
        n_experts,
        groups=token_column(tokens, "doc_id", T),
        n_shuffles=n_shuffles,
        seed=seed,
    )
    tok = mi_shuffle_baseline(e_TLK, token_column(tokens, "token_id", T), n_experts, n_shuffles=n_shuffles, seed=seed)
    return pd.DataFrame(
        {
            "layer": dom["layer"],
            "mi_domain_bits": dom["mi_bits"],
            "mi_domain_baseline": dom["baseline_mean"],
            "mi_token_bits": tok["mi_bits"],
            "mi_token_baseline": tok["baseline_mean"],
        }
    )


# --- token specialization (OLMoE) --------------------------------------------------------------------------------


def token_specialization(
    experts: np.ndarray | pd.DataFrame, tokens: pd.DataFrame, n_experts: int, *, min_count: int = 10, top1: bool = False
) -> pd.DataFrame:
    """Per layer and token id (OLMoE): share of the id's occurrences routed to its most frequent expert.

    share[l, x] = max_i #{t : token_id_t = x, i in topk(t, l)} / #{t : token_id_t = x}   (top1=True: i = top1)
    Only ids with >= min_count occurrences. Uniform routing gives about K/E (1/E with top1); 1 = the id always
    goes to the same expert. Ties go to the lowest expert index.
    Returns columns: layer, token_id, count, top_expert, share.
    """
    e_TLK = as_experts(experts)
    T, L, K = e_TLK.shape
    ids = token_column(tokens, "token_id", T).astype(np.int64)
    uniq, x_T, count_X = np.unique(ids, return_inverse=True, return_counts=True)
    frequent = count_X >= min_count
    e = e_TLK[:, :, :1] if top1 else e_TLK
    X = len(uniq)
    frames = []
    for l in range(L):  # loop over layers only
        c = np.bincount((x_T[:, None] * n_experts + e[:, l, :]).ravel(), minlength=X * n_experts)
        frames.append(token_shares(l, uniq[frequent], count_X[frequent], c.reshape(X, n_experts)[frequent]))
    return pd.concat(frames, ignore_index=True)


def token_shares(layer: int, token_ids: np.ndarray, count_X: np.ndarray, c_XE: np.ndarray) -> pd.DataFrame:
    """One layer's rows of `token_specialization` from the counts c[x, i] of each id's routings to each expert
    and the id's occurrences count[x] (ties of the argmax go to the lowest expert index)."""
    return pd.DataFrame(
        {
            "layer": layer,
            "token_id": token_ids,
            "count": count_X,
            "top_expert": c_XE.argmax(axis=1),
            "share": c_XE.max(axis=1) / count_X,
        }
    )


def token_specialization_summary(per_token: pd.DataFrame, uniform: float | None = None) -> pd.DataFrame:
    """Per layer summary of `token_specialization`: n_token_ids, mean_share (each id counts once),
    weighted_share (ids weighted by occurrences), median_share, and `uniform` (pass K/E or 1/E) if given."""
    g = per_token.groupby("layer")
    routed = (per_token["share"] * per_token["count"]).groupby(per_token["layer"]).sum()
    out = pd.DataFrame(
        {
            "n_token_ids": g.size(),
            "mean_share": g["share"].mean(),
            "weighted_share": routed / g["count"].sum(),
            "median_share": g["share"].median(),
        }
    ).reset_index()
    if uniform is not None:
        out["uniform"] = uniform
    return out
