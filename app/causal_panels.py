"""Causal numbers drawn inside other pages: the expert profile's "what removing it does" block."""

from __future__ import annotations

import streamlit as st

from analysis import figures
from analysis.causal.ablation import Ablation
from analysis.causal.compare import effect_sentence
from app import causal_cache, session


def expert_effect(source, step: int | None, layer: int, expert: int) -> None:
    """Δ loss per domain when `expert` of `layer` is removed (its tokens re-routed), on the eval documents."""
    st.subheader("What removing it does")
    why = causal_cache.unavailable(source, step)
    if why:
        st.caption(why)
        return
    with st.spinner(f"Removing E{expert} at layer {layer} and re-running the eval documents…"):
        domains = causal_cache.ablation_domains(source, step, Ablation(layer, "reroute", expert))
    sentence = effect_sentence(layer, expert, domains, "reroute")
    st.markdown(figures.profile.summary_html(sentence), unsafe_allow_html=True)
    st.caption(
        "Δ loss = next-token loss with the expert removed − without, in nats per scored token (every token "
        "of a window but its first), averaged over each domain's tokens; 95% CI from resampling documents. "
        "Removed = no token may choose it; each re-chooses among the other experts, weights renormalised. "
        "Observational shares above say how often it is chosen; this says how much the loss needs it."
    )
    st.page_link(session.page_path("causal"), label="Every expert: specialization vs Δ loss", icon=":material/science:")
