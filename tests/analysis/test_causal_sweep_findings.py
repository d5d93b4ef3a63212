"""FINDINGS §4's tables and sentences from a sweep, checked by hand on a 1-layer, 2-expert, 2-domain example."""

import pandas as pd
import pytest

from analysis.causal import compare
from analysis.causal.sweep_findings import named_experts, references, sentences, spearman_by_layer


def tables():
    # expert 0 is "the a expert" by routing, expert 1 "the b expert"
    spec = pd.DataFrame(
        {"layer": 0, "label": ["a", "a", "b", "b"], "expert": [0, 1, 0, 1],
         "share": [0.9, 0.1, 0.2, 0.8], "ratio": [1.8, 0.2, 0.4, 1.6]}
    )  # fmt: skip
    single = pd.DataFrame(
        {"ablation": ["e0"] * 3 + ["e1"] * 3, "layer": 0, "mode": "reroute", "expert": [0, 0, 0, 1, 1, 1],
         "label": ["a", "b", "all"] * 2, "n_docs": [2, 2, 4] * 2, "n_tokens": [10, 10, 20] * 2,
         "delta": [0.01, 0.03, 0.02, 0.05, 0.04, 0.045], "lo": [0.001, 0.01, 0.01, 0.02, 0.02, 0.03],
         "hi": 1.0}
    )  # fmt: skip
    refs = pd.DataFrame(
        {"ablation": ["layer", "shared"], "layer": 0, "mode": ["layer", "shared"], "expert": -1, "label": "all",
         "n_docs": 4, "n_tokens": 20, "delta": [2.5, 0.3], "lo": [2.0, 0.2], "hi": [3.0, 0.4]}
    )  # fmt: skip
    sweep = pd.concat([single, refs], ignore_index=True)
    return compare.specialization_vs_ablation(spec, sweep), sweep


def test_named_experts_by_hand():
    joined, _ = tables()
    named = named_experts(joined).set_index("domain")
    # domain a: expert 0 (ratio 1.8); its Δ on a is 0.01, expert 1's is 0.05, so rank 2; on b it costs 0.03 > 0.01
    assert named.loc["a", "expert"] == 0 and named.loc["a", "rank in layer"] == 2
    assert named.loc["a", "mean Δ other domains"] == pytest.approx(0.03)
    assert not named.loc["a", "own_domain_largest"]
    # domain b: expert 1 (ratio 1.6); Δ 0.04 > expert 0's 0.03: rank 1, but it costs a more (0.05)
    assert named.loc["b", "expert"] == 1 and named.loc["b", "rank in layer"] == 1
    assert not named.loc["b", "own_domain_largest"]


def test_references_and_spearman_by_hand():
    joined, sweep = tables()
    refs = references(sweep).iloc[0]
    assert refs["all routed experts"] == 2.5 and refs["shared expert"] == 0.3
    assert refs["costliest single expert"] == "E1" and refs["its Δ"] == 0.045
    assert refs["median single expert Δ"] == pytest.approx(0.0325)
    rho = spearman_by_layer(joined).set_index("layer")
    # ratios 1.8, 0.4, 0.2, 1.6 (e0 a, e0 b, e1 a, e1 b) vs Δ 0.01, 0.03, 0.05, 0.04
    # ranks 4,2,1,3 vs 1,2,4,3: rho = 1 - 6·18/(4·15)
    assert rho.loc["0", "cells"] == 4 and rho.loc["0", "spearman"] == pytest.approx(-0.8)
    assert rho.loc["all", "spearman"] == rho.loc["0", "spearman"]


def test_sentences_quote_the_tables():
    joined, sweep = tables()
    named = named_experts(joined)
    text = sentences(named, compare.disagreements(joined), references(sweep), spearman_by_layer(joined))
    assert "raises its own domain's loss by +0.0100 to +0.0400 nats/token, with a 95% CI above 0 for 2 of 2" in text[0]
    assert "For 1 of 2 it is the expert" in text[0] and "not for a E0 of layer 0 (rank 2)" in text[0]
    assert "For 0 of 2 its own domain is the one (of the 2)" in text[0]
    assert "Spearman rank correlation -0.80 over 4 (layer, expert, domain) cells" in text[2]
    assert "all routed experts of a layer raises the loss by +2.500 nats/token" in text[3]
