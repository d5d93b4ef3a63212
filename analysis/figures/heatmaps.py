"""Expert heatmaps: layer x expert load, domain specialization, co-activation, and the cross-layer flow.

Shapes: L MoE layers, E experts.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from analysis.figures import colors


def load_heatmap(load_LE: np.ndarray) -> go.Figure:
    """Layer x expert load share (each layer's loads divided by its total); hover shows counts."""
    load_LE = np.asarray(load_LE, dtype=np.float64)
    L, E = load_LE.shape
    totals = load_LE.sum(axis=1, keepdims=True)
    share = np.divide(load_LE, totals, out=np.zeros_like(load_LE), where=totals > 0)
    fig = go.Figure(
        go.Heatmap(
            z=share,
            x=[f"E{e}" for e in range(E)],
            y=[f"layer {l}" for l in range(L)],
            customdata=load_LE,
            colorscale="Viridis",
            zmin=0,
            colorbar=dict(title="share"),
            hovertemplate="%{y}, %{x}: %{z:.1%} of routings (%{customdata:.0f})<extra></extra>",
        )
    )
    fig.update_layout(
        title=f"Expert load per layer (uniform = {1 / E:.1%})", height=160 + 40 * L, margin=dict(t=50, b=30)
    )
    fig.update_yaxes(autorange="reversed")
    return fig


def specialization_heatmap(ratio: pd.DataFrame, share: pd.DataFrame | None = None) -> go.Figure:
    """Domain x expert: share of a domain's routings to an expert divided by the uniform k/E.

    `ratio` is indexed by domain label with one column per expert; 1 = uniform. The colour is
    log2(ratio) on a diverging scale centred at 0 (so 2x and 0.5x look equally strong).
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
            hovertemplate="%{y}, %{x}: %{text} uniform"
            + (" (share %{customdata:.1%})" if share is not None else "")
            + "<extra></extra>",
        )
    )
    fig.update_layout(
        title="Domain specialization vs uniform (1x = k/E)", height=160 + 30 * len(ratio), margin=dict(t=50, b=30)
    )
    return fig


def coactivation_heatmap(cond_EE: np.ndarray, lift_EE: np.ndarray | None = None) -> go.Figure:
    """Co-activation P(j | i): row i = given expert, column j = the other chosen expert; hover adds the lift."""
    cond = np.asarray(cond_EE, dtype=np.float64)
    E = cond.shape[0]
    lift = np.asarray(lift_EE, dtype=np.float64) if lift_EE is not None else np.full_like(cond, np.nan)
    fig = go.Figure(
        go.Heatmap(
            z=cond,
            x=[f"E{j}" for j in range(E)],
            y=[f"E{i}" for i in range(E)],
            customdata=lift,
            colorscale="Blues",
            zmin=0,
            colorbar=dict(title="P(j | i)"),
            hovertemplate="P(%{x} | %{y}) = %{z:.2f}, lift %{customdata:.2f}<extra></extra>",
        )
    )
    fig.update_layout(title="Co-activation P(j | i)", xaxis_title="j", yaxis_title="i", height=420)
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
