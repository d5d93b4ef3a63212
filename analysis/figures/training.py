"""Training dynamics over logged steps: expert load shares, router biases, per-run curves, balance per layer.

`history` is one row per logged step (step, load, bias, maxvio_batch, ...); shapes N rows, L layers, E experts.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from analysis import tables
from analysis.figures import colors


def load_share_curves(history: pd.DataFrame, layer: int) -> go.Figure:
    """Per-expert load share over training steps at one MoE layer (uniform = 1/E dashed)."""
    steps, load = tables.history_array(history, "load")  # (N, L, E)
    fig = go.Figure()
    if load.ndim == 3 and layer < load.shape[1]:
        load_NE = load[:, layer, :]
        totals = load_NE.sum(axis=1, keepdims=True)
        share = np.divide(load_NE, totals, out=np.zeros_like(load_NE), where=totals > 0)
        E = share.shape[1]
        for e, c in enumerate(colors.expert_colors(E)):
            fig.add_scatter(x=steps, y=share[:, e], mode="lines", name=f"E{e}", line=dict(color=c, width=1.5))
        fig.add_hline(y=1 / E, line_dash="dash", line_color="grey", annotation_text="uniform")
    fig.update_layout(title=f"Expert load share, layer {layer}", xaxis_title="step", yaxis_title="share", height=360)
    return fig


def bias_curves(history: pd.DataFrame, layer: int) -> go.Figure:
    """Per-expert balancing bias b_i over training steps at one MoE layer."""
    steps, bias = tables.history_array(history, "bias")  # (N, L, E)
    fig = go.Figure()
    if bias.ndim == 3 and layer < bias.shape[1]:
        for e, c in enumerate(colors.expert_colors(bias.shape[2])):
            fig.add_scatter(x=steps, y=bias[:, layer, e], mode="lines", name=f"E{e}", line=dict(color=c, width=1.5))
    fig.update_layout(title=f"Router bias, layer {layer}", xaxis_title="step", yaxis_title="bias", height=360)
    return fig


def run_curves(
    series: Mapping[str, tuple[np.ndarray, np.ndarray]], title: str, y_title: str, smooth: float = 0.0, log_y=False
) -> go.Figure:
    """Overlay one line per run: `series[run name] = (steps, values)`; optional EMA smoothing."""
    fig = go.Figure()
    for name, (steps, values) in series.items():
        y = tables.ema(values, smooth) if smooth > 0 else np.asarray(values, dtype=np.float64)
        fig.add_scatter(x=steps, y=y, mode="lines", name=colors.esc(name), hovertemplate="step %{x}: %{y:.4g}")
    fig.update_layout(title=title, xaxis_title="step", yaxis_title=y_title, height=360, legend_title="run")
    if log_y:
        fig.update_yaxes(type="log")
    return fig


def balance_curves(history: pd.DataFrame) -> go.Figure:
    """MaxVio_batch per layer against the training step (one line per MoE layer)."""
    steps, maxvio = tables.history_array(history, "maxvio_batch")  # (N, L)
    fig = go.Figure()
    if maxvio.ndim == 2:
        for l in range(maxvio.shape[1]):
            fig.add_trace(go.Scatter(x=steps, y=maxvio[:, l], mode="lines", name=f"layer {l}"))
    fig.update_layout(xaxis_title="step", yaxis_title="MaxVio_batch", height=350, margin=dict(t=20))
    return fig
