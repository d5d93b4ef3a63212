"""Every user-supplied string (text, file names, labels, doc ids, run names) is escaped wherever it is shown:
token colouring, figure hover text / legends / axis labels, the HTML report, and the pages themselves.

Payloads try to open a tag, close an attribute, or both. A string is "safe" when no payload tag appears raw
(`<script`, `<img`, `<svg`, ...), neither as HTML nor inside plotly's JSON (where `<` may be `\\u003c`).
"""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from analysis import figures, tables
from analysis.recording import record
from analysis.report import build_report
from tests.app.conftest import token_html

PAYLOADS = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    '"><svg onload=alert(1)>',
    "'><iframe src=javascript:alert(1)>",
    "</textarea><b onmouseover=alert(1)>x</b>",
]
# a payload's own tag, raw: as HTML or as plotly JSON (`\u003c`); the page's own <script> tags do not match
RAW = re.compile(r"(<|\\u003c)(script>alert|img src=x|svg onload|iframe src=javascript|/textarea|b onmouseover)", re.I)


def strings(obj):
    """Every string inside a nested JSON-like object."""
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from strings(k)
            yield from strings(v)
    elif isinstance(obj, (list, tuple, np.ndarray)):
        for v in obj:
            yield from strings(v)


def assert_figure_safe(fig) -> None:
    found = [s for s in strings(fig.to_plotly_json()) if RAW.search(s)]
    assert not found, found[:3]


@pytest.fixture(scope="module")
def hostile_trace(tiny_model, tiny_tok):
    """A trace whose texts, labels and doc ids are all payloads (two docs per label, two labels)."""
    docs = [
        SimpleNamespace(doc_id=f"{p}#{i}", label=PAYLOADS[i % 2], text=f"{p} and {PAYLOADS[(i + 2) % 5]} x = {i}")
        for i, p in enumerate(PAYLOADS + PAYLOADS[:3])
    ]
    return record(tiny_model, tiny_tok, docs, meta={"run": PAYLOADS[3], "step": 1})


def test_figure_builders_escape_hover_legend_and_axes(hostile_trace):
    t = hostile_trace
    tokens, routing, L, E = t.tokens, t.routing, t.n_layers, t.n_experts
    assert_figure_safe(figures.routing.token_layer_grid(tokens, routing, L, E))
    n = len(tokens)
    xy = np.random.default_rng(0).normal(size=(n, 2))
    hover = [f"{tables.short_token(s)} · {d}" for s, d in zip(tokens["token_text"], tokens["doc_id"])]
    for kind, color in (("expert", t.experts_array()[:, 0, 0]), ("category", tokens["label"]),
                        ("category", tokens["token_text"])):  # fmt: skip
        assert_figure_safe(figures.geometry.projection_scatter(xy, color, tokens.index, hover, kind, n_experts=E))
    ratio = pd.DataFrame(np.ones((2, E)), index=PAYLOADS[:2], columns=range(E))
    assert_figure_safe(figures.heatmaps.specialization_heatmap(ratio, ratio / E))
    assert_figure_safe(figures.training.run_curves({p: (np.arange(3), np.ones(3)) for p in PAYLOADS}, "Loss", "loss"))
    # and the escaped text is what a reader sees
    grid = figures.routing.token_layer_grid(tokens, routing, L, E)
    assert any("&lt;" in h for h in grid.data[0].text[0])  # tokens are pieces: "<" shown as &lt;


def test_token_colouring_escapes_text_and_tooltips(hostile_trace):
    t = hostile_trace
    for doc_id, text in t.texts.items():
        toks = t.tokens[t.tokens["doc_id"] == doc_id]
        routing = t.routing[t.routing["token_row"].isin(toks.index)]
        top1 = tables.top1_table(routing, 0)
        html = figures.routing.colored_text_html(text, toks, top1, t.n_experts, tooltips={int(toks.index[0]): doc_id})
        assert not RAW.search(html), html[:300]
        assert html.count('data-tip="') == len(toks[toks["char_end"] > toks["char_start"]])  # no attribute broken out


def test_report_escapes_texts_labels_doc_ids_and_run_name(hostile_trace):
    history = [{"step": s, "maxvio_batch": [0.1, 0.2]} for s in (1, 2)]
    page = build_report(hostile_trace, history=history, run_info={"name": PAYLOADS[2]})
    body = page.split("</head>", 1)[1]  # after plotly.js
    assert not RAW.search(body), RAW.search(body)
    assert "&lt;img src=x onerror=alert(1)&gt;" in body  # the payload is shown, as text
    assert "<title>MoE routing report: &quot;&gt;&lt;svg onload=alert(1)&gt;, step 1</title>" in page


def test_cli_route_prints_no_terminal_escapes(rel_run, capsys):
    """Token text printed by `moe-explorer route` is repr-escaped: no ANSI escape or carriage return reaches a
    terminal."""
    from app.cli import main

    assert main(["route", "--run", str(rel_run), "--text", "red \x1b[31mALERT\x1b[0m\rover", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\r" not in out


# --- pages -----------------------------------------------------------------------------------------------------------


def _page(entry: str, page: str):
    from streamlit.testing.v1 import AppTest

    from tests.app.conftest import ROOT

    at = AppTest.from_file(entry, default_timeout=90)
    at.run()
    at.switch_page(str(ROOT / "app" / "views" / f"{page}.py")).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def assert_page_safe(at) -> int:
    """No raw payload in any HTML-enabled markdown nor in any chart; returns how many places were checked."""
    checked = 0
    for md in at.markdown:
        if md.proto.allow_html:
            assert not RAW.search(md.value), md.value[:300]
            checked += 1
    for part in token_html(at).split("\n"):  # the coloured text: HTML drawn by a component, not Markdown
        if part:
            assert not RAW.search(part), part[:300]
            checked += 1
    for chart in at.get("plotly_chart"):
        spec = json.loads(chart.proto.spec)
        found = [s for s in strings(spec) if RAW.search(s)]
        assert not found, found[:3]
        checked += 1
    return checked


def test_token_routing_page_escapes_uploads(rel_app_env, entry):
    at = _page(entry, "token_routing")
    at.radio(key="tr_source").set_value("Upload files").run()
    csv = "label,text\n" + "\n".join(f'"{p.replace(chr(34), 2 * chr(34))}","{p.replace(chr(34), 2 * chr(34))} x"'
                                      for p in PAYLOADS)  # fmt: skip
    at.get("file_uploader")[0].set_value([
        (f"{PAYLOADS[1]}.txt", (" ".join(PAYLOADS)).encode(), "text/plain"),
        ("labels.csv", csv.encode(), "text/csv"),
        (f"{PAYLOADS[0]}.md", b"MZ\x00\x01", "text/markdown"),  # refused (binary): its name is in the message
    ])  # fmt: skip
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(PAYLOADS[0] in e.value and "binary" in e.value for e in at.error)  # an alert: Markdown, no HTML
    docs = [o.split(" · ")[0] for o in at.selectbox(key="tr_doc").options]  # "id · label · first words"
    assert len(docs) == 1 + len(PAYLOADS)
    checked = 0
    for doc in docs[:3]:  # the .txt file and two CSV rows (labels are payloads)
        at.selectbox(key="tr_doc").set_value(doc).run()
        assert not at.exception
        checked += assert_page_safe(at)
        assert "&lt;" in token_html(at)
    assert checked >= 9


def test_pages_escape_a_runs_own_labels_and_texts(rel_run, entry, tmp_path, monkeypatch):
    """A run directory from elsewhere, whose eval docs carry payload labels and texts: Heatmaps, Geometry."""
    import shutil

    run = tmp_path / "hostile"
    shutil.copytree(rel_run, run)
    for p in (run / "eval").glob("trace_step_*"):
        p.unlink()  # recorded again from the hostile docs
    rows = [{"doc_id": i, "label": PAYLOADS[i % 3], "text": f"{p} x = {i}"} for i, p in enumerate(PAYLOADS * 2)]
    (run / "eval" / "docs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    info = json.loads((run / "run.json").read_text())
    info["name"] = PAYLOADS[0]
    (run / "run.json").write_text(json.dumps(info))
    monkeypatch.setenv("MOE_EXPLORER_RUN", str(run))
    monkeypatch.setenv("MOE_EXPLORER_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("MOE_EXPLORER_WARM_UMAP", "0")
    at = _page(entry, "heatmaps")
    assert assert_page_safe(at) >= 2
    at = _page(entry, "geometry")
    for color in ("domain", "token"):
        at.radio(key="geo_color").set_value(color).run()
        assert not at.exception
        assert assert_page_safe(at) >= 1
