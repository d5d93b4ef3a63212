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
    # on request: the first ablation re-runs the eval documents (seconds on a CPU), too slow for every page switch
    if not st.toggle("Measure it: remove this expert and re-run the eval documents", key="ex_effect"):
        st.page_link(
            session.page_path("causal"), label="Every expert: specialization vs Δ loss", icon=":material/science:"
        )
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
    expert_lens(source, step, layer, expert)


def expert_lens(source, step: int | None, layer: int, expert: int) -> None:
    """The next tokens the expert's output pushes up and down (analysis.causal.logit_lens), on request."""
    if not st.toggle("Logit lens: the next tokens its output promotes and suppresses", key="ex_lens"):
        return
    with st.spinner(f"Projecting layer {layer}'s expert outputs onto the vocabulary…"):
        table = causal_cache.lens_table(source, step, layer)
    mine = table[table["expert"] == expert]
    if mine.empty:
        st.caption(f"E{expert} was chosen by no token of these documents.")
        return
    n_docs = len(source.eval_docs()[:: causal_cache.LENS_DOC_STRIDE])
    st.caption(
        f"Mean change of each next-token logit from E{expert}'s weighted output (final norm's scale frozen, "
        f"centred over the vocabulary), over the {int(mine['n_tokens'].iloc[0]):,} tokens that chose it in "
        f"{n_docs} eval documents. Direct effect only: what later layers make of it is what ablation measures."
    )
    left, right = st.columns(2)
    cols = {"token_text": "token", "logit_change": st.column_config.NumberColumn("Δ logit", format="%+.3f")}
    for col, direction in ((left, "promotes"), (right, "suppresses")):
        col.markdown(f"**{direction.capitalize()}**")
        rows = mine[mine["direction"] == direction][["token_text", "logit_change"]]
        col.dataframe(rows, hide_index=True, key=f"ex_lens_{direction}", column_config=cols)
