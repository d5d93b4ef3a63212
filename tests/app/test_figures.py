"""Unit tests for the pure figure builders, on tiny hand-made traces."""

import numpy as np
import pandas as pd
import pytest

from app import figures as F

XSS = "<script>alert(1)</script>"


@pytest.fixture
def tiny():
    """3 tokens of the text 'ab<c', 2 layers, 3 experts, top-2."""
    text = "ab" + XSS
    tokens = pd.DataFrame(
        {
            "doc_id": [0, 0, 0],
            "position": [0, 1, 2],
            "token_id": [5, 6, 7],
            "token_text": ["a", "b", XSS],
            "char_start": [0, 1, 2],
            "char_end": [1, 2, len(text)],
            "label": ["code", "code", "prose"],
        }
    )
    # (token_row, layer, rank, expert, weight)
    rows = [
        (0, 0, 0, 2, 0.7), (0, 0, 1, 0, 0.3), (0, 1, 0, 1, 0.6), (0, 1, 1, 2, 0.4),
        (1, 0, 0, 0, 0.5), (1, 0, 1, 1, 0.5), (1, 1, 0, 1, 0.9), (1, 1, 1, 0, 0.1),
        (2, 0, 0, 1, 0.8), (2, 0, 1, 2, 0.2), (2, 1, 0, 0, 0.55), (2, 1, 1, 1, 0.45),
    ]  # fmt: skip
    routing = pd.DataFrame(rows, columns=["token_row", "layer", "rank", "expert", "weight"])
    return text, tokens, routing


def test_expert_colors_are_stable_and_distinct():
    for n in (1, 4, 10, 16, 24, 40):
        colors = F.expert_colors(n)
        assert len(colors) == n and len(set(colors)) == n
        assert all(c.startswith("#") and len(c) == 7 for c in colors)
    assert F.expert_colors(4) == F.expert_colors(8)[:4]
    assert F.text_color("#ffffff") == "#000000" and F.text_color("#000000") == "#ffffff"


def test_top1_and_summary(tiny):
    _, _, routing = tiny
    assert F.top1_table(routing, 0).tolist() == [2, 0, 1]
    assert F.top1_table(routing, 1).tolist() == [1, 1, 0]
    assert F.routing_summary(routing)[(0, 0)] == "E2 0.70, E0 0.30"


def test_colored_text_escapes_and_tiles(tiny):
    text, tokens, routing = tiny
    top1 = F.top1_table(routing, 0)
    html = F.colored_text_html(text + "\n\nx $y$", tokens, top1, 3, tooltips={2: XSS})
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert html.count("<span") == 3
    assert 'data-expert="2"' in html and 'data-expert="1"' in html
    assert "\n" not in html and "<br><br>" in html and "$" not in html
    assert F.expert_colors(3)[2] in html


def test_legend_html_counts():
    html = F.legend_html(3, counts=[5, 0, 2])
    assert "E0 (5)" in html and "E2 (2)" in html and html.count("<span") == 3


def test_token_layer_grid(tiny):
    _, tokens, routing = tiny
    fig = F.token_layer_grid(tokens, routing, n_layers=2, n_experts=3)
    hm = fig.data[0]
    assert np.array_equal(np.asarray(hm.z), [[2, 0, 1], [1, 1, 0]])
    assert hm.zmin == -0.5 and hm.zmax == 2.5
    clicks = fig.data[1]  # invisible points that carry the hover and make cells clickable
    assert clicks.type == "scatter" and list(clicks.x) == [0, 1, 2, 0, 1, 2] and list(clicks.y) == [0, 0, 0, 1, 1, 1]
    hover = np.asarray(clicks.hovertext).reshape(2, 3)
    assert "E2 0.70, E0 0.30" in hover[0, 0]
    assert "&lt;script&gt;" in hover[0, 2] and "<script>" not in hover[0, 2]


def test_routing_steps_bias_flip():
    scores = np.array([0.9, 0.8, 0.1, 0.5])
    bias = np.array([0.0, -0.5, 0.0, 0.1])
    steps = F.routing_steps_table(scores, bias, top_k=2)
    assert steps["chosen"].tolist() == [True, False, False, True]
    assert steps["chosen_without_bias"].tolist() == [True, True, False, False]
    assert F.bias_changed_choice(steps)
    # gate weights from unbiased scores, renormalised: 0.9/1.4, 0.5/1.4
    assert np.allclose(steps["gate_weight"], [0.9 / 1.4, 0, 0, 0.5 / 1.4])
    assert steps["rank"].tolist() == [0, -1, -1, 1]
    fig = F.routing_steps_figure(steps, shared_share=0.25)
    assert len(fig.data) == 4
    assert list(fig.data[0].y) == pytest.approx(list(scores))
    assert "25%" in fig.layout.annotations[3].text
    no_flip = F.routing_steps_table(scores, np.zeros(4), top_k=2)
    assert not F.bias_changed_choice(no_flip)
    rec = F.routing_steps_table(scores, np.zeros(4), top_k=2, recorded={2: 0.7, 0: 0.3})  # e.g. group-limited
    assert rec["chosen"].tolist() == [True, False, True, False] and rec["rank"].tolist() == [1, -1, 0, -1]
    assert rec["gate_weight"].tolist() == [0.3, 0, 0.7, 0]


def test_load_heatmap_shares():
    fig = F.load_heatmap(np.array([[2, 2, 0, 0], [1, 1, 1, 1]]))
    assert np.allclose(fig.data[0].z, [[0.5, 0.5, 0, 0], [0.25] * 4])
    assert list(fig.data[0].x) == ["E0", "E1", "E2", "E3"]
    assert "25.0%" in fig.layout.title.text


def test_specialization_heatmap_escapes_labels():
    ratio = pd.DataFrame([[2.0, 0.5], [1.0, 1.0]], index=[XSS, "prose"], columns=[0, 1])
    fig = F.specialization_heatmap(ratio)
    assert np.allclose(fig.data[0].z, [[1, -1], [0, 0]])
    assert fig.data[0].y[0] == "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert fig.data[0].zmid == 0


def test_top_tokens_table(tiny):
    _, tokens, routing = tiny
    table = F.top_tokens_table(tokens, routing, layer=1)
    assert table["expert"].tolist() == [0, 1]
    assert table["tokens"].tolist() == [1, 2]
    assert table.loc[1, "top tokens"] == "a (1), b (1)"


def test_coactivation_and_sankey():
    cond = np.array([[0, 1.0], [0.5, 0]])
    fig = F.coactivation_heatmap(cond, lift_EE=np.array([[0, 2.0], [2.0, 0]]))
    assert np.allclose(fig.data[0].z, cond) and np.allclose(fig.data[0].customdata, [[0, 2], [2, 0]])
    flow = pd.DataFrame({"layer": [0, 0, 1], "src": [0, 1, 1], "dst": [1, 1, 0], "count": [3, 1, 10]})
    s = F.flow_sankey(flow, n_layers=3, n_experts=2)
    link = s.data[0].link
    assert list(link.source) == [0, 1, 3] and list(link.target) == [3, 3, 4]
    assert list(link.value) == [3, 1, 10]
    assert len(s.data[0].node.label) == 6
    kept = F.flow_sankey(flow, n_layers=3, n_experts=2, min_share=0.5)
    assert list(kept.data[0].link.value) == [3, 10]


@pytest.fixture
def history():
    return pd.DataFrame(
        {
            "step": [1, 2],
            "loss": [5.0, 4.0],
            "load": [[[3, 1]], [[2, 2]]],  # (N, L=1, E=2)
            "bias": [[[0.0, 0.0]], [[-0.001, 0.001]]],
            "maxvio_batch": [[0.5], [0.0]],
        }
    )


def test_training_curves(history):
    fig = F.load_share_curves(history, layer=0)
    assert [t.name for t in fig.data] == ["E0", "E1"]
    assert list(fig.data[0].y) == [0.75, 0.5]
    assert list(F.bias_curves(history, 0).data[1].y) == [0.0, 0.001]
    steps, v = F.maxvio_series(history)
    assert list(steps) == [1, 2] and list(v) == [0.5, 0.0]
    fig = F.run_curves({XSS: (steps, v), "b": (steps, v * 2)}, "MaxVio", "maxvio", smooth=0.5)
    assert fig.data[0].name.startswith("&lt;script")
    assert list(fig.data[1].y) == [1.0, 0.5]  # EMA 0.5: 1, 0.5*1 + 0.5*0
    empty = F.load_share_curves(history.drop(columns=["load"]), layer=0)
    assert len(empty.data) == 0


def test_ema():
    assert F.ema(np.array([1.0, 3.0, 3.0]), 0.5).tolist() == [1.0, 2.0, 2.5]


def test_projection_scatter_and_selection(tiny):
    _, tokens, _ = tiny
    coords = np.array([[0, 0], [1, 1], [2, 2]])
    fig = F.projection_scatter(coords, [1, 0, 1], token_rows=[10, 11, 12], hover=["a", "b", XSS], n_experts=3)
    assert [t.name for t in fig.data] == ["E0", "E1"]
    assert all(t.type == "scattergl" for t in fig.data)
    assert list(fig.data[1].customdata) == [10, 12]
    assert fig.data[1].marker.color == F.expert_colors(3)[1]
    assert "&lt;script&gt;" in fig.data[1].text[1]
    cat = F.projection_scatter(coords, ["x", "y", "x"], [0, 1, 2], ["", "", ""], kind="category", max_categories=1)
    assert [t.name for t in cat.data] == ["x", "other"]
    points = [{"customdata": [12]}, {"customdata": 10}, {"customdata": 12}, {"x": 1}]
    assert F.selected_rows(points) == [10, 12]
    ctx = F.token_context(tokens, {0: "ab" + XSS}, [1], width=1)
    assert ctx.loc[0, "context"] == "a[b]<" and ctx.loc[0, "label"] == "code"


def test_load_matrix_and_frames(tiny):
    _, _, routing = tiny
    load = F.load_matrix(routing, n_layers=2, n_experts=3)
    assert load.tolist() == [[2, 2, 2], [2, 3, 1]]
    long = F.matrix_frame(load, "layer", "expert", "load")
    assert len(long) == 6 and long.iloc[4].tolist() == [1, 1, 3]
    frame = F.series_frame({"a": (np.array([1, 2]), np.array([0.5, 0.25]))}, "loss")
    assert frame.columns.tolist() == ["run", "step", "loss"] and frame["loss"].tolist() == [0.5, 0.25]


def test_flow_frame():
    flow = np.zeros((1, 2, 2), dtype=int)
    flow[0, 1, 0] = 4
    assert F.flow_frame(flow).values.tolist() == [[0, 1, 0, 4]]


def test_aux_series_and_history_table(history):
    history = history.assign(aux=[{"switch": 0.5}, {"switch": 0.25, "zloss": 1.0}])
    aux = F.aux_series(history)
    assert list(aux) == ["switch", "zloss"]
    assert aux["switch"][1].tolist() == [0.5, 0.25] and aux["zloss"][0].tolist() == [2]
    table = F.history_table(history)
    assert table.loc[1, "load_l0_e1"] == 2 and table.loc[1, "bias_l0_e1"] == 0.001
    assert table.loc[0, "maxvio_batch_l0"] == 0.5 and table.loc[1, "aux_zloss"] == 1.0
    assert "load" not in table and table["loss"].tolist() == [5.0, 4.0]
