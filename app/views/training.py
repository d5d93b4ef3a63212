"""Training dynamics: this run's curves with the sidebar's step marked, its experts (some highlighted), router
saturation, and routing at the selected step. Comparing runs has its own page (compare.py). A source without a
history but with stored routing at two steps or more (a recorded dataset) gets the last two. The page's parts
are in app/training_ui.py."""

import streamlit as st

from app import cache, session, training_ui

config = session.figure_config()  # every figure's camera button saves the sidebar's format

source, step = session.require_source(need_model=False)
name = {p: n for n, p in cache.discover_sources().items()}.get(source.path, source.name)
st.title("Training dynamics")
has_history = source.capabilities.history
hist, evals = cache.histories(source.path) if has_history else (None, None)
all_steps = source.steps()
if hist is None or hist.empty:
    why = has_history.reason if not has_history else "This run has no training history yet."
    if len(all_steps) < 2 or not source.capabilities.stored_traces:
        st.info(f"This source has no training history. {why}")
        st.stop()
    st.info(f"No training curves: {why} Below: router saturation and routing at its {len(all_steps)} stored steps.")
    hist = None

L = cache.card(source).n_layers
c1, c2, c3, c4 = st.columns([1, 2, 1, 1])
session.layer_param(L, "td_layer")
layer = c1.selectbox("MoE layer", range(L), key="td_layer")
if hist is not None:  # the curves' controls
    view = {
        "smooth": c2.slider("Smoothing (EMA)", 0.0, 0.99, 0.8, key="td_smooth",
                            help="Per training step, every curve; 0 = raw"),
        "log_y": c3.toggle("Log y", key="td_log", help="Losses, shares and biases"),
        "log_vio": c4.toggle("Log y: MaxVio", True, key="td_log_vio", help="On by default: early spikes set no scale"),
    }  # fmt: skip
if len(all_steps) > 1 and step is not None:
    st.session_state["td_ckpt"] = step  # follow the sidebar; moving this slider moves the sidebar too
    st.select_slider("Step", all_steps, key="td_ckpt", on_change=session.copy_key, args=("td_ckpt", session.KEY_STEP),
                     help="Every step with weights or with stored routing")  # fmt: skip
if hist is not None:
    if step is not None:
        st.caption(f"Run **{name}**. The dotted line marks step {step}, chosen here or in the sidebar.")
    training_ui.history_curves(name, hist, evals, layer, step, view, config)
    training_ui.history_experts(hist, layer, step, view, config)

training_ui.saturation(source, step, config)
training_ui.routing_at(source, step, layer, config)
st.page_link(session.page_path("compare"), label="Compare this run with others (final numbers, overlays)", icon="➡️")
