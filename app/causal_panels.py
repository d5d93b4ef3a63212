"""Causal numbers drawn inside other pages: the expert profile's "what removing it does" block."""

from __future__ import annotations

import streamlit as st

from analysis import figures
from analysis.causal.ablation import Ablation
from analysis.causal.compare import effect_sentence
from app import cache, causal_cache, session


def expert_effect(source, step: int | None, layer: int, expert: int) -> None:
    """Δ loss per domain when `expert` of `layer` is removed (its tokens re-routed; where the model cannot
    re-route, its output zeroed, with the reason), on the source's eval documents (`cache.eval_docs`)."""
    st.subheader("What removing it does")
    why = causal_cache.unavailable(source, step)
    if why:
        st.caption(why)
        return
    docs_word = "eval documents" if source.capabilities.eval_docs else "built-in samples"
    # on request: the first ablation re-runs the eval documents (seconds on a CPU), too slow for every page switch
    if not st.toggle(f"Measure it: remove this expert and re-run the {docs_word}", key="ex_effect"):
        st.page_link(
            session.page_path("causal"), label="Every expert: specialization vs Δ loss", icon=":material/science:"
        )
        return
    mode = "reroute" if "reroute" in causal_cache.modes(source, step) else "zero"
    with st.spinner(f"Removing E{expert} at layer {layer} and re-running the {docs_word}…"):
        domains = causal_cache.ablation_domains(source, step, Ablation(layer, mode, expert))
    sentence = effect_sentence(layer, expert, domains, mode)
    st.markdown(figures.profile.summary_html(sentence), unsafe_allow_html=True)
    how = (
        "Removed = no token may choose it; each re-chooses among the other experts, weights renormalised."
        if mode == "reroute"
        else f"Removed = its gate weight set to 0, the choice kept ({source.capabilities.causal.reason})."
    )
    st.caption(
        "Δ loss = next-token loss with the expert removed − without, in nats per scored token (every token "
        "of a window but its first), averaged over each domain's tokens; 95% CI from resampling documents. "
        f"{how} Measured on {cache.eval_docs_note(source)}. "
        "Observational shares above say how often it is chosen; this says how much the loss needs it."
    )
    st.page_link(session.page_path("causal"), label="Every expert: specialization vs Δ loss", icon=":material/science:")
    expert_lens(source, step, layer, expert)


def expert_lens(source, step: int | None, layer: int, expert: int) -> None:
    """The next tokens the expert's output pushes up and down (analysis.causal.logit_lens), on request."""
    if not st.toggle("Logit lens: the next tokens its output promotes and suppresses", key="ex_lens"):
        return
    why = source.causal_model(step).lens_reason
    if why:
        st.caption(why)
        return
    with st.spinner(f"Projecting layer {layer}'s expert outputs onto the vocabulary…"):
        table = causal_cache.lens_table(source, step, layer)
    mine = table[table["expert"] == expert]
    if mine.empty:
        st.caption(f"E{expert} was chosen by no token of these documents.")
        return
    n_docs = len(causal_cache.lens_docs(source))
    docs_word = "eval documents" if source.capabilities.eval_docs else "built-in samples"
    st.caption(
        f"Mean change of each next-token logit from E{expert}'s weighted output (final norm's scale frozen, "
        f"centred over the vocabulary), over the {int(mine['n_tokens'].iloc[0]):,} tokens that chose it in "
        f"{n_docs} {docs_word}. Direct effect only: what later layers make of it is what ablation measures."
    )
    left, right = st.columns(2)
    cols = {"token_text": "token", "logit_change": st.column_config.NumberColumn("Δ logit", format="%+.3f")}
    for col, direction in ((left, "promotes"), (right, "suppresses")):
        col.markdown(f"**{direction.capitalize()}**")
        rows = mine[mine["direction"] == direction][["token_text", "logit_change"]]
        col.dataframe(rows, hide_index=True, key=f"ex_lens_{direction}", column_config=cols)
