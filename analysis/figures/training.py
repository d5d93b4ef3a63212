"""Training dynamics over logged steps: expert load shares, router biases, per-run curves, balance per layer,
router saturation. Every curve takes `smooth` (EMA), `log_y` and `marker_step` (a dotted line at the step chosen
in the app); legends sit below the plot, where plotly makes room for every entry.

`history` is one row per logged step (step, load, bias, maxvio_batch, ...); shapes N rows, L layers, E experts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from analysis import tables
from analysis.figures import colors

LOG_TICKS = [m * 10.0**p for p in range(-6, 7) for m in (1, 2, 5)]  # 1-2-5 labels on log axes, no minor digits
OTHER = "#9e9e9e"  # experts not highlighted: thin grey lines (legible on light and dark backgrounds)
MARKER = "#888888"


def finish(fig: go.Figure, title: str, y_title: str, log_y: bool, marker_step: int | None, legend: str = ""):
    """Shared layout: titles, a legend below the plot, log y, and the selected step as a dotted line."""
    if log_y:
        title += " (log scale)"
        fig.update_yaxes(type="log", tickvals=LOG_TICKS, tickformat="~g")
    fig.update_layout(
        title=title,
        xaxis_title="step",
        yaxis_title=y_title,
        height=400,
        legend=dict(title=legend, orientation="h", yanchor="top", y=-0.2, xanchor="left", x=0),
        margin=dict(t=50, r=10),
    )
    if marker_step is not None:  # what add_vline draws, without its slow search over subplots (~12 ms a figure)
        fig.add_shape(type="line", x0=marker_step, x1=marker_step, xref="x", y0=0, y1=1, yref="y domain",
                      line=dict(dash="dot", color=MARKER))  # fmt: skip
        fig.add_annotation(x=marker_step, xref="x", y=1, yref="y domain", text=f"step {marker_step}",
                           showarrow=False, xanchor="left", yanchor="top")  # fmt: skip
    return fig


def smoothed(steps: np.ndarray, values: np.ndarray, smooth: float) -> np.ndarray:
    """EMA with weight `smooth` per training step (`tables.ema_steps`); the values as they are when 0."""
    return tables.ema_steps(steps, values, smooth) if smooth > 0 else np.asarray(values, dtype=np.float64)


MAX_POINTS = 800  # per smoothed expert line: 16 lines of 2,000 steps were 0.7 MB for the browser to draw


def thinned(n: int, smooth: float) -> np.ndarray:
    """Indices of the n points of a curve smoothed with EMA weight `smooth` to draw: every k-th (and the last)
    when n > MAX_POINTS, with k at most the EMA's time constant 1 / (1 - smooth), so the drawn line loses no
    detail the smoothing has not already removed; all of them for raw values."""
    k = min(-(-n // MAX_POINTS), int(1 / (1 - smooth))) if smooth > 0 else 1
    if k <= 1:
        return np.arange(n)
    return np.unique(np.append(np.arange(0, n, k), n - 1))


def expert_lines(
    steps: np.ndarray, values_NE: np.ndarray, highlight: Sequence[int] | None, smooth: float, fmt: str
) -> go.Figure:
    """One line per expert: all in their colours (`highlight` None), or the highlighted ones in colour and the
    rest thin and grey, grouped under one legend entry."""
    fig = go.Figure()
    E = values_NE.shape[1]
    shown = set(range(E)) if highlight is None else {int(e) for e in highlight}
    grey = [e for e in range(E) if e not in shown]
    keep = thinned(len(steps), smooth)
    x = np.asarray(steps)[keep]  # whole steps: plotly sends them in the smallest int type
    for e, c in enumerate(colors.expert_colors(E)):
        on = e in shown
        fig.add_scatter(
            x=x,
            y=smoothed(steps, values_NE[:, e], smooth)[keep].astype(np.float32),  # 7 digits are plenty
            mode="lines",
            name=f"E{e}" if on else f"other experts ({len(grey)})",
            legendgroup=f"E{e}" if on else "other",
            showlegend=on or e == grey[0],
            line=dict(color=c if on else OTHER, width=2 if on else 0.8),
            opacity=1.0 if on else 0.6,
            hovertemplate=f"E{e} · step %{{x}}: %{{y:{fmt}}}<extra></extra>",
        )
    return fig


def load_share_curves(
    history: pd.DataFrame,
    layer: int,
    highlight: Sequence[int] | None = None,
    smooth: float = 0.0,
    log_y: bool = False,
    marker_step: int | None = None,
) -> go.Figure:
    """Per-expert share of the routings (any rank) at one MoE layer over training steps; uniform 1/E dashed."""
    steps, load = tables.history_array(history, "load")  # (N, L, E)
    fig = go.Figure()
    if load.ndim == 3 and layer < load.shape[1]:
        load_NE = load[:, layer, :]
        totals = load_NE.sum(axis=1, keepdims=True)
        share = np.divide(load_NE, totals, out=np.zeros_like(load_NE), where=totals > 0)
        fig = expert_lines(steps, share, highlight, smooth, ".3f")
        E = share.shape[1]
        fig.add_hline(
            y=1 / E,
            line_dash="dash",
            line_color="grey",
            annotation_text=f"uniform 1/{E}",
            annotation_position="top right",
        )
    title = f"Expert share of routings, layer {layer}"
    return finish(fig, title, "share of routings", log_y, marker_step, "expert")


def bias_curves(
    history: pd.DataFrame,
    layer: int,
    highlight: Sequence[int] | None = None,
    smooth: float = 0.0,
    log_y: bool = False,
    marker_step: int | None = None,
) -> go.Figure:
    """Per-expert balancing bias b_i over training steps at one MoE layer (a log axis drops b_i <= 0)."""
    steps, bias = tables.history_array(history, "bias")  # (N, L, E)
    fig = go.Figure()
    if bias.ndim == 3 and layer < bias.shape[1]:
        fig = expert_lines(steps, bias[:, layer, :], highlight, smooth, ".2e")
    return finish(fig, f"Router bias, layer {layer}", "bias", log_y, marker_step, "expert")


def run_curves(
    series: Mapping[str, tuple[np.ndarray, np.ndarray]],
    title: str,
    y_title: str,
    smooth: float = 0.0,
    log_y: bool = False,
    marker_step: int | None = None,
) -> go.Figure:
    """Overlay one line per run: `series[run name] = (steps, values)`; with smoothing, the EMA is drawn over
    the raw values (faint, beneath, without a legend entry)."""
    fig = go.Figure()
    palette = colors.expert_colors(max(len(series), 1))
    for (name, (steps, values)), c in zip(series.items(), palette):
        fig.add_scatter(x=steps, y=smoothed(steps, values, smooth), mode="lines", name=colors.esc(name),
                        legendgroup=colors.esc(name), line=dict(color=c, width=2),
                        hovertemplate="step %{x}: %{y:.4g}")  # fmt: skip
    if smooth > 0:
        for (name, (steps, values)), c in zip(series.items(), palette):
            fig.add_scatter(x=steps, y=np.asarray(values, dtype=np.float64), mode="lines", showlegend=False,
                            legendgroup=colors.esc(name), line=dict(color=c, width=1), zorder=-1,
                            opacity=0.25 if len(series) <= 2 else 0.1, hoverinfo="skip")  # fmt: skip
    if smooth > 0:
        title += f" (EMA {smooth:g} per step)"
    return finish(fig, title, y_title, log_y, marker_step, "run")


def saturation_curves(table: pd.DataFrame, log_y: bool = False, marker_step: int | None = None) -> go.Figure:
    """`tables.saturation_table` per layer over steps: share of eval tokens whose top-1 expert (solid) and whose
    top-k set (dashed) at that step are the final step's."""
    fig = go.Figure()
    layers = sorted(table["layer"].unique()) if len(table) else []
    for l, c in zip(layers, colors.expert_colors(max(len(layers), 1))):
        rows = table[table["layer"] == l]
        for column, what, dash in (("top1_agreement", "top-1", "solid"), ("topk_exact", "top-k set", "dash")):
            fig.add_scatter(x=rows["step"], y=rows[column], mode="lines+markers", name=f"layer {l}, {what}",
                            line=dict(color=c, dash=dash), hovertemplate=f"layer {l} · step %{{x}}: "
                            f"%{{y:.1%}} of tokens with the final {what}<extra></extra>")  # fmt: skip
    final = int(table["step"].max()) if len(table) else None
    fig = finish(fig, f"Router saturation: agreement with step {final}", "share of eval tokens", log_y, marker_step)
    if not log_y:
        fig.update_yaxes(range=[0, 1.02], tickformat=".0%")
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


def run_figures(
    name: str,
    history: pd.DataFrame,
    eval_history: pd.DataFrame | None,
    layer: int,
    smooth: float = 0.0,
    log_y: bool = False,
    log_vio: bool = True,
    marker_step: int | None = None,
) -> dict[str, go.Figure]:
    """One run's curves, in reading order, each under its key: loss (training loss), vio (MaxVio_batch at
    `layer`, its own log switch `log_vio`: early spikes set no scale), val (validation loss) and aux (auxiliary
    losses); a curve the run did not log is left out."""
    at = dict(smooth=smooth, marker_step=marker_step)
    out = {}
    if "loss" in history:
        out["loss"] = run_curves({name: (history["step"].to_numpy(), history["loss"].to_numpy())}, "Training loss",
                                 "loss", log_y=log_y, **at)  # fmt: skip
    vio = {name: tables.maxvio_series(history, layer)}
    out["vio"] = run_curves(vio, f"MaxVio_batch, layer {layer}", "MaxVio_batch", log_y=log_vio, **at)
    if eval_history is not None and "val_loss" in eval_history:
        val = {name: (eval_history["step"].to_numpy(), eval_history["val_loss"].to_numpy())}
        out["val"] = run_curves(val, "Validation loss", "val loss", log_y=log_y, **at)
    if aux := tables.aux_series(history):
        out["aux"] = run_curves(aux, "Auxiliary losses", "loss", log_y=log_y, **at)
    return out
