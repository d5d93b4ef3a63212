"""The router input space: a 2-D projection of router inputs as a scatter, coloured by expert or category."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from analysis import tables
from analysis.figures import colors


def projection_scatter(
    coords: np.ndarray,
    color: Sequence,
    token_rows: Sequence[int],
    hover: Sequence[str],
    kind: str = "expert",
    n_experts: int | None = None,
    max_categories: int = 12,
) -> go.Figure:
    """Scattergl cloud of router inputs, one trace per colour category; customdata = token_row.

    kind "expert": colour = expert id with the expert palette; "category": labels (domain, token),
    the `max_categories` most frequent get their own trace and the rest are "other". `hover` strings
    are escaped here.
    """
    coords = np.asarray(coords, dtype=np.float64)
    color = pd.Series(list(color), dtype=object)
    rows = np.asarray(token_rows)
    hover = np.array([colors.esc(h) for h in hover], dtype=object)
    fig = go.Figure()
    if kind == "expert":
        E = n_experts or int(max(color.max(), 0)) + 1
        palette = colors.expert_colors(E)
        groups = [(f"E{int(e)}", color == e, palette[int(e) % E]) for e in sorted(color.unique())]
    else:
        top = list(color.value_counts().head(max_categories).index)
        groups = [(colors.esc(tables.short_token(c)), color == c, None) for c in top]
        rest = ~color.isin(top)
        if rest.any():
            groups.append(("other", rest, "#c0c0c0"))
    for name, mask, c in groups:
        m = mask.to_numpy()
        fig.add_trace(
            go.Scattergl(
                x=coords[m, 0],
                y=coords[m, 1],
                mode="markers",
                name=name,
                marker=dict(size=5, color=c, opacity=0.75),
                customdata=rows[m],
                text=hover[m],
                hovertemplate="%{text}<extra>" + name + "</extra>",
            )
        )
    fig.update_layout(height=560, dragmode="lasso", legend_itemsizing="constant", margin=dict(t=30, b=30))
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False)
    return fig
