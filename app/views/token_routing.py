"""Token routing: text in; every token coloured by its top-1 expert; one token's routing step by step."""

import streamlit as st

from analysis import figures, tables
from app import cache, downloads, session, uploads, what_if_panel

config = session.figure_config()  # every figure's camera button saves the sidebar's format

source, step = session.require_source()
cache.warm_model(source, step)  # in the background: the first route finds the model loaded
st.title("Token routing")
st.caption("Which expert does every token go to? Paste text, pick a sample, or upload files. " + uploads.LIMITS_TEXT)

session.url_mode("tr_source", "Sample", "tr_sample", "sample")  # a link with ?sample= opens the sample
input_kind = st.radio("Input", ["Paste text", "Sample", "Upload files"], horizontal=True, key="tr_source")
docs = []
if input_kind == "Paste text":
    if session.KEY_TEXT not in st.session_state:  # Streamlit drops a widget's state on another page: restore it
        st.session_state[session.KEY_TEXT] = st.session_state.get("tr_text_kept", "")
    text = st.text_area("Text", key=session.KEY_TEXT, height=140, placeholder="Paste any text or code here…",
                        max_chars=uploads.MAX_TEXT_CHARS)  # fmt: skip
    st.session_state["tr_text_kept"] = text
    docs = [("input", "input", text)] if text.strip() else []
elif input_kind == "Sample":
    samples = uploads.samples(source)
    session.url_param("tr_sample", "sample", choices=list(samples))
    name = st.selectbox("Sample", list(samples), key="tr_sample", help="built-in texts and the run's eval documents")
    docs = [("sample", name, samples[name])]
else:
    files = st.file_uploader("Files", type=uploads.UPLOAD_TYPES, accept_multiple_files=True, help=uploads.LIMITS_TEXT,
                             max_upload_size=uploads.UPLOAD_MAX_MB)  # fmt: skip
    good, errors = uploads.read_uploads(files)
    for message in errors:
        st.error(message)
    uploads.show_notices(good)
    docs = uploads.docs_from_uploads(good)
if not docs:
    st.info(uploads.NO_FILES_TEXT if input_kind == "Upload files" else "Enter some text to see its routing.")
    st.stop()

docs, cut = uploads.limit_docs(source, docs)
if cut:
    st.warning(f"Only the first {uploads.MAX_TOKENS:,} tokens are routed.")
try:
    trace = cache.route_trace(source, step, docs)
except ValueError as exc:
    st.error(f"Could not route this text: {exc}")
    st.stop()

L, E = trace.n_layers, trace.n_experts


def pick_grid_cell():  # a click on the grid selects its token (x) AND its layer (y), before the widgets are drawn
    points = st.session_state["tr_grid"].selection.points
    if points and points[0].get("x") is not None and points[0].get("y") is not None:
        st.session_state["tr_token"], st.session_state[session.KEY_LAYER] = int(points[0]["x"]), int(points[0]["y"])


session.layer_param(L, session.KEY_LAYER)
layer = st.slider("MoE layer", 0, L - 1, key=session.KEY_LAYER) if L > 1 else 0
doc_ids = list(trace.texts)
doc = st.selectbox("Document", doc_ids, key="tr_doc") if len(doc_ids) > 1 else doc_ids[0]
tokens = trace.tokens[trace.tokens["doc_id"] == doc]
routing = trace.routing[trace.routing["token_row"].isin(tokens.index)]
top1 = tables.top1_table(routing, layer)
summary = tables.routing_summary(routing[routing["layer"] == layer]).droplevel(1)
counts = top1.value_counts().reindex(range(E), fill_value=0).tolist()
clicks = st.components.v2.component("moe_token_clicks", js=figures.routing.CLICK_JS)
clicked = clicks(key="tr_clicks", data={"css": figures.routing.TOKEN_CSS}, on_token_change=lambda: None,
                 on_expert_change=lambda: None)  # fmt: skip
if clicked.get("expert") is not None:  # a legend chip: that expert's profile at this layer, in this session
    st.switch_page(session.page_path("expert"), query_params={"layer": str(layer), "expert": str(clicked["expert"])})
if clicked.get("token") is not None:  # a token in the text: that token, at the layer shown
    st.session_state["tr_token"] = int(clicked["token"])
session.url_param("tr_token", "token", hi=len(tokens) - 1)  # ?token=, kept inside this document
tips = {row: f"token {i} · layer {layer}: {summary.get(row, '')}" for i, row in enumerate(tokens.index)}
st.markdown(figures.routing.legend_html(E, counts=counts, layer=layer), unsafe_allow_html=True)
text_html = figures.routing.colored_text_html(trace.texts[doc], tokens, top1, E, tips, st.session_state["tr_token"])
st.markdown(text_html, unsafe_allow_html=True)
st.caption(f"{len(tokens):,} tokens · layer {layer} · legend: top-1 tokens per expert (click a chip for its "
           "profile) · hover or tap a token for its experts and gate weights, click it for its routing "
           "steps")  # fmt: skip

st.subheader("Token × layer grid")
st.plotly_chart(figures.routing.token_layer_grid(tokens, routing, L, E), key="tr_grid", on_select=pick_grid_cell,
                selection_mode="points", config=config)  # fmt: skip

st.subheader("One token, step by step")
i = st.number_input("Token index (click a token or a grid cell)", 0, len(tokens) - 1, key="tr_token")
row = int(tokens.index[i])
st.text(f"Token {i}: {tables.short_token(tokens.loc[row, 'token_text'])!r} at layer {layer}")  # plain text: user string
expert = int(top1.get(row, 0))
st.page_link(session.page_path("expert"), label=f"Profile of its top-1 expert, E{expert} at layer {layer}",
             query_params={"layer": str(layer), "expert": str(expert)}, icon=":material/person_search:")  # fmt: skip
if trace.scores is not None:
    rec = routing[(routing["token_row"] == row) & (routing["layer"] == layer)]  # what the model chose, by rank
    recorded = dict(zip(rec["expert"].astype(int), rec["weight"].astype(float)))
    bias = source.router_biases(step)[layer]
    steps = tables.routing_steps_table(trace.scores[row, layer], bias, trace.top_k, recorded=recorded)
    share = float(trace.token_layer.loc[row * L + layer, "shared_share"])
    flip = bool(rec["bias_flip"].any())
    if flip:  # recorded by the recorder (it replays group-limited routing without the bias)
        st.warning("The balancing bias changed this choice: an expert was picked only because of its bias.")
    st.plotly_chart(figures.routing.routing_steps_figure(steps, shared_share=share), key="tr_steps", config=config)
    downloads.download_csv(steps, f"token_{i}_layer_{layer}_steps.csv", "Download these steps (CSV)")

st.subheader("Download the trace")
downloads.trace_downloads(trace)
what_if_panel.show(source, step, docs)  # what-if routing controls (app/what_if_panel.py)
