"""One text at two steps (analysis.step_comparison) on hand-made expert arrays, the (T, L, K) arrays a page builds
from a trace's routing rows (tables.routing_arrays), and the figure of the changed shares."""

import numpy as np
import pandas as pd
import pytest

from analysis import figures, step_comparison, tables

# 4 tokens, 2 layers, top-2. Step A, then step B:
A = np.array([[[0, 1], [2, 3]],
              [[1, 2], [3, 0]],
              [[2, 3], [0, 1]],
              [[3, 0], [1, 2]]])  # fmt: skip
# token 0: the same at both layers. Token 1, layer 0: ranks swapped -> top-1 changed, same set. Token 2, layer 0:
# second expert 3 -> 0 (set changed, top-1 not); layer 1: top-1 0 -> 1, same set {0, 1}. Token 3: top-1 and set
# changed at both layers.
B = np.array([[[0, 1], [2, 3]],
              [[2, 1], [3, 0]],
              [[2, 0], [1, 0]],
              [[1, 0], [2, 3]]])  # fmt: skip
WA = np.full(A.shape, 0.5)
WB = np.array([[[0.6, 0.4], [0.5, 0.5]]] * 4)


def test_top1_and_topk_changes_by_hand():
    assert step_comparison.top1_changed(A, B).tolist() == [[False, False], [True, False], [False, True], [True, True]]
    assert step_comparison.topk_changed(A, B).tolist() == [[False, False], [False, False], [True, False], [True, True]]


def test_change_by_layer_counts_and_shares_over_the_document_tokens():
    table = step_comparison.change_by_layer(A, B)
    assert table["layer"].tolist() == [0, 1] and table["tokens"].tolist() == [4, 4]  # the denominator: T = 4
    assert table["top1_changed"].tolist() == [2, 2] and table["topk_changed"].tolist() == [2, 1]
    assert table["top1_changed_share"].tolist() == [0.5, 0.5] and table["topk_changed_share"].tolist() == [0.5, 0.25]
    same = step_comparison.change_by_layer(A, A)
    assert same["top1_changed"].sum() == 0 and same["topk_changed_share"].tolist() == [0.0, 0.0]


def test_different_tokens_are_refused():
    with pytest.raises(ValueError, match="different tokens"):
        step_comparison.change_by_layer(A, B[:3])


def test_token_table_is_aligned_by_token():
    table = step_comparison.token_table(["a", " b", "c\n", "d"], A, WA, B, WB, layer=0, names=("step 250", "step 2000"))
    assert list(table.columns) == ["token", "text", "experts at step 250", "experts at step 2000", "top-1 changed",
                                   "top-k set changed"]  # fmt: skip
    assert table["token"].tolist() == [0, 1, 2, 3] and table["text"].tolist() == ["a", "␣b", "c↵", "d"]
    assert table.loc[1, "experts at step 250"] == "E1 0.50, E2 0.50"
    assert table.loc[1, "experts at step 2000"] == "E2 0.60, E1 0.40"
    assert table["top-1 changed"].tolist() == [False, True, False, True]
    assert table["top-k set changed"].tolist() == [False, False, True, True]
    assert step_comparison.experts_text([4, -1], [1.0, 0.0]) == "E4 1.00"  # a missing rank is left out


def test_routing_arrays_from_routing_rows(tiny_routing):
    _, tokens, routing = tiny_routing
    experts, weights = tables.routing_arrays(tokens, routing.sample(frac=1, random_state=0), n_layers=2)
    assert experts.shape == (3, 2, 2) and experts.dtype == np.int16
    assert experts[0].tolist() == [[2, 0], [1, 2]] and experts[2, 1].tolist() == [0, 1]
    assert weights[2, 1].tolist() == pytest.approx([0.55, 0.45])
    sub, _ = tables.routing_arrays(tokens.iloc[[2, 0]], routing[routing["token_row"] != 0], n_layers=2)
    assert sub[0, 0].tolist() == [1, 2] and sub[1].tolist() == [[-1, -1], [-1, -1]]  # in the order given; missing


def test_change_share_bars_say_the_denominator():
    table = step_comparison.change_by_layer(A, B)
    fig = figures.routing.change_share_bars(table, "step 250", "step 2000")
    assert [t.name for t in fig.data] == ["top-1 expert changed", "top-k set changed"]
    assert list(fig.data[0].y) == [0.5, 0.5] and list(fig.data[1].text) == ["2 / 4", "1 / 4"]
    assert "(of 4 tokens)" in fig.layout.title.text and fig.layout.yaxis.title.text == "share of the 4 tokens"
    assert list(fig.data[0].x) == ["layer 0", "layer 1"]
    empty = figures.routing.change_share_bars(pd.DataFrame(columns=table.columns), "a", "b")
    assert len(empty.data) == 2
