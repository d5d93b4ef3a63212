"""analysis.specialization against values computed by hand on tiny traces."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis import domain_probe
from analysis import specialization as s

E = 4
# the 6-token, 2-layer, K=2 trace of test_metrics: doc d0 (label a) = t0..t2, doc d1 (label b) = t3..t5
EXPERTS = np.array(
    [
        [[0, 1], [1, 0]],
        [[0, 1], [1, 2]],
        [[1, 0], [2, 1]],
        [[2, 0], [0, 1]],
        [[2, 3], [0, 1]],
        [[0, 2], [1, 0]],
    ]
)


def make_tokens(docs=("d0",) * 3 + ("d1",) * 3, labels=("a",) * 3 + ("b",) * 3, token_ids=(10, 10, 11, 10, 11, 12)):
    n = len(docs)
    return pd.DataFrame({"doc_id": list(docs), "position": np.arange(n), "token_id": list(token_ids), "label": labels})


def cell(df: pd.DataFrame, layer: int, label: str, expert: int) -> pd.Series:
    row = df[(df.layer == layer) & (df.label == label) & (df.expert == expert)]
    assert len(row) == 1
    return row.iloc[0]


# --- domain specialization ---------------------------------------------------------------------------------


def test_domain_specialization_by_hand():
    out = s.domain_specialization(EXPERTS, make_tokens(), E)
    assert len(out) == 2 * 2 * 4
    # layer 0, label a: t0 {0,1} t1 {0,1} t2 {1,0} -> expert 0 in 3 of 3 tokens: share 1, ratio 1 / (2/4) = 2
    a0 = cell(out, 0, "a", 0)
    assert (a0["count"], a0["n_tokens"], a0["share"], a0["ratio"]) == (3, 3, 1.0, 2.0)
    assert cell(out, 0, "a", 2)["ratio"] == 0.0
    # layer 0, label b: t3 {2,0} t4 {2,3} t5 {0,2} -> expert 0: 2/3, expert 3: 1/3
    assert cell(out, 0, "b", 0)["ratio"] == pytest.approx((2 / 3) / 0.5)
    assert cell(out, 0, "b", 3)["ratio"] == pytest.approx((1 / 3) / 0.5)
    # shares of a label sum to K per layer
    assert np.allclose(out.groupby(["layer", "label"])["share"].sum(), 2.0)


def test_unlabelled_tokens_are_left_out_and_mixed_labels_rejected():
    tokens = make_tokens(labels=("a", "a", "a", "", "", ""))
    out = s.domain_specialization(EXPERTS, tokens, E)
    assert set(out["label"]) == {"a"}
    # missing labels (None) count as unlabelled too, and "" never becomes a label
    tokens = make_tokens(labels=("b", "b", "b", None, None, None))
    assert set(s.domain_specialization(EXPERTS, tokens, E)["label"]) == {"b"}
    assert s.mi_expert_domain(EXPERTS, make_tokens(labels=("a",) * 3 + ("",) * 3), E)[0] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="no labelled"):
        s.domain_specialization(EXPERTS, make_tokens(labels=("",) * 6), E)
    with pytest.raises(ValueError, match="more than one label"):
        s.domain_specialization(EXPERTS, make_tokens(labels=("a", "b", "a", "b", "b", "b")), E)


def test_permutation_baseline_two_docs():
    # two docs: a permutation either keeps or swaps the labels, so cell (0, a, 0) is 2 (kept) or 4/3 (swapped)
    res = s.specialization_permutation_baseline(EXPERTS, make_tokens(), E, n_permutations=400, seed=0)
    c = cell(res.cells, 0, "a", 0)
    assert c["ratio"] == 2.0
    assert c["perm_lo"] == pytest.approx(4 / 3) and c["perm_hi"] == pytest.approx(2.0)
    assert c["perm_mean"] == pytest.approx(5 / 3, abs=0.1)
    # the max ratio over cells is 2 whichever way the labels go: nothing beyond chance, p-value 1
    mr = res.max_ratio
    assert mr["max_ratio"].tolist() == [2.0, 2.0]
    assert np.allclose(mr["perm_mean"], 2.0) and np.allclose(mr["p_value"], 1.0)


def test_permutation_baseline_detects_real_specialization():
    # 20 docs of 5 tokens, K=1, E=2: label x always expert 0, label y always expert 1
    docs = np.repeat([f"d{i}" for i in range(20)], 5)
    labels = np.where(np.repeat(np.arange(20), 5) < 10, "x", "y")
    e = (labels == "y").astype(int).reshape(-1, 1, 1)
    tokens = make_tokens(docs=docs, labels=labels, token_ids=np.zeros(100, int))
    res = s.specialization_permutation_baseline(e, tokens, 2, n_permutations=200, seed=1)
    assert res.max_ratio["max_ratio"][0] == 2.0  # share 1 vs uniform 1/2
    assert res.max_ratio["perm_mean"][0] < 1.6
    assert res.max_ratio["p_value"][0] == pytest.approx(1 / 201)


def test_bootstrap_single_doc_per_label_is_degenerate():
    out = s.specialization_bootstrap_ci(EXPERTS, make_tokens(), E, n_boot=50, seed=0)
    assert np.allclose(out["lo"], out["ratio"]) and np.allclose(out["hi"], out["ratio"])


def test_bootstrap_ci_spans_document_variation():
    # label a: doc p sends all tokens to expert 0, doc q none; equal sizes -> resampled share in {0, 1/2, 1}
    e = np.array([0, 0, 1, 1, 0, 1]).reshape(-1, 1, 1)  # K=1, 1 layer, E=2
    tokens = make_tokens(docs=("p", "p", "q", "q", "r", "r"), labels=("a", "a", "a", "a", "b", "b"))
    out = s.specialization_bootstrap_ci(e, tokens, 2, n_boot=400, ci=0.95, seed=0)
    a0 = cell(out, 0, "a", 0)
    assert a0["ratio"] == pytest.approx(1.0)  # share 1/2 vs uniform 1/2
    assert a0["lo"] == pytest.approx(0.0) and a0["hi"] == pytest.approx(2.0)
    b0 = cell(out, 0, "b", 0)  # single doc r: share 1/2 always
    assert b0["lo"] == b0["hi"] == pytest.approx(1.0)


# --- mutual information ----------------------------------------------------------------------------------------


def test_mutual_information_by_hand():
    # layer 0 label x expert counts: a = [3, 3, 0, 0], b = [2, 0, 3, 1]; n = 12, row sums 6, column sums 5 3 3 1
    terms = [(3, 6, 5), (3, 6, 3), (2, 6, 5), (3, 6, 3), (1, 6, 1)]
    expected = sum(c / 12 * math.log2(c * 12 / (r * col)) for c, r, col in terms)
    mi = s.mi_expert_domain(EXPERTS, make_tokens(), E)
    assert mi[0] == pytest.approx(expected)
    assert mi[0] > 0


def test_mutual_information_extremes():
    e = np.array([0, 0, 1, 1]).reshape(-1, 1, 1)  # K=1
    assert s.mutual_information(e, np.array([0, 0, 1, 1]), 2)[0] == pytest.approx(1.0)  # expert = label: 1 bit
    assert s.mutual_information(e, np.array([0, 1, 0, 1]), 2)[0] == pytest.approx(0.0)  # independent
    assert s.mutual_information(e, np.array([0, -1, 1, 1]), 2)[0] == pytest.approx(  # code -1 left out
        s.mutual_information(e[[0, 2, 3]], np.array([0, 1, 1]), 2)[0]
    )


def test_token_mi_plugin_bias_and_shuffle_baseline():
    # every token id unique: plug-in I(expert; id) = H(expert) = 2 bits although ids carry no reusable signal
    e = np.array([0, 1, 0, 1, 2, 3, 2, 3]).reshape(-1, 1, 1)
    ids = np.arange(8)
    out = s.mi_shuffle_baseline(e, ids, 4, n_shuffles=5, seed=0)
    assert out["mi_bits"][0] == pytest.approx(2.0)
    assert out["baseline_mean"][0] == pytest.approx(2.0) and out["mi_corrected"][0] == pytest.approx(0.0)


def test_domain_mi_shuffle_by_document():
    # two docs: swapping their labels leaves MI unchanged, so the document-level baseline equals it
    out = s.mi_shuffle_baseline(
        EXPERTS, np.array([0, 0, 0, 1, 1, 1]), E, groups=make_tokens()["doc_id"].to_numpy(), n_shuffles=6
    )
    assert np.allclose(out["baseline_mean"], out["mi_bits"])
    with pytest.raises(ValueError, match="constant"):
        s.mi_shuffle_baseline(EXPERTS, np.array([0, 1, 0, 1, 1, 1]), E, groups=make_tokens()["doc_id"].to_numpy())
    summ = s.mi_summary(EXPERTS, make_tokens(), E, n_shuffles=3)
    assert np.allclose(summ["mi_domain_bits"], s.mi_expert_domain(EXPERTS, make_tokens(), E))
    assert np.allclose(summ["mi_token_bits"], s.mi_expert_token(EXPERTS, make_tokens(), E))


# --- token specialization --------------------------------------------------------------------------------------


def test_token_specialization_by_hand():
    # ids: 10 at t0 t1 t3, 11 at t2 t4, 12 at t5 (dropped by min_count=2)
    out = s.token_specialization(EXPERTS, make_tokens(), E, min_count=2)
    l0 = out[out.layer == 0].set_index("token_id")
    assert l0.index.tolist() == [10, 11]
    # id 10, layer 0: {0,1} {0,1} {2,0} -> expert 0 every time
    assert (l0.loc[10, "count"], l0.loc[10, "top_expert"], l0.loc[10, "share"]) == (3, 0, 1.0)
    # id 11: {1,0} {2,3} -> each expert once: share 1/2, tie -> lowest index
    assert (l0.loc[11, "top_expert"], l0.loc[11, "share"]) == (0, 0.5)
    top1 = s.token_specialization(EXPERTS, make_tokens(), E, min_count=2, top1=True)
    t0 = top1[top1.layer == 0].set_index("token_id")
    assert t0.loc[10, "share"] == pytest.approx(2 / 3) and t0.loc[11, "share"] == pytest.approx(0.5)
    summ = s.token_specialization_summary(out, uniform=2 / 4)
    r0 = summ[summ.layer == 0].iloc[0]
    assert r0["n_token_ids"] == 2 and r0["mean_share"] == pytest.approx(0.75)
    assert r0["weighted_share"] == pytest.approx((3 * 1.0 + 2 * 0.5) / 5) and r0["uniform"] == 0.5


# --- domain probe -------------------------------------------------------------------------------------------------


def _probe_trace(separable: bool, n_docs: int = 12, seed: int = 0):
    """n_docs docs of 20 tokens, K=1, E=4, 1 layer; labels alternate x/y."""
    rng = np.random.default_rng(seed)
    doc = np.repeat(np.arange(n_docs), 20)
    label = np.where(doc % 2 == 0, "x", "y")
    if separable:  # x docs use experts {0,1}, y docs {2,3}
        e = rng.integers(0, 2, size=len(doc)) + np.where(label == "y", 2, 0)
    else:
        e = rng.integers(0, 4, size=len(doc))
    tokens = make_tokens(docs=[f"d{d}" for d in doc], labels=label, token_ids=np.zeros(len(doc), int))
    return e.reshape(-1, 1, 1), tokens


def test_domain_probe_separable_and_chance():
    e, tokens = _probe_trace(separable=True)
    out = domain_probe.domain_probe(e, tokens, 4, n_splits=3, seed=0)
    assert out["features"].tolist() == ["layer 0", "all layers"]
    assert out["layer"].tolist() == [0, -1]
    assert np.allclose(out["accuracy"], 1.0)
    assert np.allclose(out["chance"], 0.5) and out["n_docs"].tolist() == [12, 12]
    e, tokens = _probe_trace(separable=False, n_docs=40, seed=3)
    assert domain_probe.domain_probe(e, tokens, 4, n_splits=4, seed=0)["accuracy"].max() < 0.9


def test_domain_probe_histograms_and_chance_majority():
    e, tokens = _probe_trace(separable=True, n_docs=6)
    hist, y, labels = domain_probe.doc_histograms(e, tokens, 4)
    assert hist.shape == (1, 6, 4) and np.allclose(hist.sum(axis=2), 1.0)
    tokens.loc[tokens.doc_id == "d1", "label"] = "x"  # x: d0 d1 d2 d4, y: d3 d5
    out = domain_probe.domain_probe(e, tokens, 4, n_splits=2)
    assert out["chance"][0] == pytest.approx(4 / 6)


def test_domain_probe_too_few_docs():
    with pytest.raises(ValueError, match="at least 2 labels"):
        domain_probe.domain_probe(EXPERTS, make_tokens(labels=("a",) * 6), E)  # single doc / single label
    with pytest.raises(ValueError, match="documents per label"):
        domain_probe.domain_probe(EXPERTS, make_tokens(), E, n_splits=2)  # one doc per label
