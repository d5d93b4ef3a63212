"""Table shaping (analysis.tables) on tiny hand-made traces and histories."""

import numpy as np

from analysis import tables


def test_top1_and_summary(tiny_routing):
    _, _, routing = tiny_routing
    assert tables.top1_table(routing, 0).tolist() == [2, 0, 1]
    assert tables.top1_table(routing, 1).tolist() == [1, 1, 0]
    assert tables.routing_summary(routing)[(0, 0)] == "E2 0.70, E0 0.30"


def test_short_token_shows_whitespace_and_cuts():
    assert tables.short_token(" a\n\t") == "␣a↵⇥"
    long = tables.short_token("x" * 100)
    assert len(long) == tables.MAX_TOKEN_CHARS and long.endswith("…")


def test_routing_steps_bias_flip():
    scores = np.array([0.9, 0.8, 0.1, 0.5])
    bias = np.array([0.0, -0.5, 0.0, 0.1])
    steps = tables.routing_steps_table(scores, bias, top_k=2)
    assert steps["chosen"].tolist() == [True, False, False, True]
    assert steps["chosen_without_bias"].tolist() == [True, True, False, False]
    assert tables.bias_changed_choice(steps)
    # gate weights from unbiased scores, renormalised: 0.9/1.4, 0.5/1.4
    assert np.allclose(steps["gate_weight"], [0.9 / 1.4, 0, 0, 0.5 / 1.4])
    assert steps["rank"].tolist() == [0, -1, -1, 1]
    no_flip = tables.routing_steps_table(scores, np.zeros(4), top_k=2)
    assert not tables.bias_changed_choice(no_flip)
    rec = tables.routing_steps_table(scores, np.zeros(4), top_k=2, recorded={2: 0.7, 0: 0.3})  # e.g. group-limited
    assert rec["chosen"].tolist() == [True, False, True, False] and rec["rank"].tolist() == [1, -1, 0, -1]
    assert rec["gate_weight"].tolist() == [0.3, 0, 0.7, 0]


def test_top_tokens_table(tiny_routing):
    _, tokens, routing = tiny_routing
    table = tables.top_tokens_table(tokens, routing, layer=1)
    assert table["expert"].tolist() == [0, 1]
    assert table["tokens"].tolist() == [1, 2]
    assert table.loc[1, "top tokens"] == "a (1), b (1)"


def test_load_matrix_and_frames(tiny_routing):
    _, _, routing = tiny_routing
    load = tables.load_matrix(routing, n_layers=2, n_experts=3)
    assert load.tolist() == [[2, 2, 2], [2, 3, 1]]
    long = tables.matrix_frame(load, "layer", "expert", "load")
    assert len(long) == 6 and long.iloc[4].tolist() == [1, 1, 3]
    frame = tables.series_frame({"a": (np.array([1, 2]), np.array([0.5, 0.25]))}, "loss")
    assert frame.columns.tolist() == ["run", "step", "loss"] and frame["loss"].tolist() == [0.5, 0.25]


def test_flow_frame():
    flow = np.zeros((1, 2, 2), dtype=int)
    flow[0, 1, 0] = 4
    assert tables.flow_frame(flow).values.tolist() == [[0, 1, 0, 4]]


def test_maxvio_series_and_history_array(tiny_history):
    steps, v = tables.maxvio_series(tiny_history)
    assert list(steps) == [1, 2] and list(v) == [0.5, 0.0]
    steps, load = tables.history_array(tiny_history, "load")
    assert load.shape == (2, 1, 2)
    steps, missing = tables.history_array(tiny_history.drop(columns=["load"]), "load")
    assert len(steps) == 0 and len(missing) == 0


def test_ema():
    assert tables.ema(np.array([1.0, 3.0, 3.0]), 0.5).tolist() == [1.0, 2.0, 2.5]


def test_aux_series_and_history_table(tiny_history):
    history = tiny_history.assign(aux=[{"switch": 0.5}, {"switch": 0.25, "zloss": 1.0}])
    aux = tables.aux_series(history)
    assert list(aux) == ["switch", "zloss"]
    assert aux["switch"][1].tolist() == [0.5, 0.25] and aux["zloss"][0].tolist() == [2]
    table = tables.history_table(history)
    assert table.loc[1, "load_l0_e1"] == 2 and table.loc[1, "bias_l0_e1"] == 0.001
    assert table.loc[0, "maxvio_batch_l0"] == 0.5 and table.loc[1, "aux_zloss"] == 1.0
    assert "load" not in table and table["loss"].tolist() == [5.0, 4.0]


def test_selection_and_token_context(tiny_routing):
    text, tokens, _ = tiny_routing
    points = [{"customdata": [12]}, {"customdata": 10}, {"customdata": 12}, {"x": 1}]
    assert tables.selected_rows(points) == [10, 12]
    ctx = tables.token_context(tokens, {0: text}, [1], width=1)
    assert ctx.loc[0, "context"] == "a[b]<" and ctx.loc[0, "label"] == "code"
