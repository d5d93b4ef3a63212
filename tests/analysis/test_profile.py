"""analysis.profile and analysis.figures.profile on a 6-token, 2-layer, 4-expert, top-2 trace computed by hand."""

import math

import numpy as np
import pandas as pd
import pytest

from analysis import figures, metrics, profile, specialization, tables

XSS = "<script>alert(1)</script>"

# experts[t, l, rank]: layer 0 and layer 1 of tokens t0..t5 (ids 1 1 1 2 2 3; docs d0 = t0-t2, d1 = t3-t5)
EXPERTS = np.array(
    [
        [[0, 1], [1, 0]],
        [[0, 2], [1, 2]],
        [[1, 0], [3, 1]],
        [[2, 3], [0, 1]],
        [[3, 2], [2, 3]],
        [[0, 3], [1, 3]],
    ]
)
WEIGHTS = np.array(
    [
        [[0.6, 0.4], [0.5, 0.5]],
        [[0.7, 0.3], [0.5, 0.5]],
        [[0.7, 0.3], [0.5, 0.5]],
        [[0.5, 0.5], [0.5, 0.5]],
        [[0.5, 0.5], [0.5, 0.5]],
        [[0.9, 0.1], [0.5, 0.5]],
    ]
)
E = 4


@pytest.fixture
def tokens():
    return pd.DataFrame(
        {
            "doc_id": ["d0"] * 3 + ["d1"] * 3,
            "position": [0, 1, 2, 0, 1, 2],
            "token_id": [1, 1, 1, 2, 2, 3],
            "token_text": ["foo", " foo", " foo", "ba", "\nba", "!"],
            "char_start": [0, 3, 7, 0, 2, 5],
            "char_end": [3, 7, 11, 2, 5, 6],
            "label": ["code"] * 3 + ["prose"] * 3,
        }
    )


TEXTS = {"d0": "foo foo foo", "d1": "ba\nba!"}


def test_expert_share_counts_routings_and_top1():
    s = profile.expert_share(EXPERTS, 0, 0, E)
    assert (s.routings, s.top1, s.n_tokens, s.top_k) == (4, 3, 6, 2)  # t0 t1 t2 t5; top-1 of t0 t1 t5
    assert s.share == pytest.approx(4 / 12) and s.uniform == 0.25 and s.token_share == pytest.approx(4 / 6)


def test_token_lift_ranks_by_lift_with_a_minimum_count(tokens):
    lift = profile.token_lift(EXPERTS, tokens, 0, 2, min_count=2)  # E2 at layer 0: t1, t3, t4 -> P(E2) = 3/6
    assert lift["token_id"].tolist() == [2, 1]  # id 3 (1 occurrence) is below the minimum count
    assert lift["hits"].tolist() == [2, 1] and lift["count"].tolist() == [2, 3]
    assert lift["p_expert_given_token"].tolist() == pytest.approx([1.0, 1 / 3])
    assert lift["lift"].tolist() == pytest.approx([2.0, 2 / 3])
    assert lift["pmi"].tolist() == pytest.approx([1.0, math.log2(2 / 3)])
    assert lift["token"].tolist() == ["ba", "foo"]  # the first text of each id, whitespace made visible
    never = profile.token_lift(EXPERTS, tokens, 0, 0, min_count=2)  # id 2 never goes to E0: left out
    assert never["token_id"].tolist() == [1] and never["lift"].iloc[0] == pytest.approx(1 / (4 / 6))


def test_domain_preference_ratio_and_ci(tokens):
    d = profile.domain_preference(EXPERTS, tokens, 0, 0, E, n_boot=50)
    assert d["label"].tolist() == ["code", "prose"]
    assert d["count"].tolist() == [3, 1] and d["n_tokens"].tolist() == [3, 3]
    assert d["ratio"].tolist() == pytest.approx([1.0 / 0.5, (1 / 3) / 0.5])  # share / (K/E)
    assert d["lo"].tolist() == pytest.approx(d["ratio"].tolist())  # one document per label: no spread
    assert d["hi"].tolist() == pytest.approx(d["ratio"].tolist())
    unlabelled = profile.domain_preference(EXPERTS, tokens.assign(label=""), 0, 0, E)
    assert unlabelled.empty and "lo" in unlabelled


def test_domain_preference_reuses_the_document_bootstrap(tokens):
    four = tokens.assign(doc_id=["a", "a", "b", "c", "c", "d"])  # two documents per label
    full = specialization.specialization_bootstrap_ci(EXPERTS, four, E, n_boot=100, seed=3)
    for layer, expert in ((0, 0), (1, 1)):  # computed on the one layer: the same resamples as on all layers
        d = profile.domain_preference(EXPERTS, four, layer, expert, E, n_boot=100, seed=3)
        ci = full[(full["layer"] == layer) & (full["expert"] == expert)].set_index("label")
        assert len(d) == 2
        for row in d.itertuples():
            assert (row.lo, row.hi) == (ci.loc[row.label, "lo"], ci.loc[row.label, "hi"])
            assert row.lo <= row.ratio <= row.hi


def test_example_rows_prefer_the_given_ids_then_weight(tokens):
    # E0 at layer 0: t0 (0.6), t1 (0.7), t2 (rank 1, 0.3), t5 (0.9); id 1 -> its first occurrence t0,
    # then the heaviest routing of another id: t5
    assert profile.example_rows(EXPERTS, WEIGHTS, tokens, 0, 0, prefer_ids=[1]) == [0, 5]
    assert profile.example_rows(EXPERTS, WEIGHTS, tokens, 0, 0) == [5, 1]  # by weight, one per id
    assert profile.example_rows(EXPERTS, WEIGHTS, tokens, 0, 0, prefer_ids=[2, 1], n=1) == [0]


def test_keyword_in_context(tokens):
    k = tables.keyword_in_context(tokens, TEXTS, [4, 1], width=2)
    assert k.loc[0, ["left", "token", "right", "label"]].tolist() == ["ba", "\nba", "!", "prose"]
    assert k.loc[1, ["left", "token", "right"]].tolist() == ["oo", " foo", " f"]


def test_coactivation_partners():
    p = profile.coactivation_partners(metrics.coactivation(EXPERTS, E), 0, 0)
    # E0 at layer 0 is in the top-2 of t0 (with E1), t1 (E2), t2 (E1), t5 (E3); E1 load 2, E2 load 3, E3 load 3
    assert p["partner"].tolist() == [1, 2, 3] and p["together"].tolist() == [2, 1, 1]
    assert p["p_partner_given_expert"].tolist() == pytest.approx([2 / 4, 1 / 4, 1 / 4])
    assert p["lift"].tolist() == pytest.approx([2 * 6 / (4 * 2), 1 * 6 / (4 * 3), 1 * 6 / (4 * 3)])
    single = profile.coactivation_partners(metrics.coactivation(EXPERTS[:, :, :1], E), 0, 0)
    assert single.empty  # top-1 routing: no partners


def test_layer_flow_next_and_previous():
    flow = metrics.cross_layer_flow(EXPERTS, E)  # top-1: t0 0->1, t1 0->1, t2 1->3, t3 2->0, t4 3->2, t5 0->1
    nxt = profile.layer_flow(flow, 0, 0, "next")
    assert nxt["expert"].tolist() == [1] and nxt["tokens"].tolist() == [3]
    assert nxt["share"].tolist() == [1.0] and nxt["baseline"].tolist() == [0.5] and nxt["lift"].tolist() == [2.0]
    prev = profile.layer_flow(flow, 1, 3, "previous")  # top-1 E3 at layer 1: t2, which came from E1
    assert prev["expert"].tolist() == [1] and prev["baseline"].tolist() == pytest.approx([1 / 6])
    assert profile.layer_flow(flow, 1, 0, "next").empty and profile.layer_flow(flow, 0, 0, "previous").empty
    with pytest.raises(ValueError):
        profile.layer_flow(flow, 0, 0, "sideways")


def test_history_series(tiny_history):
    h = profile.history_series(tiny_history, 0, 0)
    assert h["step"].tolist() == [1, 2]
    assert h["share"].tolist() == pytest.approx([0.75, 0.5]) and h["bias"].tolist() == pytest.approx([0.0, -0.001])
    assert profile.history_series(tiny_history.drop(columns=["load"]), 0, 0).empty


def test_summary_sentence_says_what_the_numbers_say(tokens):
    share = profile.expert_share(EXPERTS, 0, 0, E)
    domains = profile.domain_preference(EXPERTS, tokens, 0, 0, E, n_boot=20)
    lift = profile.token_lift(EXPERTS, tokens, 0, 0, min_count=2)
    s = profile.summary_sentence(0, 0, share, domains, lift)
    assert s.startswith("E0 at layer 0 takes 33.3% of routings (uniform 25.0%)")
    assert (
        "its strongest domain is code: 100.0% of code tokens have it in their top-2 (share of tokens; uniform "
        "50.0%), 2.0× uniform (95% CI 2.0–2.0×" in s
    )
    assert "fewer prose tokens than uniform (0.67×, CI up to 0.67×)" in s
    assert "“foo”: 100% of its 3 occurrences go to E0 vs 67% of all tokens (1.5× lift)" in s


def test_summary_sentence_of_an_unused_expert_and_a_weak_token(tokens):
    unused = profile.Share(routings=0, top1=0, n_tokens=6, top_k=2, n_experts=4)
    s = profile.summary_sentence(1, 2, unused, pd.DataFrame(), pd.DataFrame())
    assert s == (
        "E2 at layer 1 takes none of the 12 routings (uniform 25.0%): no token of these documents picks it at this "
        "layer."
    )
    weak = pd.DataFrame({"token": ["x"], "count": [9], "p_expert_given_token": [0.6], "p_expert": [0.5], "lift": [1.2]})
    share = profile.expert_share(EXPERTS, 0, 0, E)
    assert "prefers" not in profile.summary_sentence(0, 0, share, pd.DataFrame(), weak)  # 1.2× is below MIN_LIFT


def test_summary_sentence_names_no_domain_when_the_ci_includes_one():
    share = profile.Share(routings=10, top1=5, n_tokens=40, top_k=2, n_experts=8)
    domains = pd.DataFrame({"label": ["math", "code"], "count": [6, 4], "n_tokens": [20, 20],
                            "share": [0.3, 0.2], "ratio": [1.2, 0.8], "lo": [0.9, 0.6], "hi": [1.6, 1.1]})  # fmt: skip
    s = profile.summary_sentence(2, 5, share, domains, pd.DataFrame(columns=["lift"]))
    assert s == (
        "E5 at layer 2 takes 12.5% of routings (uniform 12.5%); no domain sends it more tokens than uniform beyond the "
        "95% CI over documents (highest: math, 1.20×, CI 0.90–1.60×)."
    )
    assert "strongest" not in s and "fewer" not in s and "token" not in s.split(";")[0][30:]
    below = domains.assign(ratio=[0.8, 0.5], lo=[0.6, 0.4], hi=[0.9, 0.7])
    s = profile.summary_sentence(2, 5, share, below, pd.DataFrame(columns=["lift"]))
    assert s.endswith("every domain sends it fewer tokens than uniform (95% CI over documents; highest: math, 0.80×, "
                      "CI 0.60–0.90×).")  # fmt: skip


def test_profile_figures(tokens, tiny_history):
    series = profile.history_series(tiny_history, 0, 0)
    fig = figures.profile.history_figure(series, 0.5, 2, 0, "#123456")
    assert list(fig.data[0].y) == pytest.approx([0.75, 0.5]) and list(fig.data[2].y) == pytest.approx([0, -0.001])
    assert list(fig.data[1].y) == pytest.approx([0.75, 0.9 * 0.75 + 0.1 * 0.5])  # the EMA of the share
    shapes = fig.layout.shapes
    assert any(s.x0 == 2 and s.x1 == 2 for s in shapes)  # the selected step
    assert any(s.y0 == 0.5 and s.y1 == 0.5 for s in shapes)  # uniform
    d = pd.DataFrame({"label": [XSS, "code"], "count": [3, 1], "n_tokens": [3, 3], "share": [1.0, 1 / 3],
                      "ratio": [2.0, 2 / 3], "lo": [1.5, 0.5], "hi": [2.5, 0.9]})  # fmt: skip
    bar = figures.profile.domain_figure(d, 0, "#123456").data[0]
    assert list(bar.y) == ["code", "&lt;script&gt;alert(1)&lt;/script&gt;"]  # highest ratio on top
    assert list(bar.error_x.array) == pytest.approx([0.9 - 2 / 3, 0.5])
    assert list(bar.error_x.arrayminus) == pytest.approx([1 / 6, 0.5])


def test_kwic_and_summary_html_escape():
    k = pd.DataFrame({"left": [XSS], "token": ["$x"], "right": ["a\nb"], "label": ['"q"']})
    html = figures.profile.kwic_html(k, "#000000")
    assert "<script>" not in html and "&lt;script&gt;" in html and "$" not in html and "&#36;x</mark>" in html
    assert "background:#000000;color:#ffffff" in html and "a b" in html
    s = figures.profile.summary_html(f"E1 prefers “{XSS}”")
    assert s.startswith('<p class="moe-profile-summary"') and "&lt;script&gt;" in s and "<script>" not in s
