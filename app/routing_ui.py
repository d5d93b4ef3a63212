"""The parts of the Token routing page (app/views/token_routing.py reads as their sequence): the text input,
routing it, the clicks on the coloured text and the grid, the coloured text, the selected token's panel, its
router steps, and the same text at another step.

A source that cannot route text but keeps pages of stored documents (a routing dataset) is read a page at a
time instead (`stored_page`: ?page=, from 1), and `choose_document` picks one of the page's documents (?doc=).

Selection state: `tr_token` (the selected token's index in the document shown, ?token=), `session.KEY_LAYER`
(the layer, ?layer=) and PICKED = the key of the texts in which a token was chosen (a click, the index box or a
?token= link): the router-steps chart is drawn only then, not on the first route of a new text.
"""

from __future__ import annotations

import streamlit as st

from analysis import figures, step_comparison, tables
from analysis.trace import RoutingTrace
from app import cache, downloads, session, uploads

TOKEN = "tr_token"  # selected token (index in the document shown)
PICKED = "tr_picked"  # docs key of the texts in which a token was chosen
COMPARE = "tr_compare"  # "off" or the step to compare with
PAGE = "tr_page"  # page of a dataset's stored documents (from 1)
DOC = "tr_doc"  # the document shown (a doc_id of the trace)
LONG_TEXT = 1500  # characters: a longer coloured text scrolls inside a box, so the panel below stays in view
INPUTS = ["Paste text", "Sample", "Upload files"]


def input_docs(source) -> list[tuple[str, str, str]]:
    """The (doc_id, label, text) docs chosen on the page: pasted text, a sample (?sample=) or uploaded files.
    Stops the page with a hint when there is nothing to route."""
    session.url_mode("tr_source", "Sample", "tr_sample", "sample")  # a link with ?sample= opens the sample
    kind = st.radio("Input", INPUTS, horizontal=True, key="tr_source")
    docs = []
    if kind == "Paste text":
        if session.KEY_TEXT not in st.session_state:  # Streamlit drops a widget's state on another page: restore it
            st.session_state[session.KEY_TEXT] = st.session_state.get("tr_text_kept", "")
        text = st.text_area("Text", key=session.KEY_TEXT, height=140, placeholder="Paste any text or code here…",
                            max_chars=uploads.MAX_TEXT_CHARS)  # fmt: skip
        st.session_state["tr_text_kept"] = text
        docs = [("input", "input", text)] if text.strip() else []
    elif kind == "Sample":
        samples = uploads.samples(source)
        session.url_param("tr_sample", "sample", choices=list(samples))
        name = st.selectbox("Sample", list(samples), key="tr_sample",
                            help="built-in texts and the run's eval documents")  # fmt: skip
        docs = [("sample", name, samples[name])]
    else:
        files = st.file_uploader("Files", type=uploads.UPLOAD_TYPES, accept_multiple_files=True,
                                 help=uploads.LIMITS_TEXT, max_upload_size=uploads.UPLOAD_MAX_MB)  # fmt: skip
        good, errors = uploads.read_uploads(files)
        for message in errors:
            st.error(message)
        uploads.show_notices(good)
        docs = uploads.docs_from_uploads(good)
    if not docs:
        st.info(uploads.NO_FILES_TEXT if kind == "Upload files" else "Enter some text to see its routing.")
        st.stop()
    return docs


def route(source, step: int | None, docs: list[tuple[str, str, str]]) -> tuple[RoutingTrace, list, str]:
    """(trace of the docs at `step`, the docs as routed, their key): cut to the token limit (with a warning), routed
    once per text hash (`cache.route_trace`); stops the page with the reason when the text cannot be routed."""
    docs, cut = uploads.limit_docs(source, docs)
    if cut:
        st.warning(f"Only the first {uploads.MAX_TOKENS:,} tokens are routed.")
    try:
        trace = cache.route_trace(source, step, docs)
    except ValueError as exc:
        st.error(f"Could not route this text: {exc}")
        st.stop()
    return trace, docs, cache.docs_key(tuple(tuple(d) for d in docs))


def stored_page(source, step: int | None) -> tuple[RoutingTrace, list, str]:
    """For a source that cannot route text: (trace of the chosen page of its stored documents, their docs, their
    key). A number box picks the page (?page=, 1 to n_pages), so every document can be reached. Stops the page
    with the reason when the source keeps no pages (e.g. a run without checkpoints)."""
    if not source.capabilities.pages:
        st.info(source.capabilities.route_text.reason)
        st.stop()
    try:
        n = source.n_pages()
    except (OSError, ValueError) as exc:
        st.error(f"Cannot read the stored documents: {exc}")
        st.stop()
    if n == 0:
        st.info("No document is stored yet.")
        st.stop()
    session.url_param(PAGE, "page", lo=1, hi=n)
    c1, c2 = st.columns([1, 3], vertical_alignment="bottom")
    tip = "Consecutive documents of the dataset, a bounded number of tokens each page"
    page = int(c1.number_input(f"Page (of {n:,})", 1, n, key=PAGE, help=tip))
    try:
        with st.spinner(f"Reading page {page}…"):
            trace = source.stored_trace(step, page=page - 1)
    except (OSError, ValueError) as exc:
        st.error(f"Cannot read page {page}: {exc}")
        st.stop()
    if trace is None:
        st.info(f"Page {page} holds no document at step {step}.")
        st.stop()
    k = len(trace.texts)
    c2.caption(f"Page {page} of {n:,}: {k:,} document{'s' * (k != 1)}, {trace.n_tokens:,} tokens at step {step}. "
               "Stored routing only: new text cannot be routed here.")  # fmt: skip
    labels = trace.tokens.groupby("doc_id", sort=False)["label"].first()
    docs = [(str(d), str(labels[d]), trace.texts[d]) for d in labels.index]
    return trace, docs, cache.docs_key((("page", f"{source.path}|{step}|{page}", ""),))


def choose_document(trace: RoutingTrace) -> str:
    """The document shown (?doc=): one of the trace's, chosen in a select box when there are several."""
    doc_ids = list(trace.texts)
    if len(doc_ids) == 1:
        return doc_ids[0]
    session.url_param(DOC, "doc", choices=doc_ids)
    labels = trace.tokens.groupby("doc_id", sort=False)["label"].first().astype(str).to_dict()
    return st.selectbox("Document", doc_ids, key=DOC, help=f"{len(doc_ids):,} documents",
                        format_func=lambda d: document_name(d, labels.get(d, ""), trace.texts[d]))  # fmt: skip


def document_name(doc_id: str, label: str, text: str, chars: int = 48) -> str:
    """'3 · prose · The quick brown fox…': what a document select shows (plain text: options are not markup)."""
    start = " ".join(text.split())
    start = start if len(start) <= chars else start[: chars - 1] + "…"
    return " · ".join(part for part in (str(doc_id), label, start) if part)


def _pick(key: str) -> None:
    st.session_state[PICKED] = key


def take_clicks(key: str) -> dict:
    """Mount the click catcher (`figures.routing.CLICK_JS`). Call it before the layer and token widgets: a click on
    a token selects it, a click on a grid cell selects its token and its layer. Returns the component's values
    (`expert` is a legend chip's expert)."""
    catcher = st.components.v2.component("moe_token_clicks", js=figures.routing.CLICK_JS)
    clicked = catcher(key="tr_clicks", data={"css": figures.routing.TOKEN_CSS}, on_token_change=lambda: None,
                      on_expert_change=lambda: None, on_cell_change=lambda: None)  # fmt: skip
    cell = clicked.get("cell")
    if isinstance(cell, dict) and cell.get("token") is not None and cell.get("layer") is not None:
        st.session_state[TOKEN], st.session_state[session.KEY_LAYER] = int(cell["token"]), int(cell["layer"])
        _pick(key)
    if clicked.get("token") is not None:
        st.session_state[TOKEN] = int(clicked["token"])
        _pick(key)
    return clicked


def document(trace: RoutingTrace, doc: str) -> RoutingTrace:
    """The trace of one of its documents (the trace itself when it holds one)."""
    return trace if len(trace.texts) == 1 else trace.select_docs([doc])


def selected_token(n_tokens: int, key: str) -> int:
    """The selected token's index (?token=, kept inside the document); a link that names one counts as a pick."""
    linked = TOKEN not in st.session_state and st.query_params.get("token") is not None
    i = session.url_param(TOKEN, "token", hi=n_tokens - 1)
    if linked:
        _pick(key)
    return int(i)


def text_html(view: RoutingTrace, layer: int, selected: int, marked=()) -> str:
    """The coloured text of a one-document trace at `layer` (tooltips: the token's experts and gate weights)."""
    tokens = view.tokens
    top1 = tables.top1_table(view.routing, layer)
    summary = tables.routing_summary(view.routing[view.routing["layer"] == layer]).droplevel(1)
    tips = {row: f"token {i} · layer {layer}: {summary.get(row, '')}" for i, row in enumerate(tokens.index)}
    text = next(iter(view.texts.values()))
    return figures.routing.colored_text_html(text, tokens, top1, view.n_experts, tips, selected, marked)


def show_html(html: str, key: str) -> None:
    """Coloured-text HTML drawn by the browser's parser (`figures.routing.TEXT_JS`), not as Markdown."""
    draw = st.components.v2.component("moe_token_text", js=figures.routing.TEXT_JS, isolate_styles=False)
    draw(key=key, data={"html": html})


def coloured_text(view: RoutingTrace, layer: int, selected: int) -> None:
    """Legend (top-1 tokens per expert; a chip opens its profile) and the coloured text; a long text scrolls in
    a box of its own."""
    top1 = tables.top1_table(view.routing, layer)
    counts = top1.value_counts().reindex(range(view.n_experts), fill_value=0).tolist()
    st.markdown(figures.routing.legend_html(view.n_experts, counts=counts, layer=layer), unsafe_allow_html=True)
    long = sum(len(t) for t in view.texts.values()) > LONG_TEXT
    with st.container(height=380 if long else "content", border=long):
        show_html(text_html(view, layer, selected), "tr_text")
    st.caption(f"{len(view.tokens):,} tokens · layer {layer} · legend: top-1 tokens per expert (click a chip for its "
               "profile) · hover or tap a token for its experts and gate weights; click it to select it")  # fmt: skip


def token_panel(view: RoutingTrace, layer: int, i: int, key: str) -> None:
    """The selected token in a fixed panel (not a floating tooltip): its index box, its text, its experts and gate
    weights at every layer (this one first), and a link to its top-1 expert's profile."""
    experts, weights = (a[0] for a in tables.routing_arrays(view.tokens.iloc[[i]], view.routing, view.n_layers))
    with st.container(border=True, key="tr_panel"):
        c1, c2 = st.columns([1, 4])
        c1.number_input("Token index", 0, len(view.tokens) - 1, key=TOKEN, on_change=_pick, args=(key,),
                        help="Or click a token in the text or a cell of the grid")  # fmt: skip
        token = tables.short_token(view.tokens["token_text"].iloc[i])
        c2.text(f"Token {i}: {token!r} at layer {layer}")  # plain text: a user string
        order = [layer] + [l for l in range(view.n_layers) if l != layer]
        lines = [f"layer {l}: {step_comparison.experts_text(experts[l], weights[l])}" for l in order]
        c2.caption(" · ".join(lines))
        top1 = int(experts[layer, 0])
        c2.page_link(session.page_path("expert"), label=f"Profile of its top-1 expert, E{top1} at layer {layer}",
                     query_params={"layer": str(layer), "expert": str(top1)},
                     icon=":material/person_search:")  # fmt: skip


def router_steps(source, step: int | None, view: RoutingTrace, layer: int, i: int, key: str, config: dict) -> None:
    """The selected token's router decision at `layer`, step by step (scores, + bias, top-k, gate weights); drawn
    once a token was picked in these texts."""
    if st.session_state.get(PICKED) != key:
        st.caption("Click a token in the text or a cell of the grid (or set the token index) to see how the router "
                   "chose its experts.")  # fmt: skip
        return
    if view.scores is None:
        st.caption("This trace keeps no router scores over all experts (stored traces of earlier steps, routing "
                   "datasets), so the steps cannot be drawn; its chosen experts and gate weights are in the panel "
                   "above.")  # fmt: skip
        return
    row = int(view.tokens.index[i])
    rec = view.routing[(view.routing["token_row"] == row) & (view.routing["layer"] == layer)]  # chosen, by rank
    recorded = dict(zip(rec["expert"].astype(int), rec["weight"].astype(float)))
    try:
        bias = source.router_biases(step)[layer]
    except ValueError as exc:
        st.caption(f"No router bias at this step: {exc}")
        return
    steps = tables.routing_steps_table(view.scores[row, layer], bias, view.top_k, recorded=recorded)
    share = float(view.token_layer.loc[row * view.n_layers + layer, "shared_share"])
    if bool(rec["bias_flip"].any()):  # recorded by the recorder (it replays group-limited routing without the bias)
        st.warning("The balancing bias changed this choice: an expert was picked only because of its bias.")
    st.plotly_chart(figures.routing.routing_steps_figure(steps, shared_share=share), key="tr_steps", config=config)
    downloads.download_csv(steps, f"token_{i}_layer_{layer}_steps.csv", "Download these steps (CSV)")


def compare_steps(source, step: int | None, docs, doc: str, view: RoutingTrace, layer: int, i: int, config) -> None:
    """The same text at another step (?compare=N): per layer, the share of its tokens whose top-1 expert or top-k
    set changed; the two coloured texts side by side (same width, so a token sits at the same place in both),
    changed tokens boxed; and the token table."""
    others = [s for s in source.steps() if s != step]
    if not others:
        st.caption("This source has a single step: nothing to compare with.")
        return
    options = ["off", *others]
    if st.session_state.get(COMPARE, "off") not in options:  # e.g. the sidebar moved to the compared step
        st.session_state[COMPARE] = "off"
    if st.query_params.get("compare") is not None or st.session_state.get(COMPARE, "off") != "off":
        session.url_param(COMPARE, "compare", choices=options, default="off")  # ?compare=N; absent when off
    other = st.selectbox("Compare with step", options, key=COMPARE,
                         format_func=lambda s: "—" if s == "off" else f"step {s}",
                         help="Route the same text at another step (eval documents: every stored step)")  # fmt: skip
    if other == "off":
        st.query_params.pop("compare", None)  # a copied link then opens without the comparison
        return
    try:
        view_b = document(cache.route_trace(source, other, docs), doc)
    except ValueError as exc:
        st.info(f"Cannot route this text at step {other}: {exc}. The eval documents (Sample → eval: …) are "
                "stored at every step.")  # fmt: skip
        return
    exp_a, w_a = tables.routing_arrays(view.tokens, view.routing, view.n_layers)
    exp_b, w_b = tables.routing_arrays(view_b.tokens, view_b.routing, view_b.n_layers)
    try:
        by_layer = step_comparison.change_by_layer(exp_a, exp_b)
    except ValueError as exc:
        st.warning(f"Cannot compare: {exc}")
        return
    names = (f"step {step}", f"step {other}")
    st.plotly_chart(figures.routing.change_share_bars(by_layer, *names), key="tr_cmp_bars", config=config)
    T = len(view.tokens)
    changed = step_comparison.top1_changed(exp_a, exp_b)[:, layer]
    st.caption(
        f"Denominator: the {T:,} tokens of this document, per layer. Below, layer {layer}: "
        f"{int(changed.sum()):,} of {T:,} tokens have another top-1 expert at step {other} (dashed boxes)."
    )
    marked = set(changed.nonzero()[0].tolist())
    for col, name, v, side in zip(st.columns(2), names, (view, view_b), "ab"):
        with col:
            st.markdown(f"**{name}**" + (" (the sidebar's step)" if v is view else ""))
            show_html(text_html(v, layer, i, marked), f"tr_cmp_text_{side}")
    table = step_comparison.token_table(view.tokens["token_text"].tolist(), exp_a, w_a, exp_b, w_b, layer, names)
    only = st.toggle("Only tokens whose top-1 expert changed", True, key="tr_cmp_only")
    st.dataframe(table[table["top-1 changed"]] if only else table, hide_index=True, height=260)
    downloads.download_csv(table, f"layer_{layer}_step_{step}_vs_{other}.csv", "Download this comparison (CSV)")
