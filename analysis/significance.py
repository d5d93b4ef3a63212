"""Tests behind the specialization claims: is a number more than chance, and how sure are we?

- `familywise_domain_null`: the reported domain x expert cell is the BEST of E experts, so its null is the
  max over experts under label permutation (family-wise over experts), not each cell's own null.
- `consecutive_test`: consecutive tokens on the same top-1 expert, per layer, as a z-score against the spread
  of within-document shuffles, and the conclusion that test allows.
- `probe_permutation_baseline`: the domain probe's accuracy against the same probe fitted on permuted labels.

Every p-value is a permutation p-value (1 + #{null >= observed}) / (1 + B), whose floor is 1 / (1 + B): a
p-value at the floor means "no permutation reached the observed value", never "p = floor exactly".
Shapes: T tokens, L layers, K top-k, E experts, N documents, D labels, B permutations.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis import domain_probe, metrics, specialization

N_PERMUTATIONS = 100_000  # family-wise null: floor 1e-5; a batched matmul, ~1 s for 64 docs
PROBE_PERMUTATIONS = 50  # probe baseline: each permutation refits L + 1 cross-validated probes (~0.8 s)
SHUFFLES = 200  # consecutive-token test: within-document shuffles behind the baseline's mean and std
ALPHA = 0.01  # family-wise error rate of a stated conclusion (Bonferroni over the layers)


def p_floor(n_permutations: int) -> float:
    """The smallest permutation p-value B permutations can give: 1 / (1 + B)."""
    return 1.0 / (1 + n_permutations)


def familywise_domain_null(
    experts: np.ndarray | pd.DataFrame,
    tokens: pd.DataFrame,
    n_experts: int,
    *,
    n_permutations: int = N_PERMUTATIONS,
    chunk: int = 2_000,
    seed: int = 0,
) -> pd.DataFrame:
    """Per (layer, label): the most specialised expert and a family-wise permutation test of it.

    statistic M[l, d] = max_i ratio[l, d, i] (ratio as in `specialization.domain_specialization`).
    null: document labels permuted (label sizes kept, seeded), M recomputed as the max over all E experts.
    p_value = (1 + #{null M >= observed M}) / (1 + B) (one-sided), p_floor = 1 / (1 + B);
    z = (M - mean null M) / std null M (how far beyond the null, where p is at its floor).
    Returns columns: layer, label, expert, share_of_tokens (sums to K over experts), share_of_routings
    (sums to 1), ratio, null_mean, null_p95, z, p_value, p_floor, n_permutations.
    """
    docs = specialization.doc_counts(experts, tokens, n_experts)
    L, N, E = docs.counts_LNE.shape
    D, K = len(docs.labels), docs.top_k
    counts_NX = docs.counts_LNE.transpose(1, 0, 2).reshape(N, L * E).astype(np.float64)  # X = (layer, expert)

    def max_ratio(label_BN: np.ndarray) -> np.ndarray:
        """(B, L, D) max over experts of the ratio, for B labellings of the documents."""
        onehot_BDN = (label_BN[:, None, :] == np.arange(D)[None, :, None]).astype(np.float64)
        counts = (onehot_BDN @ counts_NX).reshape(len(label_BN), D, L, E)  # one batched matmul
        n_tok = onehot_BDN @ docs.tokens_N  # (B, D)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = counts / n_tok[:, :, None, None] / (K / E)
        return ratio.max(axis=3).transpose(0, 2, 1)

    observed = specialization.domain_specialization(experts, tokens, n_experts)
    best = observed.loc[observed.groupby(["layer", "label"], sort=True)["ratio"].idxmax()].reset_index(drop=True)
    obs_LD = best["ratio"].to_numpy().reshape(L, D)  # groupby sorts by layer, then label code order
    rng = np.random.default_rng(seed)
    null = np.concatenate(  # (B, L, D); chunks bound the memory of the matmul at chunk x N x (D + L x E)
        [
            max_ratio(rng.permuted(np.broadcast_to(docs.label_N, (min(chunk, n_permutations - s), N)), axis=1))
            for s in range(0, n_permutations, chunk)
        ]
    )
    mean, std = null.mean(axis=0), null.std(axis=0, ddof=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (obs_LD - mean) / std
    return pd.DataFrame(
        {
            "layer": best["layer"],
            "label": best["label"],
            "expert": best["expert"],
            "share_of_tokens": best["share"],
            "share_of_routings": best["share"] / K,
            "ratio": best["ratio"],
            "null_mean": mean.ravel(),
            "null_p95": np.quantile(null, 0.95, axis=0).ravel(),
            "z": z.ravel(),
            "p_value": ((1 + (null >= obs_LD[None] - 1e-12).sum(axis=0)) / (1 + n_permutations)).ravel(),
            "p_floor": p_floor(n_permutations),
            "n_permutations": n_permutations,
        }
    )


def normal_two_sided_p(z: np.ndarray) -> np.ndarray:
    """Two-sided p-value of a z-score under a standard normal: erfc(|z| / sqrt 2)."""
    return np.array([math.erfc(abs(v) / math.sqrt(2)) if np.isfinite(v) else np.nan for v in np.ravel(z)])


def consecutive_test(
    experts: np.ndarray | pd.DataFrame,
    tokens: pd.DataFrame,
    *,
    n_shuffles: int = SHUFFLES,
    alpha: float = ALPHA,
    seed: int = 0,
) -> pd.DataFrame:
    """Per layer: consecutive tokens on the same top-1 expert (`metrics.consecutive_same_expert`) tested
    against within-document shuffles of the token order.

    z = (rate - mean shuffled rate) / std of the shuffled rates (n_shuffles shuffles); p = two-sided normal
    p-value of z (the shuffled rate is a mean over thousands of pairs, so close to normal). The conclusion is
    "more often than shuffled" / "less often than shuffled" when p < alpha / L (Bonferroni over the layers),
    else "no difference detected".
    Returns columns: layer, n_pairs, rate, baseline, baseline_std, ratio, z, p_value, conclusion.
    """
    out = metrics.consecutive_same_expert(experts, tokens, n_shuffles=n_shuffles, seed=seed)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["z"] = (out["rate"] - out["baseline"]) / out["baseline_std"]
    out["p_value"] = normal_two_sided_p(out["z"].to_numpy())
    significant = out["p_value"] < alpha / len(out)
    out["conclusion"] = np.where(
        significant,
        np.where(out["z"] > 0, "more often than shuffled", "less often than shuffled"),
        "no difference detected",
    )
    return out


def probe_permutation_baseline(
    experts: np.ndarray | pd.DataFrame,
    tokens: pd.DataFrame,
    n_experts: int,
    *,
    n_permutations: int = PROBE_PERMUTATIONS,
    n_splits: int = 5,
    seed: int = 0,
) -> pd.DataFrame:
    """The domain probe (`domain_probe.domain_probe`) next to the same probe on permuted document labels.

    Each permutation shuffles the labels across documents (seeded) and refits every feature set with the
    same folds; perm_mean / perm_p95 summarise the permuted accuracies, p_value = (1 + #{perm >= observed}) /
    (1 + B). Unlike the majority-class chance, this baseline includes what a probe fits to noise.
    Returns columns: layer, features, accuracy, chance, perm_mean, perm_p95, p_value, p_floor, n_permutations.
    """
    hist, y, _ = domain_probe.doc_histograms(experts, tokens, n_experts)
    probe = domain_probe.domain_probe(experts, tokens, n_experts, n_splits=n_splits, seed=seed)
    rng = np.random.default_rng(seed)
    perms = [rng.permutation(y) for _ in range(n_permutations)]
    null = np.array(
        [
            [domain_probe.probe_accuracy(X, y_b, n_splits=n_splits, seed=seed).mean() for y_b in perms]
            for _, _, X in domain_probe.probe_features(hist)
        ]
    )  # (feature sets, B)
    obs = probe["accuracy"].to_numpy()
    out = probe[["layer", "features", "accuracy", "chance"]].copy()
    out["perm_mean"] = null.mean(axis=1)
    out["perm_p95"] = np.quantile(null, 0.95, axis=1)
    out["p_value"] = (1 + (null >= obs[:, None] - 1e-12).sum(axis=1)) / (1 + n_permutations)
    out["p_floor"] = p_floor(n_permutations)
    out["n_permutations"] = n_permutations
    return out
