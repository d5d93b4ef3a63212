"""A self-contained HTML routing report: one file that opens offline (plotly.js is inlined once).

Sections: the run and the text, a per-layer metrics table, the layer x expert load heatmap, balance over
training (MaxVio_batch per layer from the run's history rows), domain specialization (per layer: each
label's share of routings to each expert divided by the uniform share K/E; mutual information I(expert;
domain) and I(expert; token id) against shuffled baselines; the domain probe), and a PCA projection of the
last MoE layer's router inputs coloured by top-1 expert. The figures and tables are the app's
(`analysis.figures`, `analysis.tables`): this module only assembles the page. Every user string (texts,
labels, tokens, run names) is HTML-escaped before it reaches the page or a plotly hover label; plotly itself
escapes `<`, `>` and `/` inside its JSON, so no text can close a <script>.
"""

from __future__ import annotations

import html
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from analysis import domain_probe, figures, metrics, specialization, tables
from analysis.trace import RoutingTrace

MAX_DOCS_LISTED = 50  # documents listed in the report (with their first characters)
SNIPPET_CHARS = 160


def build_report(trace: RoutingTrace, history: list[dict] | None = None, run_info: dict[str, Any] | None = None) -> str:
    """The report as one HTML string (a few MB: plotly.js is inside)."""
    from plotly.offline import get_plotlyjs

    esc = html.escape
    L, E = trace.n_layers, trace.n_experts
    run_name = str((run_info or {}).get("name") or trace.meta.get("run") or "unnamed run")
    step = trace.meta.get("step")
    title = f"MoE routing report: {run_name}" + (f", step {step}" if step is not None else "")
    load_LE = metrics.expert_load(trace.experts_array(), E)

    sections = [
        f"<h1>{esc(title)}</h1>",
        f"<p>{trace.n_tokens:,} tokens in {len(trace.texts):,} document(s), {L} MoE layers, {E} experts, "
        f"top-{trace.top_k}. Layer <i>l</i> is the <i>l</i>-th MoE layer (block {_blocks(trace)}).</p>",
        "<h2>Per-layer metrics</h2>",
        _metrics_table(trace),
        "<h2>Expert load</h2>",
        "<p>Share of each layer's routings that went to each expert (uniform = 1/E).</p>",
        _fig_html(figures.heatmaps.load_heatmap(load_LE)),
        "<h2>Balance over training</h2>",
        _balance_html(history),
        "<h2>Domain specialization</h2>",
        _specialization_html(trace),
        "<h2>Router input space (PCA)</h2>",
        _projection_html(trace),
        "<h2>Documents</h2>",
        _docs_html(trace),
    ]
    body = "\n".join(sections)
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{esc(title)}</title>"
        "<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
        "pre{white-space:pre-wrap;background:#f6f6f6;padding:.5em}</style>"
        f"<script type='text/javascript'>{get_plotlyjs()}</script></head>\n<body>\n{body}\n</body></html>\n"
    )


# --- sections ------------------------------------------------------------------------------------------------


def _specialization_html(trace: RoutingTrace) -> str:
    names = set(trace.tokens["label"].tolist()) - {""}
    if len(names) < 2:
        return "<p>Fewer than two labels in this text: route labelled documents to compare domains.</p>"
    parts = [
        "<p>Each label's share of routings to each expert, as a multiple of the uniform share K/E "
        "(1 = no preference).</p>"
    ]
    for layer in range(trace.n_layers):
        parts.append(f"<h3>Layer {layer}</h3>")
        parts.append(_fig_html(figures.heatmaps.specialization_heatmap(tables.domain_share_ratio(trace, layer))))
    mi = specialization.mi_summary(trace.routing, trace.tokens, trace.n_experts, n_shuffles=5)
    parts.append(
        "<p>Mutual information between the experts a token goes to and its domain or its token id (bits, "
        "plug-in estimate), with the mean of 5 shuffled baselines (domains shuffled across documents, ids "
        "across tokens).</p>"
    )
    parts.append(mi.to_html(index=False, float_format=lambda v: f"{v:.3f}", escape=True, border=0))
    try:
        probe = domain_probe.domain_probe(trace.routing, trace.tokens, trace.n_experts, n_splits=3)
    except ValueError as exc:  # too few documents per label for cross-validation
        parts.append(f"<p>Domain probe skipped: {html.escape(str(exc))}</p>")
    else:
        parts.append(
            "<p>Domain probe: cross-validated accuracy of a linear classifier predicting a document's domain "
            "from its routing histogram, against chance (the majority share).</p>"
        )
        parts.append(probe.to_html(index=False, float_format=lambda v: f"{v:.3f}", escape=True, border=0))
    return "\n".join(parts)


def _projection_html(trace: RoutingTrace) -> str:
    from analysis.projections import project

    if trace.hidden is None or len(trace.hidden_rows) < 3:
        return "<p>This trace kept no router inputs (record with max_hidden &gt; 0).</p>"
    layer = trace.n_layers - 1
    p = project(trace, layer=layer)
    sil = "n/a" if p.silhouette is None else f"{p.silhouette:.3f}"
    return (
        f"<p>Layer {layer}, {len(p.coords):,} tokens. Silhouette of the top-1 expert partition in the router "
        f"input space: {sil}.</p>" + _fig_html(_projection_figure(p.coords, trace.n_experts))
    )


def _projection_figure(coords: pd.DataFrame, n_experts: int) -> go.Figure:
    hover = [f"{t!r} ({d}, {lab})" for t, d, lab in zip(coords["token_text"], coords["doc_id"], coords["label"])]
    return figures.geometry.projection_scatter(
        coords[["x", "y"]], coords["expert"], coords["token_row"], hover, "expert", n_experts=n_experts
    )


def _balance_html(history: list[dict] | None) -> str:
    rows = [r for r in history or [] if isinstance(r.get("maxvio_batch"), list) and "step" in r]
    if not rows:
        return "<p>No training history with MaxVio.</p>"
    return _fig_html(figures.training.balance_curves(pd.DataFrame(rows)))


def _metrics_table(trace: RoutingTrace) -> str:
    table = metrics.summary(trace.routing, trace.n_experts, scores=trace.scores)
    table.insert(1, "block", _blocks_list(trace))
    return table.to_html(index=False, float_format=lambda v: f"{v:.3f}", escape=True, border=0)


def _docs_html(trace: RoutingTrace) -> str:
    labels = trace.tokens.groupby("doc_id", sort=False)["label"].first()
    counts = trace.tokens.groupby("doc_id", sort=False).size()
    items = []
    for doc_id in list(trace.texts)[:MAX_DOCS_LISTED]:
        text = trace.texts[doc_id]
        snippet = text[:SNIPPET_CHARS] + ("…" if len(text) > SNIPPET_CHARS else "")
        label = labels.get(doc_id, "")
        items.append(
            f"<li><b>{html.escape(str(doc_id))}</b> [{html.escape(str(label))}], {int(counts.get(doc_id, 0))} tokens"
            f"<pre>{html.escape(snippet)}</pre></li>"
        )
    more = len(trace.texts) - MAX_DOCS_LISTED
    tail = f"<p>… and {more} more.</p>" if more > 0 else ""
    return f"<ul>{''.join(items)}</ul>{tail}"


def _fig_html(fig: go.Figure) -> str:
    return fig.to_html(full_html=False, include_plotlyjs=False)


def _blocks_list(trace: RoutingTrace) -> list:
    blocks = trace.meta.get("layer_blocks")
    return list(blocks) if isinstance(blocks, list) and len(blocks) == trace.n_layers else ["?"] * trace.n_layers


def _blocks(trace: RoutingTrace) -> str:
    return ", ".join(f"{l}→{b}" for l, b in enumerate(_blocks_list(trace)))
