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
    silhouette: float | None = None,
) -> go.Figure:
    """Scattergl cloud of router inputs, one trace per colour category; customdata = token_row.

    kind "expert": colour = expert id with the expert palette; "category": labels (domain, token),
    the `max_categories` most frequent get their own trace and the rest are "other". `hover` strings
    are escaped here. `silhouette` (of the top-1 expert partition) is written on the figure. The legend
    sits below the plot and the figure grows with its rows, so many experts are never cut off.
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
    legend_rows = -(-len(groups) // 8)  # about 8 entries per row at the usual widths
    fig.update_layout(
        height=520 + 24 * legend_rows,
        dragmode="zoom",  # a click selects one point (the lasso and box tools are in the toolbar)
        legend=dict(orientation="h", yanchor="top", y=-0.02, xanchor="left", x=0, itemsizing="constant"),
        margin=dict(t=40, b=20, l=10, r=10),
    )
    if silhouette is not None:
        title = f"silhouette of the top-1 expert regions: {silhouette:.2f}<br><sup>in the router-input space</sup>"
        fig.update_layout(title=dict(text=title, x=0.01), margin=dict(t=60))
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False)
    return fig


def silhouette_caption(silhouette: float | None) -> str:
    """One sentence saying what the silhouette of the top-1 expert partition (in the router-input space)
    supports, using the usual reading of the coefficient (Kaufman & Rousseeuw): < 0.25 no substantial
    structure, 0.25-0.5 weak, 0.5-0.7 reasonable, >= 0.7 strong."""
    if silhouette is None:
        return "No silhouette (fewer than two experts among the points), so nothing is claimed about expert regions."
    s = f"Silhouette {silhouette:.2f}"
    if silhouette < 0:
        return (
            f"{s} (below 0): tokens lie on average closer to other experts' tokens than to their own; the router's "
            "input space is mixed, not split into expert regions."
        )
    if silhouette < 0.25:
        return (
            f"{s} (below 0.25): the expert regions overlap strongly; the router's input space is mixed, not split "
            "into separate expert regions."
        )
    if silhouette < 0.5:
        return f"{s} (0.25–0.5): the expert regions are weakly separated and overlap in much of the space."
    if silhouette < 0.7:
        return f"{s} (0.5–0.7): the router splits its input space into reasonably separate expert regions."
    return f"{s} (0.7 or more): the router splits its input space into clearly separated expert regions."
