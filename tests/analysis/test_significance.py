"""analysis.significance on constructed traces whose null distributions can be worked out by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis import significance, specialization


def tokens_of(doc_ids, labels) -> pd.DataFrame:
    n = len(doc_ids)
    pos = pd.Series(doc_ids).groupby(pd.Series(doc_ids)).cumcount().to_numpy()
    return pd.DataFrame({"doc_id": list(doc_ids), "position": pos, "token_id": np.zeros(n, int), "label": labels})


def four_docs():
    """1 layer, K=1, E=3; docs of 2 tokens: d0 [0,0], d1 [0,0], d2 [1,1], d3 [2,2]; x = d0 d1, y = d2 d3."""
    experts = np.array([0, 0, 0, 0, 1, 1, 2, 2]).reshape(-1, 1, 1)
    docs = np.repeat(["d0", "d1", "d2", "d3"], 2)
    return experts, tokens_of(docs, np.repeat(["x", "x", "y", "y"], 2))


def test_familywise_null_by_hand():
    # the 6 equally likely ways to pick x's two docs give x's best ratio (uniform share 1/3):
    # {d0,d1}: share 1 -> 3; the 5 others: best share 1/2 -> 1.5. So P(null max >= 3) = 1/6, mean 1.75.
    # y observed: 1.5 (experts 1 and 2 at 1/2 each); every labelling gives y a max >= 1.5: p = 1.
    experts, tokens = four_docs()
    out = significance.familywise_domain_null(experts, tokens, 3, n_permutations=30_000, chunk=7_000, seed=1)
    x, y = out.set_index("label").loc["x"], out.set_index("label").loc["y"]
    assert (x["expert"], x["ratio"], x["share_of_tokens"], x["share_of_routings"]) == (0, 3.0, 1.0, 1.0)
    assert x["p_value"] == pytest.approx(1 / 6, abs=0.01)
    assert x["null_mean"] == pytest.approx(1.75, abs=0.01)
    assert y["ratio"] == 1.5 and y["p_value"] == 1.0
    assert out["p_floor"].iloc[0] == pytest.approx(1 / 30_001)


def test_familywise_is_stricter_than_the_per_cell_null():
    # y's best cell (expert 1) is rarely matched by that same cell under permutation, but always by SOME
    # expert: the per-cell p-value flatters it, the family-wise one does not
    experts, tokens = four_docs()
    cells = specialization.specialization_permutation_baseline(experts, tokens, 3, n_permutations=3000).cells
    per_cell = cells[(cells.label == "y") & (cells.expert == 1)]["p_value"].iloc[0]
    fw = significance.familywise_domain_null(experts, tokens, 3, n_permutations=3000)
    assert per_cell < 0.7 and fw.set_index("label").loc["y", "p_value"] == 1.0


def test_familywise_shares_with_top2():
    # K=2: share of tokens sums to K over experts, share of routings to 1; both have the same ratio to uniform
    experts = np.array([[0, 1], [0, 2], [0, 1], [3, 1]]).reshape(-1, 1, 2)
    tokens = tokens_of(["a", "a", "b", "b"], ["x", "x", "y", "y"])
    out = significance.familywise_domain_null(experts, tokens, 4, n_permutations=50).set_index("label")
    assert out.loc["x", "expert"] == 0 and out.loc["x", "share_of_tokens"] == 1.0  # both x tokens hold expert 0
    assert out.loc["x", "share_of_routings"] == 0.5 and out.loc["x", "ratio"] == pytest.approx(1.0 / (2 / 4))


def consecutive_trace(pattern: str, n: int = 400, seed: int = 0):
    rng = np.random.default_rng(seed)
    if pattern == "runs":  # blocks of 10 tokens on one expert
        e = np.repeat(rng.integers(0, 4, size=n // 10), 10)
    elif pattern == "alternating":  # never the same expert twice in a row
        e = np.tile([0, 1, 2, 3], n // 4)
    else:
        e = rng.integers(0, 4, size=n)
    return e.reshape(-1, 1, 1), tokens_of(np.repeat(["d0", "d1"], n // 2), np.repeat("x", n))


@pytest.mark.parametrize(
    "pattern, conclusion",
    [
        ("runs", "more often than shuffled"),
        ("alternating", "less often than shuffled"),
        ("random", "no difference detected"),
    ],
)
def test_consecutive_test_conclusions(pattern, conclusion):
    experts, tokens = consecutive_trace(pattern)
    out = significance.consecutive_test(experts, tokens, n_shuffles=100, seed=0)
    row = out.iloc[0]
    assert row["conclusion"] == conclusion
    assert row["z"] == pytest.approx((row["rate"] - row["baseline"]) / row["baseline_std"])
    if pattern == "alternating":
        assert row["rate"] == 0.0


def test_normal_two_sided_p():
    p = significance.normal_two_sided_p(np.array([0.0, 1.959964, -1.959964, np.nan]))
    assert p[0] == pytest.approx(1.0) and p[1] == pytest.approx(0.05, abs=1e-5) and p[2] == pytest.approx(p[1])
    assert np.isnan(p[3])


def probe_trace(separable: bool, n_docs: int = 12, seed: int = 0):
    rng = np.random.default_rng(seed)
    doc = np.repeat(np.arange(n_docs), 20)
    label = np.where(doc % 2 == 0, "x", "y")
    if separable:
        e = rng.integers(0, 2, size=len(doc)) + np.where(label == "y", 2, 0)
    else:
        e = rng.integers(0, 4, size=len(doc))
    return e.reshape(-1, 1, 1), tokens_of([f"d{d}" for d in doc], label)


def test_probe_permutation_baseline():
    experts, tokens = probe_trace(separable=True, n_docs=24)
    out = significance.probe_permutation_baseline(experts, tokens, 4, n_permutations=12, n_splits=3)
    assert out["features"].tolist() == ["layer 0", "all layers"]
    assert np.allclose(out["accuracy"], 1.0)
    assert (out["perm_mean"] < 0.8).all()  # a probe on shuffled labels is near chance (1/2), not near 1
    assert np.allclose(out["p_value"], 1 / 13) and np.allclose(out["p_floor"], 1 / 13)
    experts, tokens = probe_trace(separable=False, n_docs=20, seed=3)
    out = significance.probe_permutation_baseline(experts, tokens, 4, n_permutations=12, n_splits=4)
    assert (out["p_value"] > 0.05).all()  # noise: the observed accuracy is within the permuted ones
