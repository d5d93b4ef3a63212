"""The pure figure builders (analysis.figures) on tiny hand-made traces: values drawn, colours, escaping."""

import numpy as np
import pandas as pd
import pytest

from analysis import figures, tables

XSS = "<script>alert(1)</script>"


def test_expert_colors_are_stable_and_distinct():
    for n in (1, 4, 10, 16, 24, 40):
        colors = figures.colors.expert_colors(n)
        assert len(colors) == n and len(set(colors)) == n
        assert all(c.startswith("#") and len(c) == 7 for c in colors)
    assert figures.colors.expert_colors(4) == figures.colors.expert_colors(8)[:4]
    assert figures.colors.text_color("#ffffff") == "#000000" and figures.colors.text_color("#000000") == "#ffffff"


def test_mix_rgba_and_discrete_colorscale():
    assert figures.colors.mix("#000000", "#ffffff") == "#7f7f7f"
    assert figures.colors.rgba("#ff0080", 0.5) == "rgba(255,0,128,0.5)"
    scale = figures.colors.discrete_colorscale(["#111111", "#222222"])
    assert scale == [[0.0, "#111111"], [0.5, "#111111"], [0.5, "#222222"], [1.0, "#222222"]]
    assert figures.colors.esc("\"<a>'") == "&#34;&lt;a&gt;&#39;"  # numeric: plotly shows a named &quot; as is


def test_colored_text_escapes_and_tiles(tiny_routing):
    text, tokens, routing = tiny_routing
    top1 = tables.top1_table(routing, 0)
    html = figures.routing.colored_text_html(text + "\n\nx $y$", tokens, top1, 3, tooltips={2: XSS})
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert html.count("<span") == 3
    assert 'data-expert="2"' in html and 'data-expert="1"' in html
    assert "\n" not in html and "<br><br>" in html and "$" not in html
    assert figures.colors.expert_colors(3)[2] in html


def test_legend_html_counts():
    html = figures.routing.legend_html(3, counts=[5, 0, 2])
    assert "E0 (5)" in html and "E2 (2)" in html and html.count("<span") == 3


def test_token_layer_grid(tiny_routing):
    _, tokens, routing = tiny_routing
    fig = figures.routing.token_layer_grid(tokens, routing, n_layers=2, n_experts=3, selected=(1, 1))
    assert len(fig.data) == 1  # one heatmap: no marker per cell
    hm = fig.data[0]
    assert np.array_equal(np.asarray(hm.z), [[2, 0, 1], [1, 1, 0]])
    assert hm.zmin == -0.5 and hm.zmax == 2.5
    custom = np.asarray(hm.customdata)  # (L, T, 2K): experts by rank, then their gate weights
    assert custom.shape == (2, 3, 4) and list(custom[0, 0]) == pytest.approx([2, 0, 0.7, 0.3])
    assert list(custom[1, 2]) == pytest.approx([0, 1, 0.55, 0.45])
    assert "E%{customdata[0]} %{customdata[2]:.2f}, E%{customdata[1]} %{customdata[3]:.2f}" in hm.hovertemplate
    text = np.asarray(hm.text)
    assert text.shape == (2, 3) and "&lt;script&gt;" in text[0, 2] and "<script>" not in text[0, 2]
    assert fig.layout.meta == figures.routing.GRID_META  # what CLICK_JS hooks its cell clicks on
    (box,) = [s for s in fig.layout.shapes if s.line.color == "#000000"]  # the selected cell, outlined
    assert (box.x0, box.x1, box.y0, box.y1) == (0.5, 1.5, 0.5, 1.5)


def test_routing_steps_figure():
    scores = np.array([0.9, 0.8, 0.1, 0.5])
    steps = tables.routing_steps_table(scores, np.array([0.0, -0.5, 0.0, 0.1]), top_k=2)
    fig = figures.routing.routing_steps_figure(steps, shared_share=0.25)
    assert len(fig.data) == 4
    assert list(fig.data[0].y) == pytest.approx(list(scores))
    assert "25%" in fig.layout.annotations[3].text
    assert [a.text for a in fig.layout.annotations[4:]] == ["bias"]  # E3 is chosen only thanks to its bias


def test_load_heatmap_shares():
    fig = figures.heatmaps.load_heatmap(np.array([[2, 2, 0, 0], [1, 1, 1, 1]]))
    assert np.allclose(fig.data[0].z, [[0.5, 0.5, 0, 0], [0.25] * 4])
    assert list(fig.data[0].x) == ["E0", "E1", "E2", "E3"]
    assert "25.0%" in fig.layout.title.text


def test_load_heatmap_is_centred_on_uniform_with_a_range_fixed_across_steps():
    early = figures.heatmaps.load_heatmap(np.array([[30, 10, 0, 0], [5, 5, 5, 5]])).data[0]
    late = figures.heatmaps.load_heatmap(np.array([[101, 99, 100, 100], [1, 1, 1, 1]])).data[0]
    for h in (early, late):  # E = 4: uniform 0.25, range 0.25 ± 50 % = 0.125 .. 0.375 whatever the data
        assert (h.zmid, h.zmin, h.zmax) == pytest.approx((0.25, 0.125, 0.375))
        assert h.colorscale[0][1] != h.colorscale[-1][1]  # diverging: the two ends differ
        assert list(h.colorbar.tickvals) == pytest.approx([0.125, 0.25, 0.375])
        assert h.colorbar.ticktext[0].startswith("≤") and h.colorbar.ticktext[-1].startswith("≥")
    assert early.z[0][0] == 0.75  # the value itself is not clipped, only its colour
    wide = figures.heatmaps.load_heatmap(np.ones((1, 8)), span=0.25)
    assert (wide.data[0].zmin, wide.data[0].zmax) == pytest.approx((0.09375, 0.15625))
    assert "fixed" in wide.layout.title.text and "clipped" in wide.layout.title.text


def test_clicked_cell_reads_layer_and_expert_from_the_axis_labels():
    assert figures.heatmaps.clicked_cell([{"x": "E3", "y": "layer 2", "z": 0.1}]) == (2, 3)
    assert figures.heatmaps.clicked_cell([{"x": "E1", "y": "prose"}], layer=4) == (4, 1)
    assert figures.heatmaps.clicked_cell([{"x": "E1", "y": "prose"}]) is None  # no layer known
    assert figures.heatmaps.clicked_cell([{"x": "layer 1", "y": "E2"}], layer=0) is None
    assert figures.heatmaps.clicked_cell([], layer=0) is None
    fig = figures.heatmaps.load_heatmap(np.ones((3, 5)))  # the labels clicked_cell reads are the figure's
    assert figures.heatmaps.clicked_cell([{"x": fig.data[0].x[4], "y": fig.data[0].y[2]}]) == (2, 4)


def test_heatmap_cells_are_clickable_through_invisible_markers():
    # plotly cannot click-select a heatmap cell: one invisible scatter marker per cell takes the click and hover
    fig = figures.heatmaps.load_heatmap(np.array([[3, 1], [2, 2], [0, 4]]))
    heat, targets = fig.data
    assert heat.hoverinfo == "skip" and targets.type == "scatter" and targets.marker.opacity == 0
    assert list(zip(targets.x, targets.y))[:3] == [("E0", "layer 0"), ("E1", "layer 0"), ("E0", "layer 1")]
    assert targets.text[1] == "layer 0, E1: 25.00% of the layer's routings (1)"
    assert fig.layout.hoverdistance == -1  # a click anywhere in a cell selects its marker
    assert figures.heatmaps.clicked_cell([{"x": targets.x[5], "y": targets.y[5]}]) == (2, 1)
    ratio = pd.DataFrame([[2.0, 0.5]], index=[XSS], columns=[3, 7])
    spec = figures.heatmaps.specialization_heatmap(ratio, ratio / 8)
    assert list(spec.data[1].x) == ["E3", "E7"]
    assert spec.data[1].text[0] == (
        "&lt;script&gt;alert(1)&lt;/script&gt;, E3: 2.00x uniform; share of tokens 25.0% "
        "(&lt;script&gt;alert(1)&lt;/script&gt; tokens with E3 in their top-k); share of routings 100.0%"
    )
    assert figures.heatmaps.clicked_cell([{"x": "E7", "y": spec.data[1].y[1]}], layer=2) == (2, 7)


def test_specialization_heatmap_escapes_labels():
    ratio = pd.DataFrame([[2.0, 0.5], [1.0, 1.0]], index=[XSS, "prose"], columns=[0, 1])
    fig = figures.heatmaps.specialization_heatmap(ratio)
    assert np.allclose(fig.data[0].z, [[1, -1], [0, 0]])
    assert fig.data[0].y[0] == "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert fig.data[0].zmid == 0


def test_coactivation_and_sankey():
    cond = np.array([[1.0, 0.3, 0.1], [0.6, 1.0, 0.2], [0.0, 0.4, 1.0]])
    lift = np.full((3, 3), 2.0)
    fig = figures.heatmaps.coactivation_heatmap(cond, lift_EE=lift)
    z = np.array(fig.data[0].z, dtype=float)
    assert np.isnan(np.diag(z)).all()  # the diagonal (always 1) is blank ...
    assert np.allclose(z[~np.eye(3, dtype=bool)], cond[~np.eye(3, dtype=bool)])
    assert (fig.data[0].zmin, fig.data[0].zmax) == (0, 0.6)  # ... and out of the colour range
    assert fig.data[0].hoverongaps is False and "diagonal blank" in fig.layout.title.text
    assert np.allclose(fig.data[0].customdata, lift) and cond[0, 0] == 1.0  # the input is not modified
    flow = pd.DataFrame({"layer": [0, 0, 1], "src": [0, 1, 1], "dst": [1, 1, 0], "count": [3, 1, 10]})
    s = figures.heatmaps.flow_sankey(flow, n_layers=3, n_experts=2)
    link = s.data[0].link
    assert list(link.source) == [0, 1, 3] and list(link.target) == [3, 3, 4]
    assert list(link.value) == [3, 1, 10]
    assert len(s.data[0].node.label) == 6
    kept = figures.heatmaps.flow_sankey(flow, n_layers=3, n_experts=2, min_share=0.5)
    assert list(kept.data[0].link.value) == [3, 10]


def test_training_curves(tiny_history):
    fig = figures.training.load_share_curves(tiny_history, layer=0)
    assert [t.name for t in fig.data] == ["E0", "E1"]
    assert list(fig.data[0].y) == [0.75, 0.5]
    assert list(figures.training.bias_curves(tiny_history, 0).data[1].y) == [0.0, 0.001]
    steps, v = tables.maxvio_series(tiny_history)
    fig = figures.training.run_curves({XSS: (steps, v), "b": (steps, v * 2)}, "MaxVio", "maxvio", smooth=0.5)
    assert fig.data[0].name.startswith("&lt;script")
    assert list(fig.data[1].y) == [1.0, 0.5]  # EMA 0.5: 1, 0.5*1 + 0.5*0
    empty = figures.training.load_share_curves(tiny_history.drop(columns=["load"]), layer=0)
    assert len(empty.data) == 0


def test_balance_curves_one_line_per_layer():
    history = pd.DataFrame({"step": [1, 2], "maxvio_batch": [[0.5, 0.7], [0.25, 0.7]]})
    fig = figures.training.balance_curves(history)
    assert [t.name for t in fig.data] == ["layer 0", "layer 1"]
    assert list(fig.data[0].x) == [1, 2] and list(fig.data[0].y) == [0.5, 0.25]
    assert fig.layout.yaxis.title.text == "MaxVio_batch"
    assert len(figures.training.balance_curves(history.drop(columns=["maxvio_batch"])).data) == 0


def test_projection_scatter():
    coords = np.array([[0, 0], [1, 1], [2, 2]])
    fig = figures.geometry.projection_scatter(
        coords, [1, 0, 1], token_rows=[10, 11, 12], hover=["a", "b", XSS], n_experts=3
    )
    assert [t.name for t in fig.data] == ["E0", "E1"]
    assert all(t.type == "scattergl" for t in fig.data)
    assert list(fig.data[1].customdata) == [10, 12]
    assert fig.data[1].marker.color == figures.colors.expert_colors(3)[1]
    assert "&lt;script&gt;" in fig.data[1].text[1]
    cat = figures.geometry.projection_scatter(
        coords, ["x", "y", "x"], [0, 1, 2], ["", "", ""], kind="category", max_categories=1
    )
    assert [t.name for t in cat.data] == ["x", "other"]


def test_projection_scatter_shows_silhouette_and_keeps_many_experts_legend():
    coords = np.zeros((64, 2))
    fig = figures.geometry.projection_scatter(coords, list(range(64)), range(64), [""] * 64, silhouette=0.051)
    assert len(fig.data) == 64 and "0.05" in fig.layout.title.text
    assert fig.layout.legend.orientation == "h" and fig.layout.legend.yanchor == "top"
    few = figures.geometry.projection_scatter(coords[:2], [0, 1], [0, 1], ["", ""])
    assert few.layout.title.text is None
    assert fig.layout.height - few.layout.height == 24 * (8 - 1)  # 8 legend rows of 8 instead of 1


@pytest.mark.parametrize(
    ("value", "says", "never"),
    [
        (None, ["No silhouette"], ["splits"]),
        (-0.1, ["-0.10", "mixed"], ["splits its"]),
        (0.05, ["0.05", "overlap strongly", "mixed"], ["splits its"]),
        (0.3, ["0.30", "weakly separated"], ["splits its"]),
        (0.6, ["0.60", "reasonably separate"], ["mixed"]),
        (0.85, ["0.85", "clearly separated"], ["mixed", "overlap"]),
    ],
)
def test_silhouette_caption_says_what_the_number_supports(value, says, never):
    caption = figures.geometry.silhouette_caption(value)
    assert all(w in caption for w in says) and not any(w in caption for w in never), caption


def test_export_config_png_and_svg():
    png = figures.export.CONFIG["toImageButtonOptions"]
    assert png["format"] == "png" and png["scale"] == 2
    svg = figures.export.config("svg", filename="load")["toImageButtonOptions"]
    assert svg == {"format": "svg", "filename": "load", "scale": 1}
    with pytest.raises(ValueError):
        figures.export.config("pdf")


def test_token_context_expert_column(tiny_routing):
    text, tokens, routing = tiny_routing
    experts = tables.top1_table(routing, 1).to_dict()  # layer 1: tokens 0, 1, 2 go first to experts 1, 1, 0
    ctx = tables.token_context(tokens, {0: text}, [1, 2], width=1, experts=experts)
    assert list(ctx.columns) == ["token_row", "token", "expert", "label", "context"]
    assert ctx["expert"].tolist() == [1, 0] and ctx.loc[0, "context"] == "a[b]<"
    assert "expert" not in tables.token_context(tokens, {0: text}, [1]).columns
