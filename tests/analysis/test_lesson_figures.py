"""The Learn lessons' figure builders (analysis.figures.lessons) and their tables, without Streamlit."""

import numpy as np
import plotly.graph_objects as go

from analysis import figures, tables, teaching

W = teaching.default_weights()


def test_regions_figure_top1_and_top2():
    regions = teaching.decision_regions(W, np.zeros(4), lim=2.0, n=11)
    points = np.array([[1.5, 0.1], [0.0, -1.5]])
    fig = figures.lessons.regions_figure(regions, "top1", W, points, np.array([0, 3]))
    assert isinstance(fig, go.Figure)
    heat, scatter, labels = fig.data
    np.testing.assert_array_equal(heat.z, regions.top1)
    assert heat.text[5][10] == "E0"  # the point (2, 0) is in expert 0's region
    assert list(scatter.marker.color) == [figures.colors.expert_colors(4)[0], figures.colors.expert_colors(4)[3]]
    assert scatter.marker.size == 16  # few points: the picked tokens are drawn large
    assert len(fig.layout.annotations) == 4  # one arrow per weight vector
    # arrows of length 2 in a view of half-width 2 are shortened to 0.85 * 2 = 1.7; labels just past them
    assert (fig.layout.annotations[0].x, fig.layout.annotations[0].y) == (1.7, 0.0)
    assert list(labels.text) == ["w0", "w1", "w2", "w3"] and labels.x[0] == 1.7 * 1.12
    fig2 = figures.lessons.regions_figure(regions, "top2", W)
    np.testing.assert_array_equal(fig2.data[0].z, regions.pair)
    assert fig2.data[0].zmax == 5.5  # 6 pairs of 4 experts
    assert fig2.data[0].text[5][10] == "E0+E1"  # E1 and E3 tie at (2, 0): the lower id wins
    pair_labels = {a.text for a in fig2.layout.annotations if a.text}
    assert pair_labels == {"E0+E1", "E0+E3", "E1+E2", "E2+E3"}  # neighbours share the regions


def test_gate_steps_table_and_figure():
    bias = np.array([0.0, 0.0, 0.0, 0.3])
    steps = teaching.explain_token([1.0, 0.0], W, bias, top_k=2)
    table = tables.gate_steps_table(steps, bias)
    assert list(table["expert"]) == ["E0", "E1", "E2", "E3"]
    # E0 wins on score, E3 second thanks to its bias (0.5 + 0.3 beats 0.5)
    assert table["chosen (rank)"].tolist()[0] == 1 and table["chosen (rank)"].tolist()[3] == 2
    assert np.isnan(table["chosen (rank)"].tolist()[1])
    assert abs(table["gate weight"].sum() - 1) < 1e-12  # sigmoid gates are renormalised
    assert table["gate weight"].iloc[1] == 0.0
    fig = figures.lessons.gate_steps_figure(steps)
    assert len(fig.data) == 4
    np.testing.assert_allclose(fig.data[0].y, steps.logits)
    np.testing.assert_allclose(fig.data[3].y, table["gate weight"])
    assert list(fig.data[2].marker.line.width) == [3, 0, 0, 3]  # chosen experts outlined


def test_output_figure_arrows():
    steps = teaching.explain_token([1.0, 0.0], W, np.zeros(4), top_k=2)
    fig = figures.lessons.output_figure(steps)
    assert [t.name for t in fig.data][0] == "x (input)" and fig.data[-1].name == "output"
    assert len(fig.data) == 2 + 2 + 1  # input, 2 experts, shared, output
    np.testing.assert_allclose([fig.data[-1].x[1], fig.data[-1].y[1]], steps.output)


def test_curves_and_bars():
    fig = figures.lessons.maxvio_figure({"u = 0.001": np.array([1.0, 0.5]), "u = 0.01": np.array([1.0, 0.2])}, step=1)
    assert [t.name for t in fig.data] == ["u = 0.001", "u = 0.01"]
    assert fig.data[0].line.color == figures.lessons.RATE_COLORS[1e-3]
    assert len(fig.layout.shapes) == 2  # threshold and current step
    biases = np.zeros((3, 4))
    assert len(figures.lessons.bias_figure(biases, step=2).data) == 4
    bars = figures.lessons.load_figure(np.array([4, 2, 0, 2]))
    np.testing.assert_array_equal(bars.data[0].y, [4, 2, 0, 2])
    assert bars.layout.shapes[0].y0 == 2.0  # mean load line


def _result(method, maxvio, changed, bend):
    return teaching.BalanceResult(method, maxvio, changed, 0.0, bend, np.zeros(3), W, np.zeros(4))


def test_tradeoff_rows_and_figure():
    results = {
        ("switch", 0.1): _result("switch", 0.5, 0.2, 0.9),
        ("switch", 1.0): _result("switch", 0.2, 0.6, 2.8),
        ("bias", 0.001): _result("bias", 0.03, 0.2, 0.0),
    }
    rows = tables.tradeoff_rows(results)
    assert rows["label"].tolist() == ["α=0.1", "α=1", "u=0.001"]
    assert rows["weight_change"].tolist() == [0.9, 2.8, 0.0]
    fig = figures.lessons.tradeoff_figure(rows)
    assert [len(t.x) for t in fig.data] == [2, 1]
    assert list(fig.data[1].y) == [0.03]


def test_router_figure_uses_the_bias():
    fig = figures.lessons.router_figure(W, np.array([0.0, 0.0, 1.0, 0.0]), "sigmoid", lim=1.0, title="t")
    assert set(np.unique(fig.data[0].z)) == {2}  # a bias of 1 makes E2 win everywhere in [-1, 1]^2
    assert fig.layout.title.text == "t"


def test_capacity_figure_marks_dropped():
    topk = np.array([[0], [0], [0], [1]])
    keep = teaching.capacity_keep(topk, 2, 1.0)
    fig = figures.lessons.capacity_figure(topk, keep, 2)
    kept, dropped = fig.data
    assert list(kept.x) == [0, 1, 3] and list(dropped.x) == [2]
    assert list(dropped.y) == ["E0"]
    assert "1 of 4" in fig.layout.title.text
