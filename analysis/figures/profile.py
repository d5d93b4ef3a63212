"""Figures of one expert's profile (analysis.profile): load share and bias over training, domain ratios with
their CI, keyword-in-context lines and the summary line as escaped HTML."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analysis import tables
from analysis.figures import colors

SMOOTHING = 0.9  # EMA weight of the smoothed share line (the raw per-batch share is drawn faint beneath it)


def history_figure(series: pd.DataFrame, uniform: float, step: int | None, expert: int, color: str) -> go.Figure:
    """Two panels over training steps: the expert's share of its layer's routings per logged batch (faint; an
    EMA with weight SMOOTHING on top; uniform dashed) and its balancing bias; a vertical line marks the selected
    `step`. `series`: step, share, bias."""
    has_bias = bool(series["bias"].notna().any()) if "bias" in series else False
    rows = 2 if has_bias else 1
    titles = ["share of the layer's routings (per batch)"] + (["balancing bias"] if has_bias else [])
    fig = make_subplots(rows=rows, cols=1, shared_xaxes=True, subplot_titles=titles, vertical_spacing=0.12)
    fig.add_scatter(x=series["step"], y=series["share"], mode="lines", name=f"E{expert} share per batch",
                    line=dict(color=color, width=1), opacity=0.35, hovertemplate="step %{x}: %{y:.2%}<extra></extra>",
                    row=1, col=1)  # fmt: skip
    fig.add_scatter(x=series["step"], y=tables.ema(series["share"].to_numpy(), SMOOTHING), mode="lines",
                    name=f"E{expert} share (EMA {SMOOTHING})", line=dict(color=color, width=2.5),
                    hovertemplate="step %{x}: %{y:.2%} smoothed<extra></extra>", row=1, col=1)  # fmt: skip
    fig.add_hline(y=uniform, line_dash="dash", line_color="#666666", annotation_text=f"uniform {uniform:.1%}",
                  annotation_position="top left", row=1, col=1)  # fmt: skip
    if has_bias:
        fig.add_scatter(x=series["step"], y=series["bias"], mode="lines", name=f"E{expert} bias", line_color=color,
                        hovertemplate="step %{x}: bias %{y:+.4f}<extra></extra>", row=2, col=1)  # fmt: skip
    if step is not None:
        for r in range(1, rows + 1):
            fig.add_vline(x=step, line_color="#444444", line_width=1, row=r, col=1)
        fig.add_annotation(x=step, y=1, yref="paper", text=f"step {step}", showarrow=False, yanchor="bottom")
    fig.update_yaxes(tickformat=".1%", row=1, col=1)
    fig.update_xaxes(title_text="training step", row=rows, col=1)
    fig.update_layout(showlegend=False, height=220 + 160 * rows, margin=dict(t=50, b=40))
    return fig


def domain_figure(domains: pd.DataFrame, expert: int, color: str) -> go.Figure:
    """Horizontal bars: per domain, the share of its tokens routed to the expert divided by uniform K/E, with
    the bootstrap CI over documents as error bars; 1× (uniform) is marked. `domains` as analysis.profile's."""
    d = domains.iloc[::-1]  # highest ratio on top
    labels = [colors.esc(v) for v in d["label"]]
    fig = go.Figure(
        go.Bar(
            x=d["ratio"],
            y=labels,
            orientation="h",
            marker_color=color,
            error_x=dict(type="data", symmetric=False, array=d["hi"] - d["ratio"], arrayminus=d["ratio"] - d["lo"]),
            customdata=np.stack([d["share"], d["count"], d["n_tokens"], d["lo"], d["hi"]], axis=-1),
            hovertemplate=(
                "%{y}: %{x:.2f}× uniform (CI %{customdata[3]:.2f}–%{customdata[4]:.2f}×)<br>"
                f"%{{customdata[1]:,}} of %{{customdata[2]:,}} %{{y}} tokens have E{expert} in their top-k "
                "(share of tokens %{customdata[0]:.1%})"
                "<extra></extra>"
            ),
        )
    )
    fig.add_vline(x=1, line_dash="dash", line_color="#666666", annotation_text="uniform", annotation_position="top")
    fig.update_layout(
        xaxis_title=f"share of tokens (the domain's tokens with E{expert} in their top-k) ÷ uniform K/E (×)",
        height=140 + 36 * len(d),
        margin=dict(t=40, b=40, l=10),
    )
    return fig


def kwic_html(kwic: pd.DataFrame, color: str) -> str:
    """Keyword-in-context lines as an HTML table: left context right-aligned, the token on the expert's colour,
    right context; every piece escaped (and `$` neutralised for Streamlit Markdown)."""
    fg = colors.text_color(color)
    rows = []
    for left, token, right, label in zip(kwic["left"], kwic["token"], kwic["right"], kwic["label"]):
        rows.append(
            # each context is cut to 38% of the screen, the left one from its start, so the token stays in view
            f'<tr><td style="color:#666"><div style="max-width:38vw;margin-left:auto;display:flex;'
            f'justify-content:flex-end;overflow:hidden"><span style="white-space:pre;flex:none">{_piece(left)}'
            f"</span></div></td>"
            f'<td style="white-space:pre"><mark style="background:{color};color:{fg};border-radius:3px;'
            f'padding:0 2px">{_piece(token)}</mark></td>'
            f'<td style="color:#666"><div style="max-width:38vw;overflow:hidden;white-space:pre">{_piece(right)}'
            "</div></td>"
            f'<td style="color:#888;padding-left:1em">{_piece(label)}</td></tr>'
        )
    return (
        '<div class="moe-kwic" style="overflow-x:auto"><table style="font-family:monospace;border:none">'
        + "".join(rows)
        + "</table></div>"
    )


def summary_html(sentence: str) -> str:
    """The profile's summary sentence as an escaped HTML paragraph."""
    return f'<p class="moe-profile-summary" style="font-size:1.1rem">{_piece(sentence)}</p>'


def _piece(value: object) -> str:
    return colors.esc(value).replace("$", "&#36;").replace("\n", " ")
