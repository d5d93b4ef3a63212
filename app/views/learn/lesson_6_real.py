"""Lesson 6: the toy's quantities on the real model, with links into the explorer pages preselected."""

from urllib.parse import urlencode

import numpy as np
import streamlit as st
from streamlit.errors import StreamlitAPIException

from analysis import figures, teaching
from app import cache, learn_state, session

config = session.figure_config()  # every figure's camera button saves the sidebar's format

P = "l6"
SPECS = {"layer": learn_state.Spec(0, 0, 63)}
LINKS = [  # (page file / url path, label, what to look at)
    ("token_routing", "Token routing", "every token's scores, + bias, top-k and gate weights: lesson 2 on real text"),
    ("heatmaps", "Expert heatmaps", "the load of each expert per layer and what each expert specialises in"),
    ("training", "Training dynamics", "MaxVio_batch and the biases over training: lesson 3 at full scale"),
]


def find_run() -> tuple[str | None, str | None]:
    """(display name, path) of the run selected in the sidebar, or the first run found; (None, None) if none."""
    try:
        runs = cache.discover_sources()
        path = session.current()[0]
    except (ImportError, OSError, ValueError):
        return None, None
    names = {p: n for n, p in runs.items()}
    if path in names:
        return names[path], path
    return next(iter(runs.items()), (None, None))


params = learn_state.lesson_header("From toy to real", P, SPECS)
slot = st.container()  # the real model's load per layer goes first
name, path = find_run()
facts = teaching.model_facts(path) if path else None  # the numbers come from the model's config
st.markdown(teaching.real_model_sentence(facts) + " The same bias rule keeps the load balanced during training.")
row = teaching.last_history_row(path) if path else None
layer = int(params["layer"])
if row is None or not row.get("load"):
    st.info(
        "No trained run with a training history was found, so the real numbers can't be shown here. "
        "Train one on the **Train** page (or start the app with `moe-explorer app --run RUN`); the links below "
        "open the explorer pages anyway."
    )
    learn_state.main_figure(P, slot, {}, config)  # no figure, but the teacher notes
else:
    load_LE = np.asarray(row["load"], dtype=float)
    st.session_state[learn_state.widget_key(P, "layer")] = min(layer, len(load_LE) - 1)  # fit this model's layers
    st.number_input("MoE layer", 0, len(load_LE) - 1, key=learn_state.widget_key(P, "layer"))
    layer = int(learn_state.get_params(P, SPECS)["layer"])
    st.text(f"Run {name}, training step {row.get('step', '?')} (the last logged batch).")  # plain text: a user string
    m = st.columns(3)
    m[0].metric(f"MaxVio_batch, layer {layer}", f"{teaching.maxvio(load_LE[layer]):.3f}")
    bias = np.asarray(row.get("bias") or [[0.0]], dtype=float)
    if layer < len(bias):
        m[1].metric("bias range", f"{bias[layer].min():+.4f} … {bias[layer].max():+.4f}")
    m[2].metric("experts", load_LE.shape[1])
    learn_state.main_figure(P, slot, {"l6_load": figures.heatmaps.load_heatmap(load_LE)}, config)

st.subheader("Open the real thing")
for page, label, what in LINKS:
    query = {"layer": str(layer)} | ({"run": name} if name else {})
    try:
        st.page_link(f"views/{page}.py", label=f"{label} (layer {layer})", query_params=query)
    except StreamlitAPIException:  # outside the app's navigation (e.g. this page opened alone)
        st.markdown(f"[{label} (layer {layer})]({page}?{urlencode(query)})")
    st.caption(what)

learn_state.predict_then_reveal(P)
learn_state.write_params(P, SPECS)
