"""Expert profile: what one expert at one MoE layer takes, prefers and works with, at the selected step
(?layer=L&expert=E), from the eval trace at that step, and its load share and bias over training."""

import streamlit as st

from analysis import figures, profile, tables
from app import cache, causal_panels, downloads, session

config = session.figure_config()  # every figure's camera button saves the sidebar's format

source, step = session.require_source(need_model=False)  # a dataset has no model, but routing to profile
st.title("Expert profile")
agg = cache.aggregates(source, step)  # shares, partners, flow: every token of a dataset (DuckDB), else the trace
if agg is None:
    st.info(source.capabilities.route_text.reason)
    st.stop()
trace = cache.eval_trace(source, step)
if trace is None:
    st.info("No eval documents to profile the experts on.")
    st.stop()
L, E, K = trace.n_layers, trace.n_experts, trace.top_k
session.layer_param(L, "ex_layer")
session.url_param("ex_expert", "expert", hi=E - 1)  # a link (legend chip, heatmap cell) names the expert
c1, c2 = st.columns(2)
layer = c1.selectbox("MoE layer", range(L), key="ex_layer")
expert = c2.selectbox("Expert", range(E), key="ex_expert", format_func=lambda e: f"E{e}")

experts = trace.experts_array()
weights = trace.routing["weight"].to_numpy().reshape(experts.shape)
color = figures.colors.expert_colors(E)[expert]
T = agg.n_tokens
share = profile.Share(int(agg.load()[layer, expert]), int(agg.top1_load()[layer, expert]), T, K, E)
lift = profile.token_lift(experts, trace.tokens, layer, expert)
domains = profile.domain_preference(experts, trace.tokens, layer, expert, E)
sentence = profile.summary_sentence(layer, expert, share, domains, lift)
st.markdown(figures.profile.summary_html(sentence), unsafe_allow_html=True)
st.caption(f"{T:,} tokens of {agg.n_docs:,} documents at step {step}. A routing is one of a token's "
           f"top-{K} choices: {T * K:,} routings at this layer.")  # fmt: skip
if trace.n_tokens != T:
    st.caption(f"Preferred tokens, domains and examples: the first {trace.n_tokens:,} tokens "
               f"({len(trace.texts)} documents).")  # fmt: skip
m1, m2, m3 = st.columns(3)
quiet = dict(delta_color="off", delta_arrow="off")  # the deltas are denominators, not changes
m1.metric("Share of routings", f"{share.share:.1%}", f"uniform {share.uniform:.1%}", **quiet)
m2.metric("Tokens with it in their top-k", f"{share.routings:,}", f"{share.token_share:.1%} of {T:,} tokens "
          f"(uniform {K / E:.1%})", **quiet)  # fmt: skip
m3.metric("Tokens with it as top-1", f"{share.top1:,}", f"{share.top1 / T:.1%} of tokens (uniform {1 / E:.1%})",
          **quiet)  # fmt: skip
causal_panels.expert_effect(source, step, layer, expert)  # Δ loss when it is removed

hist = cache.histories(source.path)[0] if source.capabilities.history else None
if hist is not None and len(series := profile.history_series(hist, layer, expert)):
    st.subheader("Over training")
    st.plotly_chart(
        figures.profile.history_figure(series, share.uniform, step, expert, color),
        key="ex_history",
        config=config,
    )

st.subheader("Tokens it prefers")
st.caption(f"Ranked by lift = P(E{expert} | token) ÷ P(E{expert}): the share of the token's occurrences "
           f"routed to E{expert} over the share of all tokens routed to it; tokens seen ≥ {profile.MIN_COUNT} "
           "times.")  # fmt: skip
number = st.column_config.NumberColumn
pct, times, name = number(format="percent"), number(format="%.2f×"), number(format="E%d")
st.dataframe(lift.head(15), hide_index=True, key="ex_lift", column_config={
    "p_expert_given_token": number(f"P(E{expert} | token)", format="percent"),
    "p_expert": number(f"P(E{expert})", format="percent"), "lift": times,
    "pmi": number(format="%.2f bits")})  # fmt: skip
downloads.download_csv(lift, f"lift_layer{layer}_E{expert}.csv")

st.subheader("Domains it prefers")
if len(domains):
    st.plotly_chart(figures.profile.domain_figure(domains, expert, color), key="ex_domains", config=config)
else:
    st.caption("These documents carry no domain labels.")

st.subheader("In context")
rows = profile.example_rows(experts, weights, trace.tokens, layer, expert, lift["token_id"].head(8).tolist())
st.markdown(figures.profile.kwic_html(tables.keyword_in_context(trace.tokens, trace.texts, rows), color),
            unsafe_allow_html=True)  # fmt: skip

left, right = st.columns(2)
with left:
    st.subheader("Chosen together with")
    partners = profile.coactivation_partners(agg.coactivation(layer), 0, expert)  # (1, E, E): this layer
    st.caption(f"Of the {share.routings:,} tokens routed to E{expert}, the share that also picked each partner.")
    st.dataframe(partners, hide_index=True, key="ex_partners", column_config={
        "partner": name, "p_partner_given_expert": number(f"P(partner | E{expert})", format="percent"),
        "lift": times})  # fmt: skip
with right:
    st.subheader("Across layers (top-1)")
    flow = agg.flow()
    for direction, other in (("previous", layer - 1), ("next", layer + 1)):
        if 0 <= other < L:
            st.caption(f"Tokens with top-1 E{expert} here: their top-1 at layer {other} (baseline: all tokens)")
            st.dataframe(profile.layer_flow(flow, layer, expert, direction), hide_index=True, key=f"ex_{direction}",
                         column_config={"expert": name, "share": pct, "baseline": pct, "lift": times})  # fmt: skip
