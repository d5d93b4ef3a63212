"""Causal check: every expert removed in turn; its Δ loss per domain beside its observational specialization,
so a user sees where "specialised" (chosen often for a domain) and "needed" (the loss rises without it) part."""

import streamlit as st

from analysis import specialization
from analysis.causal import charts, compare, stored_sweep
from analysis.causal.ablation import sweep_ablations
from app import cache, causal_cache, downloads, session

config = session.figure_config()  # every figure's camera button saves the sidebar's format

source, step = session.require_source(need_model=False)
st.title("Causal check")
st.caption("Each expert of each MoE layer is removed in turn and the eval documents re-run: Δ loss = next-token "
           "loss with it removed − without, in nats per scored token, per domain, with a 95% CI over documents. "
           "References: all routed experts of a layer, and its shared expert.")  # fmt: skip
why = causal_cache.unavailable(source, step)
trace = None if why else cache.eval_trace(source, step)
if why or trace is None:
    st.info(why or "No eval documents to measure on.")
    st.stop()
st.caption(f"Measured on {cache.eval_docs_note(source)}.")
if source.capabilities.causal.reason:  # a Hugging Face family that cannot do everything says what
    st.caption(source.capabilities.causal.reason)
L, E = trace.n_layers, trace.n_experts
supported = causal_cache.modes(source, step)
modes = {"reroute": "re-route its tokens to the other experts", "zero": "zero its output (keep the choice)"}
modes = {m: text for m, text in modes.items() if m in supported}
mode = st.radio("Remove an expert by", list(modes), format_func=modes.get, horizontal=True, key="ca_mode")
ablations = [ab for ab in sweep_ablations(L, E, mode) if ab.mode in supported]
done = st.session_state.setdefault("ca_done", set())
table_on_disk, errors = causal_cache.stored(source.path, step)
for error in errors:
    st.warning(f"A stored sweep table was left out: {error}")
if all(stored_sweep.lookup(table_on_disk, ab) is not None for ab in ablations):
    st.caption(f"From the sweep stored with the model ({stored_sweep.sweep_path('', step, mode)}, written by "
               "`moe-explorer ablate --all-experts --references --out`): nothing is re-run.")  # fmt: skip
elif (source.path, step, mode) not in done:
    slot = st.container()  # the offer disappears once the sweep runs
    refs = len(ablations) // L - E
    slot.info(f"{len(ablations)} ablations ({L} layers × {E} experts, plus {refs} references per layer) on "
              f"{len(trace.texts)} documents; computed once, then cached for every session.")  # fmt: skip
    if not slot.button("Run the sweep", key="ca_run", type="primary"):
        st.stop()
    done.add((source.path, step, mode))
    st.rerun()
bar = st.progress(0.0, text="Removing experts…")
table = causal_cache.sweep_table(source, step, ablations, lambda i, n: bar.progress(i / n, text=f"Ablation {i} of {n}"))
bar.empty()

if not (trace.tokens["label"].astype(str) != "").any():
    st.info("These documents carry no domain labels: no specialization to compare with.")
    st.dataframe(table, hide_index=True)
    st.stop()
spec = specialization.domain_specialization(trace.experts_array(), trace.tokens, E)
joined = compare.specialization_vs_ablation(spec, table)
st.subheader("Specialization vs Δ loss")
st.caption("One point per (layer, expert, domain). Right = the domain's tokens choose the expert more often than "
           "uniform; up = the domain's loss rises when it is removed. Symbols: "
           + ", ".join(f"{charts.SYMBOLS[i % len(charts.SYMBOLS)]} = layer {i}" for i in range(L)) + ".")  # fmt: skip
st.plotly_chart(charts.specialization_scatter(joined), key="ca_scatter", config=config)
downloads.download_csv(joined, f"specialization_vs_ablation_step{step}_{mode}.csv", key="ca_dl_joined")

st.subheader("Do the domain experts matter for their domain?")
top = compare.disagreements(joined)
st.markdown(compare.agreement_sentence(top, joined["label"].nunique()))
number = st.column_config.NumberColumn
st.dataframe(top, hide_index=True, key="ca_top", column_config={
    "ratio": number("specialization (× uniform)", format="%.2f"), "delta": number("Δ loss", format="%+.4f"),
    "lo": number("CI low", format="%+.4f"), "hi": number("CI high", format="%+.4f"),
    "rank_delta": number("rank of Δ in its layer"), "agrees": st.column_config.CheckboxColumn("agrees")})  # fmt: skip

st.subheader("References")
refs = table[table["mode"].isin(["layer", "shared"])]
st.dataframe(refs.drop(columns=["expert", "mode"]), hide_index=True, key="ca_refs")
downloads.download_csv(table, f"ablation_sweep_step{step}_{mode}.csv", "Download every ablation (CSV)", key="ca_dl")
