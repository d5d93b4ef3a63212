"""Token routing figures: the coloured text, its legend, the token x layer grid, one router decision step by step.

Shapes: T tokens, L MoE layers, E experts.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analysis import tables
from analysis.figures import colors

GRID_META = "moe-token-grid"  # layout.meta of the token x layer grid: CLICK_JS finds the figure by it

TOKEN_CSS = """
.moe-tokens [data-token]{border-radius:3px;padding:1px 0;box-shadow:inset -1px 0 0 rgba(255,255,255,.7)}
.moe-tokens [data-tip]{position:relative;cursor:pointer}
.moe-tokens [data-tip]:hover::after,.moe-tokens [data-tip]:focus-visible::after{
  content:attr(data-tip);position:absolute;left:0;top:calc(100% + 3px);z-index:21;width:max-content;max-width:24em;
  background:#1f1f1f;color:#fff;padding:2px 6px;border-radius:4px;font:12px/1.4 sans-serif;white-space:normal;
  pointer-events:none;box-shadow:0 1px 4px rgba(0,0,0,.4)}
.moe-tokens .moe-sel{box-shadow:0 0 0 2px #ffffff,0 0 0 4px #000000;text-decoration:underline}
.moe-tokens .moe-sel:hover::after,.moe-tokens .moe-sel:focus-visible::after{content:none}
.moe-tokens .moe-changed{outline:2px dashed currentColor;outline-offset:-2px}
.moe-tokens [data-tip]:focus-visible{outline:2px dashed currentColor}
.moe-legend a{text-decoration:none}
.moe-legend a:hover,.moe-legend a:focus{text-decoration:underline}
"""
"""Styles of the coloured text: each token's shape (one rule, not thousands of inline styles), a CSS tooltip from
each token's data-tip while it is hovered, tapped or keyboard-focused, except the selected token: its details
stand in a panel of the page, so no tooltip stays open over the next line (a tap keeps a touch screen's hover);
the selected token's ring, a dashed box on tokens marked as changed (comparing two steps), and the legend's links."""


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
  window.__moeSetTrigger = setTriggerValue;
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
  const onPointer = (e) => {  // before plotly sees the press: listen to the grid's own click event once
    const gd = e.target.closest && e.target.closest(".js-plotly-plot");
    if (!gd || gd.__moeCells || typeof gd.on !== "function" || !gd.layout || gd.layout.meta !== "__GRID_META__") return;
    gd.__moeCells = true;
    gd.on("plotly_click", (ev) => {
      const p = ev && ev.points && ev.points[0];
      if (p && p.x != null && p.y != null && window.__moeSetTrigger)
        window.__moeSetTrigger("cell", { token: Number(p.x), layer: Number(p.y) });
    });
  };
  if (window.__moeTokenClicks) window.__moeTokenClicks();
  document.addEventListener("click", onClick, true);
  document.addEventListener("keydown", onKey, true);
  document.addEventListener("pointerdown", onPointer, true);
  window.__moeTokenClicks = () => {
    document.removeEventListener("click", onClick, true);
    document.removeEventListener("keydown", onKey, true);
    document.removeEventListener("pointerdown", onPointer, true);
    window.__moeTokenClicks = null;
    window.__moeSetTrigger = null;
  };
  return window.__moeTokenClicks;
}
""".replace("__GRID_META__", GRID_META)
"""Script of a Streamlit v2 component (no markup of its own) mounted above the coloured text with data =
{"css": TOKEN_CSS}: it adds TOKEN_CSS to the page and turns a click (or Enter) on a token into the trigger
`token` = its data-token, a plain click on a legend chip into the trigger `expert` = its data-expert-link (the
link's href stays for opening in a new tab), and a click on a cell of the token x layer grid (the plotly figure
whose layout.meta is GRID_META; plotly's `plotly_click`, hooked on the first press) into the trigger `cell` =
{token, layer}. Listeners sit on the document, so the text and the grid can be redrawn by every rerun."""

TEXT_JS = """
export default function (component) {
  const { data, parentElement } = component;
  const html = (data && data.html) || "";
  if (parentElement.__moeHtml !== html) {
    parentElement.innerHTML = html;
    parentElement.__moeHtml = html;
  }
}
"""
"""Script of a Streamlit v2 component (created with isolate_styles=False, so TOKEN_CSS reaches it) whose markup is
data = {"html": colored_text_html(...)}: the browser's own HTML parser draws the 2,000 spans of a long text, for
about a fifth of the chromium CPU that Streamlit's Markdown renderer spent on them (`bench/text_render.py`,
docs/BENCHMARKS.md)."""


def colored_text_html(
    text: str,
    spans: pd.DataFrame,
    experts: Mapping[int, int] | pd.Series,
    n_experts: int,
    tooltips: Mapping[int, str] | pd.Series | None = None,
    selected: int | None = None,
    marked: Collection[int] = (),
) -> str:
    """The original text as one line of HTML, each token's characters on its top-1 expert's colour.

    `spans` has columns char_start, char_end and is indexed by token_row; `experts[token_row]` is its
    expert; characters not covered by any span are shown uncoloured. Each coloured token carries
    data-token = its index in `spans` (0..len-1, what a click selects), data-tip = its tooltip (shown by
    TOKEN_CSS, not the browser's title tooltip) and tabindex=0; the token with index `selected` gets the
    class moe-sel, the tokens whose index is in `marked` the class moe-changed. Every text piece and tooltip is
    escaped; newlines become <br> so the HTML has no blank line (Markdown would end the HTML block there).
    """
    palette = colors.expert_colors(n_experts)
    marked = set(marked)
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
            classes = " ".join(c for c, on in (("moe-sel", i == selected), ("moe-changed", i in marked)) if on)
            sel = (f' class="{classes}"' if classes else "") + (' aria-current="true"' if i == selected else "")
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


def token_layer_grid(
    tokens: pd.DataFrame,
    routing: pd.DataFrame,
    n_layers: int,
    n_experts: int,
    selected: tuple[int, int] | None = None,
) -> go.Figure:
    """Heatmap: x = token index (in order), y = MoE layer, colour = top-1 expert; hover = the token and its
    chosen experts with gate weights at that layer.

    One heatmap trace and nothing per cell: z (L, T) holds the top-1 expert, customdata (L, T, 2K) the experts
    by rank then their gate weights, text (L, T) the token as shown (escaped); the numeric arrays travel as
    binary typed arrays. A click on a cell is plotly's own `plotly_click` event (Streamlit's selection does not
    cover heatmaps): CLICK_JS listens to it on the figure whose layout.meta is GRID_META and sends the cell's
    (token = x, layer = y). `selected` = (token index, layer) is outlined.
    """
    experts, weights = tables.routing_arrays(tokens, routing, n_layers)  # (T, L, K)
    T, K = experts.shape[0], experts.shape[2]
    z = np.where(experts[:, :, 0] >= 0, experts[:, :, 0], np.nan).T.astype(np.float32)
    custom = np.concatenate([experts, weights], axis=2).transpose(1, 0, 2).astype(np.float32)
    shown = [colors.esc(tables.short_token(t)) for t in tokens["token_text"].tolist()]
    chosen = ", ".join(f"E%{{customdata[{k}]}} %{{customdata[{K + k}]:.2f}}" for k in range(K))
    palette = colors.expert_colors(n_experts)
    fig = go.Figure(
        go.Heatmap(
            z=z,
            customdata=custom,
            text=[shown] * n_layers,
            hovertemplate=f"token %{{x}}: <b>%{{text}}</b><br>layer %{{y}}: {chosen}<extra></extra>",
            colorscale=colors.discrete_colorscale(palette),
            zmin=-0.5,
            zmax=n_experts - 0.5,
            showscale=n_experts <= 12,  # more experts: the page's legend reads better than a cramped colour bar
            colorbar=dict(
                title="top-1 expert", tickvals=list(range(n_experts)), ticktext=[f"E{e}" for e in range(n_experts)]
            ),
            xgap=1 if T <= 100 else 0,  # a long text has cells narrower than a gap (a phone: 300 px for T cells)
            ygap=1,
        ),
        layout=dict(
            meta=GRID_META,
            xaxis=dict(title="token"),
            yaxis=dict(title="MoE layer", tickvals=list(range(n_layers)), autorange="reversed"),
            height=140 + 40 * n_layers,
            margin=dict(t=30, b=40),
        ),
    )
    if selected is not None and 0 <= selected[0] < T and 0 <= selected[1] < n_layers:
        x, y = selected
        fig.add_shape(type="rect", x0=x - 0.5, x1=x + 0.5, y0=y - 0.5, y1=y + 0.5, line=dict(color="#000000", width=2))
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
        titles[3] += f"<br>(shared expert: {shared_share:.0%} of the output)"  # one line would be cut off
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
    fig.update_layout(showlegend=False, height=320, margin=dict(t=70, b=30))
    return fig


def change_share_bars(by_layer: pd.DataFrame, name_a: str, name_b: str) -> go.Figure:
    """Per MoE layer, the share of the document's tokens routed differently at `name_b` than at `name_a`
    (`step_comparison.change_by_layer`): top-1 expert changed, and top-k set changed; each bar says n / T."""
    x = [f"layer {int(l)}" for l in by_layer["layer"]]
    T = int(by_layer["tokens"].iloc[0]) if len(by_layer) else 0
    fig = go.Figure()
    for col, label, color in (("top1", "top-1 expert changed", "#0072b2"), ("topk", "top-k set changed", "#e69f00")):
        counts = by_layer[f"{col}_changed"].to_numpy()
        fig.add_bar(x=x, y=by_layer[f"{col}_changed_share"], name=label, marker_color=color,
                    text=[f"{int(n):,} / {T:,}" for n in counts], textposition="outside", cliponaxis=False,
                    hovertemplate="%{x}: %{y:.1%} of the tokens (%{text})<extra>" + label + "</extra>")  # fmt: skip
    fig.update_layout(
        barmode="group",
        title=f"Tokens routed differently at {colors.esc(name_b)} than at {colors.esc(name_a)} (of {T:,} tokens)",
        yaxis=dict(title=f"share of the {T:,} tokens", tickformat=".0%", range=[0, 1.12]),
        legend=dict(orientation="h", y=-0.2),
        height=320,
        margin=dict(t=50, b=40),
    )
    return fig
