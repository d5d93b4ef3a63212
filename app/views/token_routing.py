"""Token routing: text in; every token coloured by its top-1 expert; the selected token's experts and router steps;
the same text at another step. The page's parts are in app/routing_ui.py."""

import streamlit as st

from analysis import figures
from app import cache, downloads, routing_ui, session, uploads, what_if_panel

config = session.figure_config()  # every figure's camera button saves the sidebar's format

source, step = session.require_source(need_model=False)  # a dataset has no model, but stored documents
cache.warm_model(source, step)  # in the background: the first route finds the model loaded
st.title("Token routing")
if source.capabilities.route_text:
    st.caption(
        "Which expert does every token go to? Paste text, pick a sample, or upload files. " + uploads.LIMITS_TEXT
    )
    docs = routing_ui.input_docs(source)  # stops with a hint when there is no text
    trace, docs, key = routing_ui.route(source, step, docs)  # cut to the token limit; stops when it cannot
else:  # a dataset's documents, a page at a time; stops with the reason for a source without them
    trace, docs, key = routing_ui.stored_page(source, step)
L, E = trace.n_layers, trace.n_experts
clicked = routing_ui.take_clicks(key)  # a click selects a token (a grid cell: its layer too) before the widgets
session.layer_param(L, session.KEY_LAYER)
layer = st.slider("MoE layer", 0, L - 1, key=session.KEY_LAYER) if L > 1 else 0
if clicked.get("expert") is not None:  # a legend chip: that expert's profile at this layer, in this session
    st.switch_page(session.page_path("expert"), query_params={"layer": str(layer), "expert": str(clicked["expert"])})
doc = routing_ui.choose_document(trace)  # ?doc=
view = routing_ui.document(trace, doc)
i = routing_ui.selected_token(len(view.tokens), key)
routing_ui.coloured_text(view, layer, i)
routing_ui.token_panel(view, layer, i, key)

st.subheader("Token × layer grid")
st.plotly_chart(figures.routing.token_layer_grid(view.tokens, view.routing, L, E, selected=(i, layer)),
                key="tr_grid", config=config)  # fmt: skip
st.caption("Hover a cell for the token's experts and gate weights at that layer; click it to select that token "
           "and that layer.")  # fmt: skip

st.subheader("One token, step by step")
routing_ui.router_steps(source, step, view, layer, i, key, config)

st.subheader("Compare with another step")
routing_ui.compare_steps(source, step, docs, doc, view, layer, i, config)

st.subheader("Download the trace")
downloads.trace_downloads(trace)
what_if_panel.show(source, step, docs)  # what-if routing controls (app/what_if_panel.py)
