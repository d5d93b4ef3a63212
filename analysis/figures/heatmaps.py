"""Expert heatmaps: layer x expert load, domain specialization, co-activation, and the cross-layer flow.

Shapes: L MoE layers, E experts. Colour ranges are chosen to be honest: the load is centred on the uniform
share with a range fixed across steps, co-activation leaves out its diagonal (docs/COLOURS.md, Scales).
Cells are labelled "E e" / "layer L" so that `clicked_cell` can tell which one a click hit.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from analysis.figures import colors

LOAD_SPAN = 0.5  # the load heatmap's colour range: uniform share ± this fraction of it, the same at every step


def load_heatmap(load_LE: np.ndarray, span: float = LOAD_SPAN) -> go.Figure:
    """Layer x expert load share (each layer's loads divided by its total); hover shows share and count.

    The colour is diverging and centred on the uniform share 1/E, with a fixed range (1 ± span)/E so that
    two steps (or two runs with the same E) are drawn on the same scale; shares beyond it are clipped to
    the end colours, and the colorbar says so.
    """
    load_LE = np.asarray(load_LE, dtype=np.float64)
    L, E = load_LE.shape
    totals = load_LE.sum(axis=1, keepdims=True)
    share = np.divide(load_LE, totals, out=np.zeros_like(load_LE), where=totals > 0)
    uniform = 1 / E
    lo, hi = (1 - span) * uniform, (1 + span) * uniform
    fig = go.Figure(
        go.Heatmap(
            z=share,
            x=[f"E{e}" for e in range(E)],
            y=[f"layer {l}" for l in range(L)],
            customdata=load_LE,
            colorscale="RdBu_r",
            zmid=uniform,
            zmin=lo,
            zmax=hi,
            colorbar=dict(
                tickvals=[lo, uniform, hi],
                ticktext=[f"≤ {lo:.1%} (−{span:.0%})", f"{uniform:.1%} uniform", f"≥ {hi:.1%} (+{span:.0%})"],
            ),
        )
    )
    hover = [[f"layer {l}, E{e}: {share[l, e]:.2%} of the layer's routings ({load_LE[l, e]:,.0f})" for e in range(E)]
             for l in range(L)]  # fmt: skip
    _add_click_targets(fig, hover)
    fig.update_layout(
        title=dict(  # short lines: plotly titles do not wrap, and the page may be 400 px wide
            text=f"Expert load: share of routings per layer<br><sup>centred on uniform 1/E = {uniform:.1%}; colour "
            f"range fixed<br>at uniform ± {span:.0%} on every step, clipped beyond</sup>"
        ),
        height=200 + 40 * L,
        margin=dict(t=95, b=30),
    )
    fig.update_yaxes(autorange="reversed")
    return fig


def _add_click_targets(fig: go.Figure, hover: Sequence[Sequence[str]]) -> None:
    """Put an invisible marker on the centre of every cell of the figure's heatmap (trace 0), carrying its hover
    text: a heatmap cannot be click-selected in plotly, a scatter point can, and with no hover distance limit a
    click anywhere in a cell selects the marker of that cell. The heatmap itself gets no hover."""
    heat = fig.data[0]
    xs, ys = list(heat.x), list(heat.y)
    fig.add_trace(
        go.Scatter(
            x=[x for _ in ys for x in xs],
            y=[y for y in ys for _ in xs],
            text=[t for row in hover for t in row],
            mode="markers",
            marker=dict(size=12, opacity=0),
            selected=dict(marker=dict(opacity=0)),
            unselected=dict(marker=dict(opacity=0)),
            hovertemplate="%{text}<extra></extra>",
            showlegend=False,
        )
    )
    heat.hoverinfo = "skip"
    fig.update_layout(hovermode="closest", hoverdistance=-1)


def clicked_cell(points: Sequence[Mapping], layer: int | None = None) -> tuple[int, int] | None:
    """(layer, expert) of a clicked heatmap cell, read from its axis labels ("layer L" rows, "E e" columns);
    on heatmaps whose rows are not layers (domain x expert) the layer is `layer`. None when no expert cell
    was clicked (or the layer is unknown)."""
    if not points:
        return None
    x, y = str(points[0].get("x", "")), str(points[0].get("y", ""))
    row = re.fullmatch(r"layer (\d+)", y)
    layer = int(row.group(1)) if row else layer
    if not re.fullmatch(r"E\d+", x) or layer is None:
        return None
    return int(layer), int(x[1:])


def specialization_heatmap(ratio: pd.DataFrame, share: pd.DataFrame | None = None) -> go.Figure:
    """Domain x expert: how much more often than uniform a domain's tokens pick an expert.

    `ratio` is indexed by domain label with one column per expert (all E of them); 1 = uniform. ratio = share of
    tokens / (K/E) = share of routings / (1/E), where the SHARE OF TOKENS (`share`, optional) is the fraction of
    the domain's tokens whose top-k contains the expert (sums to K) and the SHARE OF ROUTINGS the fraction of the
    domain's routings that go to it (sums to 1; = ratio / E). The colour is log2(ratio) on a diverging scale
    centred at 0 (so 2x and 0.5x look equally strong).
    """
    values = ratio.to_numpy(dtype=np.float64)
    z = np.log2(np.clip(values, 1e-3, None))
    bound = max(1.0, float(np.nanmax(np.abs(z))) if z.size else 1.0)
    custom = share.to_numpy(dtype=np.float64) if share is not None else values
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=[f"E{c}" for c in ratio.columns],
            y=[colors.esc(i) for i in ratio.index],
            text=np.vectorize(lambda v: f"{v:.2f}x")(values) if values.size else None,
            customdata=custom,
            colorscale="RdBu_r",
            zmid=0,
            zmin=-bound,
            zmax=bound,
            colorbar=dict(title="log2 ratio"),
        )
    )
    n_experts = len(ratio.columns)

    def cell_text(i: int, j: int, c) -> str:
        label = fig.data[0].y[i]
        tokens = f"; share of tokens {custom[i, j]:.1%} ({label} tokens with E{c} in their top-k)"
        tokens = tokens if share is not None else ""
        return f"{label}, E{c}: {values[i, j]:.2f}x uniform{tokens}; share of routings {values[i, j] / n_experts:.1%}"

    hover = [[cell_text(i, j, c) for j, c in enumerate(ratio.columns)] for i in range(len(ratio))]
    _add_click_targets(fig, hover)
    fig.update_layout(
        title="Domain specialization vs uniform (1x = k/E)", height=160 + 30 * len(ratio), margin=dict(t=50, b=30)
    )
    return fig


def coactivation_heatmap(cond_EE: np.ndarray, lift_EE: np.ndarray | None = None) -> go.Figure:
    """Co-activation P(j | i): row i = given expert, column j = the other chosen expert; hover adds the lift.

    The diagonal (P(i | i) = 1 by definition) is left blank and out of the colour range, which spans the
    off-diagonal values only.
    """
    cond = np.asarray(cond_EE, dtype=np.float64).copy()
    E = cond.shape[0]
    np.fill_diagonal(cond, np.nan)
    lift = np.asarray(lift_EE, dtype=np.float64) if lift_EE is not None else np.full_like(cond, np.nan)
    off = cond[~np.isnan(cond)]
    top = float(off.max()) if off.size and off.max() > 0 else 1.0
    fig = go.Figure(
        go.Heatmap(
            z=cond,
            x=[f"E{j}" for j in range(E)],
            y=[f"E{i}" for i in range(E)],
            customdata=lift,
            colorscale="Blues",
            zmin=0,
            zmax=top,
            hoverongaps=False,
            colorbar=dict(title="P(j | i)"),
            hovertemplate="P(%{x} | %{y}) = %{z:.2f}, lift %{customdata:.2f}<extra></extra>",
        )
    )
    fig.update_layout(
        title="Co-activation P(j | i)<br><sup>diagonal blank (P(i | i) = 1), colour range over i ≠ j</sup>",
        xaxis_title="j",
        yaxis_title="i",
        height=440,
        plot_bgcolor="rgba(0,0,0,0)",
    )
    fig.update_yaxes(autorange="reversed")
    return fig


def flow_sankey(flow: pd.DataFrame, n_layers: int, n_experts: int, min_share: float = 0.0) -> go.Figure:
    """Cross-layer flow: nodes = (layer, expert), links = top-1 transitions layer l -> l+1.

    `flow` has columns layer (the source layer), src, dst, count. Links below `min_share` of their
    layer's total are dropped to keep the picture readable.
    """
    palette = colors.expert_colors(n_experts)
    node = lambda layer, e: int(layer) * n_experts + int(e)  # noqa: E731
    labels = [f"L{l} E{e}" for l in range(n_layers) for e in range(n_experts)]
    node_colors = [palette[e] for _ in range(n_layers) for e in range(n_experts)]
    totals = flow.groupby("layer")["count"].transform("sum") if len(flow) else pd.Series(dtype=float)
    kept = flow[flow["count"] >= min_share * totals] if len(flow) else flow
    fig = go.Figure(
        go.Sankey(
            arrangement="fixed",
            node=dict(label=labels, color=node_colors, pad=8, thickness=14),
            link=dict(
                source=[node(l, s) for l, s in zip(kept["layer"], kept["src"])],
                target=[node(l + 1, d) for l, d in zip(kept["layer"], kept["dst"])],
                value=kept["count"].astype(float).tolist(),
                color=[colors.rgba(palette[int(s)], 0.35) for s in kept["src"]],
            ),
        )
    )
    fig.update_layout(title="Top-1 expert flow between consecutive layers", height=520)
    return fig
