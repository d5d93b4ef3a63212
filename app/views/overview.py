"""Overview / model card: the source in use, its architecture, parameters, training summary, and the pages."""

import numpy as np
import streamlit as st

from app import cache, session

source, step = session.require_source(need_model=False)
card, capabilities = cache.card(source), source.capabilities
st.title(card.title)
st.markdown(
    "See how a Mixture-of-Experts language model routes tokens: which expert every token goes to, in every "
    "layer, how balanced the experts are, and how routing changes over training."
)
at_step = f"checkpoint step **{step}**" if step is not None else "no checkpoint"
st.caption(f"**{source.name}** · {at_step} · `{source.path}` (change both in the sidebar)")

st.subheader("Architecture")
c = st.columns(max(len(card.metrics), 1))
for column, (label, value) in zip(c, card.metrics):
    column.metric(label, value)
st.table({"setting": [field for field, _ in card.rows], "value": [value for _, value in card.rows]})

st.subheader("Training summary")
if not capabilities.history:
    st.info(f"No training history: {capabilities.history.reason}")
else:
    hist, ev = cache.histories(source.path)
    c = st.columns(4)
    c[0].metric("Steps", f"{int(hist['step'].max()):,}" if "step" in hist and len(hist) else "–")
    c[1].metric("Tokens", f"{int(hist['tokens'].max()):,}" if "tokens" in hist and len(hist) else "–")
    if "val_loss" in ev and len(ev):
        last = ev.iloc[-1]
        loss = f"{last['val_loss']:.3f} / {last.get('val_ppl', np.exp(last['val_loss'])):.1f}"
        c[2].metric("Final val loss / PPL", loss)
        vio = last.get("maxvio_global")
        c[3].metric("MaxVio_global (mean of layers)", f"{np.mean(vio):.3f}" if vio is not None else "–")
    else:
        c[2].metric("Final val loss / PPL", "–")
        c[3].metric("MaxVio_global", "–")

st.subheader("Pages")
st.markdown(
    "- **Token routing**: paste or upload text; each token coloured by its top-1 expert, any token step by step.\n"
    "- **Expert heatmaps**: load per layer, domain specialization, top tokens, co-activation, cross-layer flow.\n"
    "- **Expert profile**: one expert's share, preferred tokens (by lift) and domains, contexts, partners.\n"
    "- **Training dynamics**: load balance, MaxVio, biases, losses and router saturation over training.\n"
    "- **Compare runs**: final numbers per run and strategy, curves overlaid.\n"
    "- **Router geometry**: PCA/UMAP of the router inputs; select points to read their tokens.\n"
    "- **Train**: start a small training run in the background and watch its curves.\n"
    "- **Learn**: short lessons on how MoE routing works."
)
