"""Token routing figures: the coloured text, its legend, the token x layer grid, one router decision step by step.

Shapes: T tokens, L MoE layers, E experts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analysis import tables
from analysis.figures import colors

TOKEN_CSS = """
.moe-tokens [data-token]{border-radius:3px;padding:1px 0;box-shadow:inset -1px 0 0 rgba(255,255,255,.7)}
.moe-tokens [data-tip]{position:relative;cursor:pointer}
.moe-tokens [data-tip]:hover::after,.moe-tokens [data-tip]:focus-visible::after,.moe-tokens .moe-sel::after{
  content:attr(data-tip);position:absolute;left:0;top:calc(100% + 3px);z-index:20;width:max-content;max-width:24em;
  background:#1f1f1f;color:#fff;padding:2px 6px;border-radius:4px;font:12px/1.4 sans-serif;white-space:normal;
  pointer-events:none;box-shadow:0 1px 4px rgba(0,0,0,.4)}
.moe-tokens [data-tip]:hover::after,.moe-tokens [data-tip]:focus-visible::after{z-index:21}
.moe-tokens .moe-sel{box-shadow:0 0 0 2px #ffffff,0 0 0 4px #000000;text-decoration:underline}
.moe-tokens [data-tip]:focus-visible{outline:2px dashed currentColor}
.moe-legend a{text-decoration:none}
.moe-legend a:hover,.moe-legend a:focus{text-decoration:underline}
"""
"""Styles of the coloured text: each token's shape (one rule, not thousands of inline styles), a CSS tooltip from
each token's data-tip (on hover, keyboard focus, and on the selected token, so it also shows after a tap), the
selected token's ring, and the legend's links."""


CLICK_JS = """
export default function (component) {
  const { data, setTriggerValue } = component;
  let style = document.getElementById("moe-token-css");
  if (!style) {
    style = document.createElement("style");
    style.id = "moe-token-css";
    document.head.appendChild(style);
  }
  style.textContent = (data && data.css) || "";
  const plain = (e) => e.button === 0 && !e.ctrlKey && !e.metaKey && !e.shiftKey && !e.altKey;
  const onClick = (e) => {
    if (!plain(e) || !e.target.closest) return;
    const chip = e.target.closest(".moe-legend a[data-expert-link]");
    if (chip) {
      e.preventDefault();
      setTriggerValue("expert", Number(chip.dataset.expertLink));
      return;
    }
    const token = e.target.closest(".moe-tokens [data-token]");
    if (token) setTriggerValue("token", Number(token.dataset.token));
  };
  const onKey = (e) => {
    if ((e.key === "Enter" || e.key === " ") && e.target.matches && e.target.matches(".moe-tokens [data-token]")) {
      e.preventDefault();
      setTriggerValue("token", Number(e.target.dataset.token));
    }
  };
  if (window.__moeTokenClicks) window.__moeTokenClicks();
  document.addEventListener("click", onClick, true);
  document.addEventListener("keydown", onKey, true);
  window.__moeTokenClicks = () => {
    document.removeEventListener("click", onClick, true);
    document.removeEventListener("keydown", onKey, true);
    window.__moeTokenClicks = null;
  };
  return window.__moeTokenClicks;
}
"""
"""Script of a Streamlit v2 component (no markup of its own) mounted beside the coloured text with data =
{"css": TOKEN_CSS}: it adds TOKEN_CSS to the page and turns a click (or Enter) on a token into the trigger
`token` = its data-token, and a plain click on a legend chip into the trigger `expert` = its
data-expert-link (the link's href stays for opening in a new tab). One listener on the document, so the
text can be redrawn by every rerun."""


def colored_text_html(
    text: str,
    spans: pd.DataFrame,
    experts: Mapping[int, int] | pd.Series,
    n_experts: int,
    tooltips: Mapping[int, str] | pd.Series | None = None,
    selected: int | None = None,
) -> str:
    """The original text as one line of HTML, each token's characters on its top-1 expert's colour.

    `spans` has columns char_start, char_end and is indexed by token_row; `experts[token_row]` is its
    expert; characters not covered by any span are shown uncoloured. Each coloured token carries
    data-token = its index in `spans` (0..len-1, what a click selects), data-tip = its tooltip (shown by
    TOKEN_CSS, not the browser's title tooltip) and tabindex=0; the token with index `selected` gets the
    class moe-sel. Every text piece and tooltip is escaped; newlines become <br> so the HTML has no blank
    line (Markdown would end the HTML block there).
    """
    palette = colors.expert_colors(n_experts)
    pieces = ['<div class="moe-tokens" style="line-height:1.9;white-space:pre-wrap;font-family:monospace">']
    pos = 0
    for i, (row, start, end) in enumerate(zip(spans.index, spans["char_start"], spans["char_end"])):
        start, end = int(start), int(end)
        if start > pos:
            pieces.append(_text_piece(text[pos:start]))
        if end <= start:  # empty span: a token holding only continuation bytes
            continue
        expert = experts.get(row) if hasattr(experts, "get") else None
        piece = _text_piece(text[start:end])
        if expert is None:
            pieces.append(piece)
        else:
            bg = palette[int(expert) % len(palette)]
            tip = tooltips.get(row, "") if tooltips is not None else f"expert {int(expert)}"
            sel = ' class="moe-sel" aria-current="true"' if i == selected else ""
            pieces.append(
                f'<span data-token="{i}" data-tip="{colors.esc(tip)}" data-expert="{int(expert)}" tabindex="0"{sel} '
                f'style="background:{bg};color:{colors.text_color(bg)}">{piece}</span>'  # the rest: TOKEN_CSS
            )
        pos = max(pos, end)
    if pos < len(text):
        pieces.append(_text_piece(text[pos:]))
    pieces.append("</div>")
    return "".join(pieces)


def _text_piece(s: str) -> str:
    # `$` would start LaTeX in Streamlit Markdown and newlines would end the HTML block: neutralise both
    return colors.esc(s).replace("$", "&#36;").replace("\r\n", "<br>").replace("\n", "<br>").replace("\r", "<br>")


def legend_html(n_experts: int, counts: Sequence[int] | None = None, layer: int | None = None) -> str:
    """A one-line legend of expert colours (with token counts when given). With `layer`, each chip is a link
    to that expert's profile, `expert?layer=L&expert=E` (target _self; data-expert-link = E for a page that
    catches the click and keeps its session)."""
    palette = colors.expert_colors(n_experts)
    items = []
    for e, c in enumerate(palette):
        label = f"E{e}" + (f" ({int(counts[e])})" if counts is not None else "")
        style = (
            f"background:{c};color:{colors.text_color(c)};border-radius:3px;padding:2px 6px;"
            "margin:0 4px 4px 0;font-family:monospace;display:inline-block;white-space:nowrap"
        )
        if layer is None:
            items.append(f'<span style="{style}">{label}</span>')
        else:
            items.append(
                f'<a href="expert?layer={int(layer)}&amp;expert={e}" target="_self" data-expert-link="{e}" '
                f'aria-label="profile of E{e} at layer {int(layer)}" style="{style}">{label}</a>'
            )
    return '<div class="moe-legend" style="line-height:2.2">' + "".join(items) + "</div>"


def token_layer_grid(tokens: pd.DataFrame, routing: pd.DataFrame, n_layers: int, n_experts: int) -> go.Figure:
    """Heatmap: x = token (in order), y = MoE layer, colour = top-1 expert; hover = all chosen experts + weights.

    An invisible scatter point sits on every cell and carries the hover text: plotly reports clicks on
    scatter points, not on heatmap cells, so a click on the grid selects (x = token index, y = layer).
    """
    rows = tokens.index.to_numpy()
    z = np.full((n_layers, len(rows)), np.nan)
    hover = np.full((n_layers, len(rows)), "", dtype=object)
    top1 = routing[(routing["rank"] == 0) & routing["token_row"].isin(rows)]
    cols = np.searchsorted(rows, top1["token_row"].to_numpy())  # token rows are sorted
    z[top1["layer"].to_numpy().astype(int), cols] = top1["expert"].to_numpy()
    texts = [colors.esc(tables.short_token(t)) for t in tokens["token_text"].tolist()]
    summary = tables.routing_summary(routing[routing["token_row"].isin(rows)])
    at = np.searchsorted(rows, summary.index.get_level_values("token_row").to_numpy()).tolist()
    for i, layer, s in zip(at, summary.index.get_level_values("layer").tolist(), summary.tolist()):
        hover[int(layer), i] = f"token {i}: <b>{texts[i]}</b><br>layer {int(layer)}: {s}"
    palette = colors.expert_colors(n_experts)
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=list(range(len(rows))),
            y=list(range(n_layers)),
            hoverinfo="skip",
            colorscale=colors.discrete_colorscale(palette),
            zmin=-0.5,
            zmax=n_experts - 0.5,
            showscale=n_experts <= 12,  # more experts: the page's legend reads better than a cramped colour bar
            colorbar=dict(
                title="top-1 expert", tickvals=list(range(n_experts)), ticktext=[f"E{e}" for e in range(n_experts)]
            ),
            xgap=1,
            ygap=1,
        )
    )
    x_grid, y_grid = np.meshgrid(np.arange(len(rows)), np.arange(n_layers))  # plotly sends them as int16
    scatter = go.Scattergl if x_grid.size > 3000 else go.Scatter  # WebGL for long texts
    fig.add_trace(
        scatter(
            x=x_grid.ravel(),
            y=y_grid.ravel(),
            mode="markers",
            marker=dict(size=8, opacity=0),
            hovertext=hover.ravel(),
            hovertemplate="%{hovertext}<extra></extra>",
            showlegend=False,
        )
    )
    fig.update_layout(xaxis_title="token", yaxis_title="MoE layer", height=140 + 40 * n_layers, margin=dict(t=30, b=40))
    fig.update_yaxes(tickvals=list(range(n_layers)), autorange="reversed")
    return fig


def routing_steps_figure(steps: pd.DataFrame, shared_share: float | None = None) -> go.Figure:
    """Four bar panels for one token at one layer: scores, score + bias, top-k choice, gate weights."""
    E = len(steps)
    palette = colors.expert_colors(E)
    x = [f"E{e}" for e in steps["expert"]]
    chosen = steps["chosen"].to_numpy()
    faded = [c if ch else "#d0d0d0" for c, ch in zip(palette, chosen)]
    titles = ["1. router scores", "2. score + bias (choice only)", "3. top-k chosen", "4. gate weights"]
    if shared_share is not None:
        titles[3] += f" (shared expert {shared_share:.0%} of output)"
    fig = make_subplots(rows=1, cols=4, subplot_titles=titles)
    fig.add_bar(x=x, y=steps["score"], marker_color=palette, row=1, col=1, name="score",
                hovertemplate="%{x}: score %{y:.4f}<extra></extra>")  # fmt: skip
    fig.add_bar(x=x, y=steps["biased_score"], marker_color=palette, row=1, col=2, name="score + bias",
                customdata=steps["bias"],
                hovertemplate="%{x}: %{y:.4f} (bias %{customdata:+.4f})<extra></extra>")  # fmt: skip
    fig.add_bar(x=x, y=steps["biased_score"], marker_color=faded, row=1, col=3, name="chosen",
                text=["✓" if c else "" for c in chosen], textposition="outside",
                hovertemplate="%{x}: %{y:.4f}<extra></extra>")  # fmt: skip
    fig.add_bar(x=x, y=steps["gate_weight"], marker_color=faded, row=1, col=4, name="gate weight",
                hovertemplate="%{x}: gate %{y:.3f}<extra></extra>")  # fmt: skip
    flipped = steps[steps["chosen"] != steps["chosen_without_bias"]]
    for e in flipped[flipped["chosen"]]["expert"]:  # mark experts chosen only thanks to the bias
        fig.add_annotation(x=f"E{e}", y=float(steps.loc[steps["expert"] == e, "biased_score"].iloc[0]),
                           text="bias", showarrow=True, arrowhead=2, row=1, col=3)  # fmt: skip
    fig.update_layout(showlegend=False, height=300, margin=dict(t=50, b=30))
    return fig
