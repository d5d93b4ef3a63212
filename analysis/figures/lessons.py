"""The Learn lessons' figures: numbers in (teaching results, toy routers), `go.Figure` out; no Streamlit.

Experts keep the colours of the rest of the app (`colors.expert_colors`); the lessons' tables are in
`analysis.tables` (gate_steps_table, tradeoff_rows). Shapes: T tokens, E experts, K top-k, S steps.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analysis.figures import colors
from analysis.teaching import GateSteps, Regions, decision_regions

RATE_COLORS = {1e-4: "#7f7f7f", 1e-3: "#2ca02c", 1e-2: "#d62728"}  # slow / good / oscillating
BELOW = dict(orientation="h", yanchor="top", y=-0.25, x=0)  # a legend under the plot leaves a phone its width


def regions_figure(
    regions: Regions,
    mode: str = "top1",
    W_E2: np.ndarray | None = None,
    points_T2: np.ndarray | None = None,
    point_expert_T: np.ndarray | None = None,
    title: str = "",
) -> go.Figure:
    """Decision regions on the grid (top-1 expert, or the top-2 pair), router weight arrows, sample points."""
    E = int(W_E2.shape[0]) if W_E2 is not None else int(regions.top1.max()) + 1
    palette = colors.expert_colors(E)
    if mode == "top2":
        z, names = regions.pair, [f"E{i}+E{j}" for i, j in regions.pairs]
        region_colors = [colors.mix(palette[i], palette[j]) for i, j in regions.pairs]
    else:
        z, names = regions.top1, [f"E{e}" for e in range(E)]
        region_colors = palette
    labels = np.array(names, dtype=object)[z]
    fig = go.Figure(
        go.Heatmap(
            x=regions.xs,
            y=regions.ys,
            z=z,
            text=labels,
            colorscale=colors.discrete_colorscale(region_colors),
            zmin=-0.5,
            zmax=len(region_colors) - 0.5,
            opacity=0.45,
            showscale=False,
            hovertemplate="x=%{x:.2f}, y=%{y:.2f}: %{text}<extra></extra>",
            name="regions",
        )
    )
    lim = float(regions.xs.max())
    if mode == "top2":  # name each pair region at its centre (regions are convex-ish wedges)
        gx, gy = np.meshgrid(regions.xs, regions.ys)
        for p in np.unique(z):
            inside = z == p
            fig.add_annotation(
                x=float(gx[inside].mean()),
                y=float(gy[inside].mean()),
                text=names[p],
                showarrow=False,
                font=dict(size=13, color="#222222"),
                bgcolor="rgba(255,255,255,0.6)",
            )
    if points_T2 is not None and len(points_T2):
        experts = np.zeros(len(points_T2), dtype=int) if point_expert_T is None else np.asarray(point_expert_T)
        big = len(points_T2) <= 5  # a single picked token gets a large marker
        fig.add_trace(
            go.Scatter(
                x=points_T2[:, 0],
                y=points_T2[:, 1],
                mode="markers",
                marker=dict(
                    color=[palette[e] for e in experts],
                    size=16 if big else 6,
                    symbol="star" if big else "circle",
                    line=dict(width=1.5 if big else 0.5, color="black" if big else "white"),
                ),
                text=[f"E{e}" for e in experts],
                hovertemplate="token at (%{x:.2f}, %{y:.2f}) → %{text}<extra></extra>",
                name="tokens",
                showlegend=False,
            )
        )
    if W_E2 is not None:
        # arrows longer than the view are shortened to fit; labels sit just past the tips
        W = np.asarray(W_E2, dtype=float)
        norms = np.linalg.norm(W, axis=1, keepdims=True)
        tips = W * np.minimum(1.0, 0.85 * lim / np.maximum(norms, 1e-9))
        for e, (wx, wy) in enumerate(tips):
            fig.add_annotation(
                x=wx,
                y=wy,
                ax=0,
                ay=0,
                xref="x",
                yref="y",
                axref="x",
                ayref="y",
                showarrow=True,
                arrowhead=3,
                arrowwidth=3,
                arrowcolor=palette[e],
                text="",
            )
        fig.add_trace(
            go.Scatter(
                x=tips[:, 0] * 1.12,
                y=tips[:, 1] * 1.12,
                mode="text",
                text=[f"w{e}" for e in range(len(W))],
                textfont=dict(color=palette, size=15),
                hoverinfo="skip",
                showlegend=False,
                name="weights",
            )
        )
    fig.update_xaxes(range=[-lim, lim], constrain="domain", title="x₁")
    fig.update_yaxes(range=[-lim, lim], scaleanchor="x", scaleratio=1, title="x₂")
    fig.update_layout(title=title or ("Top-2 pairs" if mode == "top2" else "Top-1 expert"), height=480)
    return fig


def router_figure(
    W_E2: np.ndarray, bias_E: np.ndarray, score_func: str, lim: float = 2.0, title: str = ""
) -> go.Figure:
    """Top-1 regions of a router (computed on an 81 x 81 grid) with its weight arrows."""
    return regions_figure(decision_regions(W_E2, bias_E, score_func, lim, 81), "top1", W_E2, title=title)


def _gate_panels(steps: GateSteps) -> tuple[int, list[str], set[int], list[tuple[str, np.ndarray]]]:
    """(E, expert colours, chosen experts, the four (title, values per expert) steps of one token's routing)."""
    E = len(steps.logits)
    gates = np.zeros(E)
    gates[steps.chosen] = steps.gates
    panels = [
        ("1. logits w·x", steps.logits),
        ("2. scores", steps.scores),
        ("3. score + bias → top-k", steps.biased),
        ("4. gate weights", gates),
    ]
    return E, colors.expert_colors(E), set(steps.chosen.tolist()), panels


def gate_steps_figure(steps: GateSteps) -> go.Figure:
    """Four panels, one bar per expert: logits → scores → scores + bias (chosen outlined) → gate weights."""
    E, palette, chosen, panels = _gate_panels(steps)
    fig = make_subplots(rows=1, cols=4, subplot_titles=[p[0] for p in panels])
    names = [f"E{e}" for e in range(E)]
    for col, (label, values) in enumerate(panels, start=1):
        outline = [3 if (col >= 3 and e in chosen) else 0 for e in range(E)]
        fig.add_trace(
            go.Bar(
                x=names,
                y=values,
                marker=dict(color=palette, line=dict(width=outline, color="black")),
                text=[f"{v:.3f}" for v in values],
                textposition="outside",
                name=label,
                showlegend=False,
                hovertemplate="%{x}: %{y:.4f}<extra>" + label + "</extra>",
            ),
            row=1,
            col=col,
        )
    fig.update_layout(height=360, margin=dict(t=60, b=30))
    return fig


def output_figure(steps: GateSteps) -> go.Figure:
    """The token's output as 2-D arrows: each chosen expert's weighted output, the shared one, the sum."""
    palette = colors.expert_colors(len(steps.logits))
    arrows = [("x (input)", steps.x, "#444444")]
    for e, g, y in zip(steps.chosen, steps.gates, steps.expert_out):
        arrows.append((f"{g:.2f} × E{e}(x)", g * y, palette[int(e)]))
    arrows += [("shared(x)", steps.shared, "#8c564b"), ("output", steps.output, "#000000")]
    fig = go.Figure()
    for label, (vx, vy), color in arrows:
        fig.add_trace(
            go.Scatter(
                x=[0, vx],
                y=[0, vy],
                mode="lines+markers",
                name=label,
                line=dict(color=color, width=4 if label == "output" else 2),
                marker=dict(size=[0, 9]),
                hovertemplate=f"{label}: (%{{x:.3f}}, %{{y:.3f}})<extra></extra>",
            )
        )
    lim = max(1.0, float(np.abs(np.concatenate([a[1] for a in arrows])).max()) * 1.15)
    fig.update_xaxes(range=[-lim, lim], constrain="domain")
    fig.update_yaxes(range=[-lim, lim], scaleanchor="x", scaleratio=1)
    fig.update_layout(title="Weighted sum of expert outputs (+ shared expert)", height=420)
    return fig


def maxvio_figure(curves: Mapping[str, np.ndarray], threshold: float = 0.05, step: int | None = None) -> go.Figure:
    """MaxVio per step, one line per run (e.g. per rate); dashed line at the target, dotted at `step`."""
    fig = go.Figure()
    for label, values in curves.items():
        color = next((c for r, c in RATE_COLORS.items() if label == f"u = {r:g}"), None)
        fig.add_trace(go.Scatter(y=np.asarray(values), mode="lines", name=label, line=dict(color=color)))
    fig.add_hline(y=threshold, line_dash="dash", annotation_text=f"MaxVio = {threshold:g}")
    if step is not None:
        fig.add_vline(x=step, line_dash="dot")
    fig.update_layout(title="MaxVio per step", xaxis_title="step", yaxis_title="MaxVio", height=360, legend=BELOW)
    return fig


def bias_figure(biases_SE: np.ndarray, step: int | None = None) -> go.Figure:
    """Each expert's bias over steps."""
    biases_SE = np.asarray(biases_SE)
    palette = colors.expert_colors(biases_SE.shape[1])
    fig = go.Figure()
    for e in range(biases_SE.shape[1]):
        fig.add_trace(go.Scatter(y=biases_SE[:, e], mode="lines", name=f"b{e}", line=dict(color=palette[e])))
    if step is not None:
        fig.add_vline(x=step, line_dash="dot")
    fig.update_layout(title="Expert biases b_i", xaxis_title="step", yaxis_title="bias", height=320, legend=BELOW)
    return fig


def load_figure(load_E: np.ndarray, title: str = "Load per expert") -> go.Figure:
    """Bars of tokens per expert, the mean load dashed."""
    load_E = np.asarray(load_E, dtype=float)
    E = len(load_E)
    fig = go.Figure(go.Bar(x=[f"E{e}" for e in range(E)], y=load_E, marker_color=colors.expert_colors(E)))
    fig.add_hline(y=float(load_E.mean()), line_dash="dash", annotation_text="mean")
    fig.update_layout(title=title, yaxis_title="tokens", height=300)
    return fig


def tradeoff_figure(rows: pd.DataFrame) -> go.Figure:
    """Balance achieved (MaxVio, lower is better) vs how far the router bent (top-1 changed), one dot per run.

    `rows` is `tables.tradeoff_rows(...)`: columns method, label, maxvio, top1_changed, weight_change."""
    fig = go.Figure()
    for method, color, symbol in (("switch", "#1f77b4", "circle"), ("bias", "#2ca02c", "star")):
        part = rows[rows["method"] == method]
        fig.add_trace(
            go.Scatter(
                x=part["top1_changed"],
                y=part["maxvio"],
                mode="markers+text",
                text=part["label"],
                textposition=["top center" if i % 2 == 0 else "bottom center" for i in range(len(part))],
                name="Switch aux loss" if method == "switch" else "bias rule",
                marker=dict(color=color, size=14, symbol=symbol),
                customdata=part["weight_change"],
                hovertemplate="%{text}: MaxVio %{y:.3f}, top-1 changed %{x:.1%}, "
                "‖W−W0‖ %{customdata:.2f}<extra></extra>",
            )
        )
    fig.update_layout(
        title="Balance vs bend", xaxis_title="tokens whose top-1 changed", yaxis_title="MaxVio", height=420
    )
    fig.update_xaxes(tickformat=".0%")
    return fig


def capacity_figure(topk_TK: np.ndarray, keep_TK: np.ndarray, capacity: int) -> go.Figure:
    """Token position × expert: every routed pair as a dot in its expert's colour, dropped pairs as grey X."""
    topk_TK, keep_TK = np.asarray(topk_TK), np.asarray(keep_TK, dtype=bool)
    T, K = topk_TK.shape
    E = int(topk_TK.max()) + 1 if topk_TK.size else 1
    palette = colors.expert_colors(max(E, 1))
    pos = np.repeat(np.arange(T), K)
    expert = topk_TK.ravel()
    keep = keep_TK.ravel()
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=pos[keep],
            y=[f"E{e}" for e in expert[keep]],
            mode="markers",
            name="kept",
            marker=dict(color=[palette[e] for e in expert[keep]], size=10),
            hovertemplate="position %{x} → %{y}<extra>kept</extra>",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=pos[~keep],
            y=[f"E{e}" for e in expert[~keep]],
            mode="markers",
            name="dropped",
            marker=dict(color="#999999", size=12, symbol="x"),
            hovertemplate="position %{x} → %{y}<extra>dropped</extra>",
        )
    )
    fig.update_yaxes(categoryorder="array", categoryarray=[f"E{e}" for e in range(E)])
    fig.update_layout(
        title=f"Capacity {capacity} per expert: {int((~keep).sum())} of {keep.size} routings dropped",
        xaxis_title="token position",
        height=320,
    )
    return fig


def gate_step_panels(steps: GateSteps) -> list[go.Figure]:
    """The four steps of `gate_steps_figure` as four small figures, for columns that stack on a phone."""
    E, palette, chosen, panels = _gate_panels(steps)
    out = []
    for i, (label, values) in enumerate(panels):
        outline = [3 if (i >= 2 and e in chosen) else 0 for e in range(E)]
        fig = go.Figure(
            go.Bar(
                x=[f"E{e}" for e in range(E)],
                y=values,
                marker=dict(color=palette, line=dict(width=outline, color="black")),
                text=[f"{v:.2f}" for v in values],
                textposition="outside",
                cliponaxis=False,
                hovertemplate="%{x}: %{y:.4f}<extra>" + label + "</extra>",
            )
        )
        span = float(np.ptp(np.append(values, 0.0))) or 1.0  # room above/below the bars for their labels
        fig.update_yaxes(
            range=[min(0.0, float(values.min())) - 0.15 * span, max(0.0, float(values.max())) + 0.2 * span]
        )
        fig.update_layout(title=label, height=300, margin=dict(l=40, r=10, t=50, b=30), showlegend=False)
        out.append(fig)
    return out


PROJECTOR = dict(font=20, title=22, tick=17, line=2.0, marker=1.6)  # read from the back of a room: ~1.7x text


def for_projector(fig: go.Figure, height: int | None = None) -> go.Figure:
    """A copy of `fig` readable on a projector: larger text, thicker lines and markers (and `height` if given)."""
    fig = go.Figure(fig)
    fig.update_layout(font=dict(size=PROJECTOR["font"]), title_font=dict(size=PROJECTOR["title"]))
    axis = dict(tickfont=dict(size=PROJECTOR["tick"]), title_font=dict(size=PROJECTOR["font"]))
    fig.update_xaxes(**axis)
    fig.update_yaxes(**axis)
    fig.update_annotations(font_size=PROJECTOR["font"] - 2)
    for note in fig.layout.annotations:  # the router's weight arrows are annotations
        if note.showarrow is not False and note.arrowwidth:
            note.arrowwidth = note.arrowwidth * PROJECTOR["line"]
    for shape in fig.layout.shapes:  # mean and threshold lines, step markers
        shape.line.width = (shape.line.width or 2) * PROJECTOR["line"]
    lines = (fig.layout.title.text or "").count("<br>") + 1  # a subtitle needs room above the plot
    fig.update_layout(margin=dict(t=max(fig.layout.margin.t or 0, 30 + 32 * lines)))
    for trace in fig.data:
        if trace.type == "scatter":
            width = trace.line.width if trace.line.width is not None else 2
            trace.line.width = width * PROJECTOR["line"]
            size = trace.marker.size
            if isinstance(size, (int, float)):
                trace.marker.size = size * PROJECTOR["marker"]
            if trace.textfont.size:
                trace.textfont.size = PROJECTOR["font"]
        elif trace.type == "bar" and trace.text is not None:
            trace.textfont.size = PROJECTOR["font"] - 2
        elif trace.type == "heatmap" and trace.showscale is not False:
            trace.colorbar.tickfont = dict(size=PROJECTOR["tick"])
    if height is not None:
        fig.update_layout(height=height)
    return fig


def tally_figure(options: list[str], counts: list[int], answer: int | None = None) -> go.Figure:
    """The class's answers: one horizontal bar per option with its count; the right one marked once revealed."""
    counts = list(counts) + [0] * (len(options) - len(counts))
    palette = colors.expert_colors(1) * len(options)  # one colour: the count is the message, not the option
    if answer is not None:  # Okabe-Ito green for the right answer, grey for the rest
        palette = ["#009E73" if i == answer else "#999999" for i in range(len(options))]
    labels = [("✓ " if i == answer else "") + text for i, text in enumerate(options)]
    fig = go.Figure(
        go.Bar(
            y=labels,
            x=counts[: len(options)],
            orientation="h",
            marker_color=palette,
            text=[str(c) for c in counts[: len(options)]],
            textposition="outside",
            cliponaxis=False,
            hovertemplate="%{y}: %{x}<extra></extra>",
        )
    )
    fig.update_yaxes(autorange="reversed", automargin=True)
    fig.update_xaxes(title="answers", rangemode="tozero", dtick=max(1, (max(counts, default=0) + 4) // 5))
    fig.update_layout(height=90 + 60 * len(options), margin=dict(t=30, b=40, r=40), title=f"{sum(counts)} answers")
    return fig
