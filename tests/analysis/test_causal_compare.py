"""Causal next to observational: the effect sentence, the joined table and the agreement count, by hand."""

import pandas as pd

from analysis.causal.charts import specialization_scatter
from analysis.causal.compare import (
    agreement_sentence,
    disagreements,
    effect_sentence,
    specialization_vs_ablation,
)

XSS = "<script>x</script>"


def per_domain():
    return pd.DataFrame(
        {"label": ["code", "prose", "all"], "n_docs": [3, 2, 5], "n_tokens": [300, 200, 500],
         "delta": [0.0161, 0.00002, 0.0097], "lo": [0.0097, -0.001, 0.004], "hi": [0.0244, 0.001, 0.015]}
    )  # fmt: skip


def test_effect_sentence_names_every_domain_and_the_denominator():
    s = effect_sentence(1, 3, per_domain())
    assert s.startswith("Removing E3 at layer 1 (its tokens re-routed to the other experts) changes the loss of ")
    assert "code by +0.0161 nats/token (95% CI +0.0097 to +0.0244);" in s
    assert "prose by +2.00e-05 nats/token (95% CI -0.0010 to +0.0010), not distinguishable from 0" in s
    assert "over all 5 documents (500 scored tokens) by +0.0097" in s
    assert "output zeroed" in effect_sentence(0, 0, per_domain(), "zero")


def sweep_and_spec():
    # layer 0, experts 0 and 1, domains a and b; expert 0 is "the a expert" by routing
    spec = pd.DataFrame(
        {"layer": 0, "label": ["a", "a", "b", "b"], "expert": [0, 1, 0, 1],
         "share": [0.9, 0.1, 0.2, 0.8], "ratio": [1.8, 0.2, 0.4, 1.6]}
    )  # fmt: skip
    sweep = pd.DataFrame(
        {"ablation": "x", "layer": 0, "mode": "reroute", "expert": [0, 0, 0, 1, 1, 1, -1, -1, -1],
         "label": ["a", "b", "all"] * 3, "n_docs": 2, "n_tokens": 10,
         "delta": [0.01, 0.03, 0.02, 0.05, 0.04, 0.045, 0.5, 0.5, 0.5],
         "lo": [0.001, 0.01, 0.01, 0.02, 0.02, 0.03, 0.4, 0.4, 0.4], "hi": 1.0}
    )  # fmt: skip
    return spec, sweep


def test_join_and_disagreements_by_hand():
    spec, sweep = sweep_and_spec()
    joined = specialization_vs_ablation(spec, sweep)
    assert len(joined) == 4  # the references (expert -1) and "all" rows are left out
    assert joined[joined["top_domain"]][["expert", "label"]].values.tolist() == [[0, "a"], [1, "b"]]
    # on domain a, expert 1's removal costs more (0.05) than expert 0's (0.01): rank 2 for expert 0
    assert joined.set_index(["expert", "label"]).loc[(0, "a"), "rank_delta"] == 2
    top = disagreements(joined)
    assert top["agrees"].tolist() == [False, True]  # expert 1 on b: 0.04 > 0.03
    s = agreement_sentence(top)
    assert s.startswith("For 1 of 2 (layer, expert) pairs") and "(1 of them with a 95% CI above 0)" in s
    assert "for the other 1 the two disagree" in s
    assert agreement_sentence(top, 2).startswith("For 1 of 2 (layer, expert) pairs (at most 2 can: one per (layer, ")


def test_top_domain_is_one_per_expert_even_with_ties():
    spec, sweep = sweep_and_spec()
    spec["ratio"] = 1.0
    joined = specialization_vs_ablation(spec, sweep)
    assert joined.groupby("expert")["top_domain"].sum().tolist() == [1, 1]


def test_scatter_escapes_labels_and_carries_the_pair():
    spec, sweep = sweep_and_spec()
    spec["label"] = spec["label"].replace("a", XSS)
    sweep["label"] = sweep["label"].replace("a", XSS)
    fig = specialization_scatter(specialization_vs_ablation(spec, sweep))
    names = [t.name for t in fig.data]
    assert XSS not in names and "&lt;script&gt;x&lt;/script&gt;" in names
    assert all(XSS not in t.hovertemplate for t in fig.data)
    assert fig.data[0].customdata[:, :2].tolist() == [[0, 0], [0, 1]]  # (layer, expert) of each point
    assert len({t.marker.color for t in fig.data}) == 2


def test_agreement_sentence_with_no_pairs():
    top = pd.DataFrame({"agrees": pd.Series([], dtype=bool), "lo": pd.Series([], dtype=float)})
    assert agreement_sentence(top).startswith("For 0 of 0")
