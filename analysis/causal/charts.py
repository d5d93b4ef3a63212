"""Pure plotly builders of the causal views: the observational-vs-causal scatter (no Streamlit here)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from analysis.figures import colors

SYMBOLS = ("circle", "square", "diamond", "triangle-up", "x", "cross", "star", "hexagon")  # by layer


def specialization_scatter(table: pd.DataFrame) -> go.Figure:
    """One point per (layer, expert, domain) of `compare.specialization_vs_ablation`: x = specialization ratio
    (share of the domain's tokens with the expert in their top-k ÷ uniform K/E), y = Δ loss on the domain's
    tokens when the expert is removed (nats/token, 95% CI over documents as error bars). Colour = domain (the
    CVD-safe palette), symbol = layer; customdata holds (layer, expert) for selection."""
    labels = sorted(table["label"].unique())
    palette = colors.expert_colors(max(len(labels), 1))
    fig = go.Figure()
    for i, label in enumerate(labels):
        d = table[table["label"] == label]
        name = colors.esc(label)
        fig.add_trace(
            go.Scatter(
                x=d["ratio"],
                y=d["delta"],
                mode="markers",
                name=name,
                marker=dict(
                    color=palette[i],
                    size=9,
                    symbol=[SYMBOLS[int(layer) % len(SYMBOLS)] for layer in d["layer"]],
                    line=dict(width=0.5, color="#333333"),
                ),
                error_y=dict(
                    type="data",
                    symmetric=False,
                    array=d["hi"] - d["delta"],
                    arrayminus=d["delta"] - d["lo"],
                    thickness=1,
                    width=0,
                ),  # fmt: skip
                customdata=np.stack([d["layer"], d["expert"], d["lo"], d["hi"], d["share"]], axis=-1),
                hovertemplate=(
                    f"layer %{{customdata[0]}} E%{{customdata[1]}} on {name}<br>"
                    "specialization %{x:.2f}× uniform (%{customdata[4]:.1%} of its tokens)<br>"
                    "Δ loss when removed %{y:+.4f} nats/token (CI %{customdata[2]:+.4f} to %{customdata[3]:+.4f})"
                    "<extra></extra>"
                ),
            )
        )
    fig.add_hline(y=0, line_color="#888888", line_width=1)
    fig.add_vline(x=1, line_dash="dash", line_color="#888888", annotation_text="uniform", annotation_position="top")
    fig.update_layout(
        xaxis_title="specialization: share of the domain's tokens routed to the expert ÷ uniform K/E (×)",
        yaxis_title="Δ loss on the domain when removed (nats/token)",
        yaxis_tickformat="+.3~g",  # plain decimals (not SI prefixes: "600µ" nats reads badly)
        legend_title_text="domain",
        height=520,
        margin=dict(t=40, b=50),
    )
    return fig
