"""Training dynamics: load balance, MaxVio, biases and losses over training; a checkpoint slider; run overlay."""

import streamlit as st

from analysis import figures, sources, tables
from app import cache, downloads, session

source, step = session.require_source(need_model=False)
path = source.path
runs = cache.discover_sources()
names = {p: n for n, p in runs.items()}
st.title("Training dynamics")
if not source.capabilities.history:
    st.info(f"This source has no training history. {source.capabilities.history.reason}")
    st.stop()
hist = source.history()
if hist.empty:
    st.info("This run has no training history yet.")
    st.stop()

L = source.card().n_layers
c1, c2, c3 = st.columns([1, 3, 1])
session.layer_param(L, "td_layer")
layer = c1.selectbox("MoE layer", range(L), key="td_layer")
study = [p for p in sources.study_runs() if p != path and p in names]
if study:  # one click to compare the balancing strategies (docs/FINDINGS.md)
    c2.button(
        "Overlay the balancing-strategy study",
        on_click=lambda: st.session_state.update(td_runs=study),
        help="Seven small runs with identical data, seed and steps; only the balancing differs.",
    )
others = c2.multiselect("Overlay runs", [p for p in runs.values() if p != path], format_func=names.get, key="td_runs")
smooth = c3.slider("Smoothing", 0.0, 0.99, 0.8, key="td_smooth")
overlaid = {names.get(p, p): cache.get_source(p) for p in [path, *others]}
histories = {n: h for n, s in overlaid.items() if (h := s.history()) is not None}  # None: no history
evals = {n: e for n, s in overlaid.items() if (e := s.eval_history()) is not None}

loss = {n: (h["step"].to_numpy(), h["loss"].to_numpy()) for n, h in histories.items() if "loss" in h}
val = {n: (e["step"].to_numpy(), e["val_loss"].to_numpy()) for n, e in evals.items() if "val_loss" in e}
vio = {n: tables.maxvio_series(h, layer) for n, h in histories.items()}
c1, c2 = st.columns(2)
with c1:
    st.plotly_chart(figures.training.run_curves(loss, "Training loss", "loss", smooth), key="td_loss")
    downloads.download_csv(tables.series_frame(loss, "loss"), "train_loss.csv")
with c2:
    st.plotly_chart(figures.training.run_curves(vio, f"MaxVio_batch, layer {layer}", "MaxVio", smooth), key="td_vio")
    downloads.download_csv(tables.series_frame(vio, "maxvio_batch"), f"maxvio_layer{layer}.csv")
if val:
    st.plotly_chart(figures.training.run_curves(val, "Validation loss", "val loss"), key="td_val")
    downloads.download_csv(tables.series_frame(val, "val_loss"), "val_loss.csv")

st.subheader(f"Run {names.get(path, path)}: experts at layer {layer}")
c1, c2 = st.columns(2)
with c1:
    st.plotly_chart(figures.training.load_share_curves(hist, layer), key="td_share")
with c2:
    st.plotly_chart(figures.training.bias_curves(hist, layer), key="td_bias")
steps, load = tables.history_array(hist, "load")
c1, c2 = st.columns(2)
if load.ndim == 3:
    with c1:
        table = tables.matrix_frame(load[:, layer, :], "step", "expert", "load", rows=steps)
        downloads.download_csv(table, f"load_layer{layer}.csv", "Download load per step (CSV)")
with c2:
    downloads.download_csv(
        lambda: tables.history_table(hist), "history.csv", "Download the whole history (CSV: losses, bias, …)"
    )
aux = tables.aux_series(hist)
if aux:
    st.plotly_chart(figures.training.run_curves(aux, "Auxiliary balancing losses", "loss", smooth), key="td_aux")
    downloads.download_csv(tables.series_frame(aux, "value"), "aux_losses.csv")

st.subheader("Routing at a checkpoint")
ckpts = source.steps()
if ckpts and step is not None:
    st.session_state["td_ckpt"] = step  # follow the sidebar; moving this slider moves the sidebar too
    st.select_slider("Checkpoint", ckpts, key="td_ckpt", on_change=session.copy_key, args=("td_ckpt", session.KEY_STEP))
    trace = cache.eval_trace(source, step)
    if trace is not None:
        c1, c2 = st.columns(2)
        load_LE = tables.load_matrix(trace.routing, trace.n_layers, trace.n_experts)
        c1.plotly_chart(figures.heatmaps.load_heatmap(load_LE), key="td_load")
        with c1:
            downloads.download_csv(tables.matrix_frame(load_LE, "layer", "expert", "load"), f"load_step{step}.csv")
        spec = cache.specialization_tables(cache.trace_key(source, step, trace), trace)
        if spec is not None and layer < trace.n_layers:
            cells = spec[0][spec[0]["layer"] == layer]
            ratio = cells.pivot(index="label", columns="expert", values="ratio")
            c2.plotly_chart(figures.heatmaps.specialization_heatmap(ratio), key="td_spec")
        st.page_link(session.page_path("heatmaps"), label="More views of this checkpoint on Expert heatmaps", icon="➡️")
