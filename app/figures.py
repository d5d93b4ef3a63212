"""Pure plotly figure builders: DataFrame / ndarray in, `go.Figure` (or table / HTML data) out. No Streamlit.

Every page draws through these functions, so an expert has the same colour everywhere
(`expert_colors`). Every user string (token text, document labels, run names) that reaches hover
text, tick labels or HTML goes through `esc`, because plotly renders a subset of HTML in labels and
the coloured text is injected as raw HTML.

Shapes: T tokens, L MoE layers, E experts, K top-k.
"""

from __future__ import annotations

import colorsys
import html
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

# Qualitative palettes, distinct at a glance; beyond 24 experts we fall back to evenly spaced hues.
_PALETTE_10 = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
               "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]  # fmt: skip
_PALETTE_24 = ["#2E91E5", "#E15F99", "#1CA71C", "#FB0D0D", "#DA16FF", "#222A2A", "#B68100", "#750D86",
               "#EB663B", "#511CFB", "#00A08B", "#FB00D1", "#FC0080", "#B2828D", "#6C7C32", "#778AAE",
               "#862A16", "#A777F1", "#620042", "#1616A7", "#DA60CA", "#6C4516", "#0D2A63", "#AF0038"]  # fmt: skip
MAX_TOKEN_CHARS = 40  # token texts in hovers are cut to this many characters


# ---------------------------------------------------------------- colours and escaping


def esc(value: object) -> str:
    """HTML-escape any value for hover text, tick labels or raw HTML (quotes included)."""
    return html.escape(str(value), quote=True)


def expert_colors(n_experts: int) -> list[str]:
    """One hex colour per expert; the same expert always gets the same colour for a given E."""
    if n_experts <= len(_PALETTE_10):
        return _PALETTE_10[:n_experts]
    if n_experts <= len(_PALETTE_24):
        return _PALETTE_24[:n_experts]
    colors = []
    for i in range(n_experts):
        # golden-ratio hue steps keep neighbours apart; alternate lightness for more contrast
        r, g, b = colorsys.hls_to_rgb((i * 0.618034) % 1.0, 0.45 if i % 2 else 0.6, 0.75)
        colors.append(f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}")
    return colors


def text_color(background: str) -> str:
    """Black or white, whichever reads better on a hex background (relative luminance > 0.5)."""
    r, g, b = (int(background[i : i + 2], 16) / 255 for i in (1, 3, 5))
    return "#000000" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "#ffffff"


def _discrete_colorscale(colors: Sequence[str]) -> list[list]:
    """A stepped colourscale so that integer z = e maps exactly to colors[e] (with zmin=-0.5, zmax=E-0.5)."""
    n = len(colors)
    scale = []
    for i, c in enumerate(colors):
        scale += [[i / n, c], [(i + 1) / n, c]]
    return scale


def short_token(text: str) -> str:
    """A token made visible for hovers and tables: whitespace shown as symbols, long tokens cut."""
    shown = str(text).replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥")
    return shown if len(shown) <= MAX_TOKEN_CHARS else shown[: MAX_TOKEN_CHARS - 1] + "…"


# ---------------------------------------------------------------- token routing


def top1_table(routing: pd.DataFrame, layer: int) -> pd.Series:
    """Top-1 (rank 0) expert per token_row at one layer."""
    rows = routing[(routing["layer"] == layer) & (routing["rank"] == 0)]
    return rows.set_index("token_row")["expert"].astype(int).sort_index()


def routing_summary(routing: pd.DataFrame) -> pd.Series:
    """Per (token_row, layer): 'E3 0.62, E1 0.38' (chosen experts by rank with gate weights)."""
    r = routing.sort_values(["token_row", "layer", "rank"], kind="stable")
    keys = list(zip(r["token_row"].tolist(), r["layer"].tolist()))
    texts: dict[tuple[int, int], list[str]] = {}
    for key, e, w in zip(keys, r["expert"].tolist(), r["weight"].tolist()):  # plain Python: fast for 10^4 rows
        texts.setdefault(key, []).append(f"E{e} {w:.2f}")
    index = pd.MultiIndex.from_tuples(list(texts), names=["token_row", "layer"])
    return pd.Series([", ".join(v) for v in texts.values()], index=index, dtype=object)


def colored_text_html(
    text: str,
    spans: pd.DataFrame,
    experts: Mapping[int, int] | pd.Series,
    n_experts: int,
    tooltips: Mapping[int, str] | pd.Series | None = None,
) -> str:
    """The original text as one line of HTML, each token's characters on its top-1 expert's colour.

    `spans` has columns char_start, char_end and is indexed by token_row; `experts[token_row]` is its
    expert; characters not covered by any span are shown uncoloured. Every text piece and tooltip is
    escaped; newlines become <br> so the HTML has no blank line (Markdown would end the HTML block there).
    """
    colors = expert_colors(n_experts)
    pieces = ['<div class="moe-tokens" style="line-height:1.9;white-space:pre-wrap;font-family:monospace">']
    pos = 0
    for row, start, end in zip(spans.index, spans["char_start"], spans["char_end"]):
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
            bg = colors[int(expert) % len(colors)]
            title = esc(tooltips.get(row, "")) if tooltips is not None else f"expert {int(expert)}"
            pieces.append(
                f'<span title="{title}" data-expert="{int(expert)}" '
                f'style="background:{bg};color:{text_color(bg)};border-radius:3px;padding:1px 0;'
                f'box-shadow:inset -1px 0 0 rgba(255,255,255,.7)">{piece}</span>'
            )
        pos = max(pos, end)
    if pos < len(text):
        pieces.append(_text_piece(text[pos:]))
    pieces.append("</div>")
    return "".join(pieces)


def _text_piece(s: str) -> str:
    # `$` would start LaTeX in Streamlit Markdown and newlines would end the HTML block: neutralise both
    return esc(s).replace("$", "&#36;").replace("\r\n", "<br>").replace("\n", "<br>").replace("\r", "<br>")


def legend_html(n_experts: int, counts: Sequence[int] | None = None) -> str:
    """A one-line legend of expert colours (with token counts when given)."""
    colors = expert_colors(n_experts)
    items = []
    for e, c in enumerate(colors):
        label = f"E{e}" + (f" ({int(counts[e])})" if counts is not None else "")
        items.append(
            f'<span style="background:{c};color:{text_color(c)};border-radius:3px;padding:2px 6px;'
            f'margin:0 4px 4px 0;font-family:monospace;display:inline-block;white-space:nowrap">{label}</span>'
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
    texts = [esc(short_token(t)) for t in tokens["token_text"].tolist()]
    summary = routing_summary(routing[routing["token_row"].isin(rows)])
    for (row, layer), s in zip(summary.index.tolist(), summary.tolist()):
        i = int(np.searchsorted(rows, row))
        hover[int(layer), i] = f"token {i}: <b>{texts[i]}</b><br>layer {int(layer)}: {s}"
    colors = expert_colors(n_experts)
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=list(range(len(rows))),
            y=list(range(n_layers)),
            hoverinfo="skip",
            colorscale=_discrete_colorscale(colors),
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
    x_grid, y_grid = np.meshgrid(np.arange(len(rows)), np.arange(n_layers))  # (L, T) each, like `hover`
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


def routing_steps_table(
    scores_E: np.ndarray,
    bias_E: np.ndarray,
    top_k: int,
    renormalize: bool = True,
    route_scale: float = 1.0,
    recorded: Mapping[int, float] | None = None,
) -> pd.DataFrame:
    """One router decision step by step, recomputed from the scores and the bias (DeepSeek-V3).

    biased = score + bias (used only to choose); chosen = top-k of biased; the unbiased top-k is what
    would be chosen without the bias; gate weight = score of chosen experts, divided by their sum when
    `renormalize`, times `route_scale`. `recorded` = {expert: gate weight} as the model actually chose
    (from the trace) overrides the replay, so group-limited routing or other families' rules show truly.
    """
    scores_E = np.asarray(scores_E, dtype=np.float64)
    bias_E = np.asarray(bias_E, dtype=np.float64)
    biased_E = scores_E + bias_E
    chosen = np.argsort(-biased_E, kind="stable")[:top_k]
    unbiased = np.argsort(-scores_E, kind="stable")[:top_k]
    gate = np.zeros_like(scores_E)
    gate[chosen] = scores_E[chosen]
    if renormalize and gate.sum() > 0:
        gate = gate / gate.sum()
    gate *= route_scale
    if recorded is not None:
        chosen = np.asarray(list(recorded), dtype=np.int64)
        gate = np.zeros_like(scores_E)
        gate[chosen] = list(recorded.values())
    rank = np.full(len(scores_E), -1)
    rank[chosen] = np.arange(len(chosen))
    return pd.DataFrame(
        {
            "expert": np.arange(len(scores_E)),
            "score": scores_E,
            "bias": bias_E,
            "biased_score": biased_E,
            "chosen": np.isin(np.arange(len(scores_E)), chosen),
            "rank": rank,
            "chosen_without_bias": np.isin(np.arange(len(scores_E)), unbiased),
            "gate_weight": gate,
        }
    )


def bias_changed_choice(steps: pd.DataFrame) -> bool:
    """True when the bias changed the chosen set (an expert chosen only because of the bias)."""
    return bool((steps["chosen"] != steps["chosen_without_bias"]).any())


def routing_steps_figure(steps: pd.DataFrame, shared_share: float | None = None) -> go.Figure:
    """Four bar panels for one token at one layer: scores, score + bias, top-k choice, gate weights."""
    E = len(steps)
    colors = expert_colors(E)
    x = [f"E{e}" for e in steps["expert"]]
    chosen = steps["chosen"].to_numpy()
    faded = [c if ch else "#d0d0d0" for c, ch in zip(colors, chosen)]
    titles = ["1. router scores", "2. score + bias (choice only)", "3. top-k chosen", "4. gate weights"]
    if shared_share is not None:
        titles[3] += f" (shared expert {shared_share:.0%} of output)"
    fig = make_subplots(rows=1, cols=4, subplot_titles=titles)
    fig.add_bar(x=x, y=steps["score"], marker_color=colors, row=1, col=1, name="score",
                hovertemplate="%{x}: score %{y:.4f}<extra></extra>")  # fmt: skip
    fig.add_bar(x=x, y=steps["biased_score"], marker_color=colors, row=1, col=2, name="score + bias",
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


# ---------------------------------------------------------------- expert heatmaps


def load_matrix(routing: pd.DataFrame, n_layers: int, n_experts: int) -> np.ndarray:
    """(L, E) load: load[l, i] = routings (any rank) of tokens to expert i at layer l."""
    flat = routing["layer"].to_numpy().astype(np.int64) * n_experts + routing["expert"].to_numpy().astype(np.int64)
    return np.bincount(flat, minlength=n_layers * n_experts).reshape(n_layers, n_experts)


def matrix_frame(m: np.ndarray, row_name: str, col_name: str, value_name: str, rows=None) -> pd.DataFrame:
    """A matrix as a long table (row, column, value) for CSV download."""
    m = np.asarray(m)
    rows = list(range(m.shape[0])) if rows is None else list(rows)
    r, c = np.meshgrid(np.arange(m.shape[0]), np.arange(m.shape[1]), indexing="ij")
    row_values = np.asarray(rows, dtype=object)[r.ravel()]
    return pd.DataFrame({row_name: row_values, col_name: c.ravel(), value_name: m.ravel()})


def series_frame(series: Mapping[str, tuple[np.ndarray, np.ndarray]], value_name: str) -> pd.DataFrame:
    """{run: (steps, values)} as a long table (run, step, value) for CSV download."""
    parts = [pd.DataFrame({"run": name, "step": s, value_name: v}) for name, (s, v) in series.items()]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["run", "step", value_name])


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


def flow_frame(flow_LEE: np.ndarray) -> pd.DataFrame:
    """(L-1, E, E) transition counts -> long table layer (source layer), src, dst, count (count > 0 only)."""
    flow = np.asarray(flow_LEE)
    l, i, j = np.nonzero(flow)
    return pd.DataFrame({"layer": l, "src": i, "dst": j, "count": flow[l, i, j]})


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
            y=[esc(i) for i in ratio.index],
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


def top_tokens_table(tokens: pd.DataFrame, routing: pd.DataFrame, layer: int, n: int = 8) -> pd.DataFrame:
    """Per expert at one layer: its most frequent top-1 tokens, 'tok (count)', and its top-1 token count."""
    top1 = routing[(routing["layer"] == layer) & (routing["rank"] == 0)]
    texts = tokens["token_text"].reindex(top1["token_row"].to_numpy()).map(short_token).to_numpy()
    df = pd.DataFrame({"expert": top1["expert"].to_numpy(), "token": texts})
    rows = []
    for expert, group in df.groupby("expert", sort=True):
        counts = group["token"].value_counts().head(n)
        listed = ", ".join(f"{tok} ({c})" for tok, c in counts.items())
        rows.append({"expert": int(expert), "tokens": int(len(group)), "top tokens": listed})
    return pd.DataFrame(rows, columns=["expert", "tokens", "top tokens"])


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
    colors = expert_colors(n_experts)
    node = lambda layer, e: int(layer) * n_experts + int(e)  # noqa: E731
    labels = [f"L{l} E{e}" for l in range(n_layers) for e in range(n_experts)]
    node_colors = [colors[e] for _ in range(n_layers) for e in range(n_experts)]
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
                color=[_rgba(colors[int(s)], 0.35) for s in kept["src"]],
            ),
        )
    )
    fig.update_layout(title="Top-1 expert flow between consecutive layers", height=520)
    return fig


def _rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


# ---------------------------------------------------------------- training dynamics


def history_array(history: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps (N,), values (N, ...)) from a history column of nested lists (load, bias, maxvio_batch)."""
    rows = history.dropna(subset=[column]) if column in history else history.iloc[:0]
    if not len(rows):
        return np.zeros(0, dtype=np.int64), np.zeros((0,))
    return rows["step"].to_numpy(), np.asarray(rows[column].tolist(), dtype=np.float64)


def load_share_curves(history: pd.DataFrame, layer: int) -> go.Figure:
    """Per-expert load share over training steps at one MoE layer (uniform = 1/E dashed)."""
    steps, load = history_array(history, "load")  # (N, L, E)
    fig = go.Figure()
    if load.ndim == 3 and layer < load.shape[1]:
        load_NE = load[:, layer, :]
        totals = load_NE.sum(axis=1, keepdims=True)
        share = np.divide(load_NE, totals, out=np.zeros_like(load_NE), where=totals > 0)
        E = share.shape[1]
        for e, c in enumerate(expert_colors(E)):
            fig.add_scatter(x=steps, y=share[:, e], mode="lines", name=f"E{e}", line=dict(color=c, width=1.5))
        fig.add_hline(y=1 / E, line_dash="dash", line_color="grey", annotation_text="uniform")
    fig.update_layout(title=f"Expert load share, layer {layer}", xaxis_title="step", yaxis_title="share", height=360)
    return fig


def bias_curves(history: pd.DataFrame, layer: int) -> go.Figure:
    """Per-expert balancing bias b_i over training steps at one MoE layer."""
    steps, bias = history_array(history, "bias")  # (N, L, E)
    fig = go.Figure()
    if bias.ndim == 3 and layer < bias.shape[1]:
        for e, c in enumerate(expert_colors(bias.shape[2])):
            fig.add_scatter(x=steps, y=bias[:, layer, e], mode="lines", name=f"E{e}", line=dict(color=c, width=1.5))
    fig.update_layout(title=f"Router bias, layer {layer}", xaxis_title="step", yaxis_title="bias", height=360)
    return fig


def ema(values: np.ndarray, alpha: float) -> np.ndarray:
    """Exponential moving average y_t = alpha*y_{t-1} + (1-alpha)*x_t (alpha=0: no smoothing)."""
    values = np.asarray(values, dtype=np.float64)
    out = np.empty_like(values)
    acc = None
    for i, v in enumerate(values):
        acc = v if acc is None else alpha * acc + (1 - alpha) * v
        out[i] = acc
    return out


def run_curves(
    series: Mapping[str, tuple[np.ndarray, np.ndarray]], title: str, y_title: str, smooth: float = 0.0, log_y=False
) -> go.Figure:
    """Overlay one line per run: `series[run name] = (steps, values)`; optional EMA smoothing."""
    fig = go.Figure()
    for name, (steps, values) in series.items():
        y = ema(values, smooth) if smooth > 0 else np.asarray(values, dtype=np.float64)
        fig.add_scatter(x=steps, y=y, mode="lines", name=esc(name), hovertemplate="step %{x}: %{y:.4g}")
    fig.update_layout(title=title, xaxis_title="step", yaxis_title=y_title, height=360, legend_title="run")
    if log_y:
        fig.update_yaxes(type="log")
    return fig


def aux_series(history: pd.DataFrame) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{aux loss name: (steps, values)} from the history's `aux` dicts (empty when no aux loss is on)."""
    if "aux" not in history:
        return {}
    rows = [(s, a) for s, a in zip(history["step"], history["aux"]) if isinstance(a, dict)]
    names = sorted({k for _, a in rows for k in a})
    return {
        n: (np.array([s for s, a in rows if n in a]), np.array([float(a[n]) for _, a in rows if n in a])) for n in names
    }


def history_table(history: pd.DataFrame) -> pd.DataFrame:
    """The history with nested lists/dicts flattened to columns (load_l0_e3, bias_l1_e0, aux_switch, …) for CSV."""
    columns: dict[str, object] = {}
    for col in history:
        values = history[col].tolist()
        first = next((v for v in values if isinstance(v, (list, dict))), None)
        if first is None:
            columns[col] = values
        elif isinstance(first, dict):
            for key in sorted({k for v in values if isinstance(v, dict) for k in v}):
                columns[f"{col}_{key}"] = [v.get(key) if isinstance(v, dict) else None for v in values]
        else:
            arr = np.asarray([v if isinstance(v, list) else np.full(np.shape(first), np.nan) for v in values])
            for idx in np.ndindex(arr.shape[1:]):
                name = "_".join(f"{p}{i}" for p, i in zip(("l", "e"), idx))
                columns[f"{col}_{name}"] = arr[(slice(None), *idx)]
    return pd.DataFrame(columns, index=history.index)


def maxvio_series(history: pd.DataFrame, layer: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """MaxVio_batch over steps at one layer, or averaged over layers when `layer` is None."""
    steps, v = history_array(history, "maxvio_batch")  # (N, L)
    if v.ndim != 2 or not len(steps):
        return steps, np.zeros(len(steps))
    return steps, v.mean(axis=1) if layer is None else v[:, min(layer, v.shape[1] - 1)]


# ---------------------------------------------------------------- geometry


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
    hover = np.array([esc(h) for h in hover], dtype=object)
    fig = go.Figure()
    if kind == "expert":
        E = n_experts or int(max(color.max(), 0)) + 1
        palette = expert_colors(E)
        groups = [(f"E{int(e)}", color == e, palette[int(e) % E]) for e in sorted(color.unique())]
    else:
        top = list(color.value_counts().head(max_categories).index)
        groups = [(esc(short_token(c)), color == c, None) for c in top]
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


def selected_rows(points: Sequence[Mapping]) -> list[int]:
    """token_row values from a plotly selection event's points (customdata may be a scalar or a list)."""
    rows = []
    for p in points:
        cd = p.get("customdata")
        if isinstance(cd, (list, tuple)):
            cd = cd[0] if cd else None
        if cd is not None:
            rows.append(int(cd))
    return sorted(set(rows))


def token_context(tokens: pd.DataFrame, texts: Mapping, rows: Sequence[int], width: int = 30) -> pd.DataFrame:
    """For token rows: the token and `width` characters of its document on each side, as plain text."""
    out = []
    for row in rows:
        t = tokens.loc[row]
        doc = texts.get(t["doc_id"], "")
        s, e = int(t["char_start"]), int(t["char_end"])
        out.append(
            {
                "token_row": int(row),
                "token": short_token(t["token_text"]),
                "label": t.get("label", ""),
                "context": (doc[max(0, s - width) : s] + "[" + doc[s:e] + "]" + doc[e : e + width]).replace("\n", " "),
            }
        )
    return pd.DataFrame(out, columns=["token_row", "token", "label", "context"])
