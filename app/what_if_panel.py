"""What-if routing controls (bias / force an expert / top-k) under Token routing: the user's text re-run with
a changed router, token by token (analysis.causal.what_if)."""

from __future__ import annotations

import streamlit as st

from analysis.causal.what_if import display_table, parse_bias, what_if_summary
from app import causal_cache, downloads
from moe_core.moe import RoutingOverride

KINDS = {"bias": "add a bias", "force": "force an expert", "top_k": "change top-k"}


def show(source, step: int | None, docs: list) -> None:
    """The what-if block for `docs` ((doc_id, label, text)) at `step`; a caption when the source cannot."""
    st.subheader("What if the router chose differently?")
    if not source.capabilities.causal:
        st.caption(source.capabilities.causal.reason)
        return
    try:
        target = source.causal_model(step)
    except ValueError as exc:
        st.caption(str(exc))
        return
    if target.what_if_reason:  # a Hugging Face family whose router rule is not reproduced
        st.caption(target.what_if_reason)
        return
    L, E, K = target.n_layers, target.n_experts, target.top_k
    with st.form("wi_form"):
        c1, c2 = st.columns(2)
        layers = c1.multiselect("MoE layers to change", range(L), default=[0], key="wi_layers")
        kind = c2.radio("Change", list(KINDS), format_func=KINDS.get, horizontal=True, key="wi_kind")
        c1, c2, c3 = st.columns(3)
        tip = "added to the scores used to choose; gate weights still come from the scores"
        bias_text = c1.text_input("Bias (EXPERT:VALUE, …)", key="wi_bias", placeholder="3:+0.1, 5:-0.2", help=tip)
        forced = c2.selectbox("Forced expert", range(E), key="wi_force", format_func=lambda e: f"E{e}")
        top_k = c3.number_input("Top-k", 1, E, value=K, key="wi_topk")
        applied = st.form_submit_button("Apply")
    if applied:
        st.session_state["wi_applied"] = True
    if not st.session_state.get("wi_applied") or not layers:
        st.caption("Pick layers and a change, then Apply: each token's experts, gate weights and next-token loss "
                   "are shown with the change and without.")  # fmt: skip
        return
    try:
        if kind == "bias":
            override = RoutingOverride(bias=parse_bias(bias_text, E))
        else:
            override = RoutingOverride(forced=int(forced)) if kind == "force" else RoutingOverride(top_k=int(top_k))
        with st.spinner("Re-running with the changed router…"):
            table = causal_cache.what_if_table(source, step, docs, {int(layer): override for layer in layers})
    except ValueError as exc:
        st.error(f"Cannot apply this change: {exc}")
        return
    summary = what_if_summary(table)
    st.dataframe(summary, hide_index=True, key="wi_summary", column_config={
        "share_changed": st.column_config.NumberColumn("share of tokens changed", format="percent"),
        "mean_delta_loss": st.column_config.NumberColumn("mean Δ loss (nats/token)", format="%+.4f")})  # fmt: skip
    only = st.toggle("Only tokens whose experts changed", value=True, key="wi_only")
    shown = display_table(table)
    st.dataframe(shown[shown["changed"]] if only else shown, hide_index=True, key="wi_table")
    st.caption("Δ loss = loss with the change − without, of predicting this token (nats); a window's first "
               "token has none. A change at one layer also changes what later layers see.")  # fmt: skip
    downloads.download_csv(shown, "what_if.csv", "Download the what-if table (CSV)", key="wi_dl")
