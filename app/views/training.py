"""Training dynamics: this run's curves with the sidebar's step marked, its experts (some highlighted), router
saturation, and routing at the selected step. Comparing runs has its own page (compare.py)."""

import streamlit as st

from analysis import figures, tables
from app import cache, downloads, session

config = session.figure_config()  # every figure's camera button saves the sidebar's format

source, step = session.require_source(need_model=False)
name = {p: n for n, p in cache.discover_sources().items()}.get(source.path, source.name)
st.title("Training dynamics")
if not source.capabilities.history:
    st.info(f"This source has no training history. {source.capabilities.history.reason}")
    st.stop()
hist, evals = cache.histories(source.path)
if hist is None or hist.empty:
    st.info("This run has no training history yet.")
    st.stop()

L = cache.card(source).n_layers
c1, c2, c3, c4 = st.columns([1, 2, 1, 1])
session.layer_param(L, "td_layer")
layer = c1.selectbox("MoE layer", range(L), key="td_layer")
smooth = c2.slider("Smoothing (EMA)", 0.0, 0.99, 0.8, key="td_smooth", help="Per training step, every curve; 0 = raw")
log_y = c3.toggle("Log y", key="td_log", help="Losses, shares and biases")
log_vio = c4.toggle("Log y: MaxVio", True, key="td_log_vio", help="On by default: early spikes set no scale")
if len(all_steps := source.steps()) > 1 and step is not None:
    st.session_state["td_ckpt"] = step  # follow the sidebar; moving this slider moves the sidebar too
    st.select_slider("Step", all_steps, key="td_ckpt", on_change=session.copy_key, args=("td_ckpt", session.KEY_STEP),
                     help="Every step with weights or with a stored trace of the eval documents")  # fmt: skip
if step is not None:
    st.caption(f"Run **{name}**. The dotted line marks step {step}, chosen here or in the sidebar.")

columns = st.columns(2)
curves = figures.training.run_figures(name, hist, evals, layer, smooth, log_y, log_vio, marker_step=step)
for n, (key, fig) in enumerate(curves.items()):  # loss and validation left, MaxVio and aux losses right
    columns[n % 2].plotly_chart(fig, key=f"td_{key}", config=config)
downloads.download_csv(lambda: tables.history_table(hist), "history.csv", "Download the whole history (CSV)")

st.subheader(f"Experts at layer {layer}")
steps, load = tables.history_array(hist, "load")
E = load.shape[2] if load.ndim == 3 else 0
highlight = st.multiselect("Experts in colour", range(E), tables.top_bottom_experts(load[:, layer], 2) if E else [],
                           format_func=lambda e: f"E{e}", key=f"td_highlight_{layer}",
                           help="The rest are thin grey lines. Clear it to colour every expert.")  # fmt: skip
st.caption("Preset: the 2 experts with the largest and the 2 with the smallest share of routings at the last "
           "logged step. Click a legend entry to hide a line; double-click to show it alone.")  # fmt: skip
c1, c2 = st.columns(2)
ex = dict(highlight=highlight or None, log_y=log_y, smooth=smooth, marker_step=step)
c1.plotly_chart(figures.training.load_share_curves(hist, layer, **ex), key="td_share", config=config)
c2.plotly_chart(figures.training.bias_curves(hist, layer, **ex), key="td_bias", config=config)
if E:
    table = tables.matrix_frame(load[:, layer, :], "step", "expert", "load", rows=steps)
    downloads.download_csv(table, f"load_layer{layer}.csv", "Download routings per expert and step (CSV)")

st.subheader("Router saturation")
try:
    sat = cache.router_saturation(source)
except ValueError as exc:
    st.warning(f"Cannot compare the stored traces: {exc}")
    sat = None
if sat is not None and sat["step"].nunique() > 1:
    st.plotly_chart(figures.training.saturation_curves(sat, marker_step=step), key="td_sat", config=config)
    st.caption(f"Per layer, the share of the eval documents' tokens whose top-1 expert (solid) or whose whole top-k "
               f"set (dashed) at each stored step is the one chosen at step {sat['step'].max()}.")  # fmt: skip
    downloads.download_csv(sat, "router_saturation.csv")
else:
    st.caption("Saturation needs stored eval traces at two steps or more.")

st.subheader(f"Routing at step {step}")
trace = cache.eval_trace(source, step) if step is not None else None
if trace is not None:
    c1, c2 = st.columns(2)
    load_LE = tables.load_matrix(trace.routing, trace.n_layers, trace.n_experts)
    c1.plotly_chart(figures.heatmaps.load_heatmap(load_LE), key="td_load", config=config)
    spec = cache.specialization_tables(cache.trace_key(source, step, trace), trace)
    if spec is not None and layer < trace.n_layers:
        ratio = tables.ratio_pivot(spec[0], layer)
        c2.plotly_chart(figures.heatmaps.specialization_heatmap(ratio), key="td_spec", config=config)
    st.page_link(session.page_path("heatmaps"), label=f"More views of step {step} on Expert heatmaps", icon="➡️")

st.page_link(session.page_path("compare"), label="Compare this run with others (final numbers, overlays)", icon="➡️")
