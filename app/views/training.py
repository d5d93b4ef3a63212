"""Training dynamics: load balance, MaxVio, biases and losses over training; a checkpoint slider; run overlay."""

import streamlit as st

from app import figures as F
from app import state

path, step = state.require_run(need_model=False)
runs = state.discover_runs()
names = {p: n for n, p in runs.items()}
st.title("Training dynamics")
hist = state.history(path)
if state.is_hf(path):
    st.info("Imported Hugging Face models come without training history; choose one of our runs in the sidebar.")
    st.stop()
if hist.empty:
    st.info("This run has no training history yet.")
    st.stop()

L = len(state.get_run(path).config.moe_layers)
c1, c2, c3 = st.columns([1, 3, 1])
state.layer_param(L, "td_layer")
layer = c1.selectbox("MoE layer", range(L), key="td_layer")
study = [p for p in state.study_runs() if p != path and p in names]
if study:  # one click to compare the balancing strategies (docs/FINDINGS.md)
    c2.button(
        "Overlay the balancing-strategy study",
        on_click=lambda: st.session_state.update(td_runs=study),
        help="Seven small runs with identical data, seed and steps; only the balancing differs.",
    )
others = c2.multiselect("Overlay runs", [p for p in runs.values() if p != path], format_func=names.get, key="td_runs")
smooth = c3.slider("Smoothing", 0.0, 0.99, 0.8, key="td_smooth")
histories = {names.get(p, p): state.history(p) for p in [path, *others]}
evals = {names.get(p, p): state.eval_history(p) for p in [path, *others]}

loss = {n: (h["step"].to_numpy(), h["loss"].to_numpy()) for n, h in histories.items() if "loss" in h}
val = {n: (e["step"].to_numpy(), e["val_loss"].to_numpy()) for n, e in evals.items() if "val_loss" in e}
vio = {n: F.maxvio_series(h, layer) for n, h in histories.items()}
c1, c2 = st.columns(2)
with c1:
    st.plotly_chart(F.run_curves(loss, "Training loss", "loss", smooth), key="td_loss")
    state.download_csv(F.series_frame(loss, "loss"), "train_loss.csv")
with c2:
    st.plotly_chart(F.run_curves(vio, f"MaxVio_batch, layer {layer}", "MaxVio", smooth), key="td_vio")
    state.download_csv(F.series_frame(vio, "maxvio_batch"), f"maxvio_layer{layer}.csv")
if val:
    st.plotly_chart(F.run_curves(val, "Validation loss", "val loss"), key="td_val")
    state.download_csv(F.series_frame(val, "val_loss"), "val_loss.csv")

st.subheader(f"Run {names.get(path, path)}: experts at layer {layer}")
c1, c2 = st.columns(2)
with c1:
    st.plotly_chart(F.load_share_curves(hist, layer), key="td_share")
with c2:
    st.plotly_chart(F.bias_curves(hist, layer), key="td_bias")
steps, load = F.history_array(hist, "load")
c1, c2 = st.columns(2)
if load.ndim == 3:
    with c1:
        table = F.matrix_frame(load[:, layer, :], "step", "expert", "load", rows=steps)
        state.download_csv(table, f"load_layer{layer}.csv", "Download load per step (CSV)")
with c2:
    state.download_csv(
        lambda: F.history_table(hist), "history.csv", "Download the whole history (CSV: losses, bias, …)"
    )
aux = F.aux_series(hist)
if aux:
    st.plotly_chart(F.run_curves(aux, "Auxiliary balancing losses", "loss", smooth), key="td_aux")
    state.download_csv(F.series_frame(aux, "value"), "aux_losses.csv")

st.subheader("Routing at a checkpoint")
ckpts = state.checkpoints(path)
if ckpts and step is not None:
    st.session_state["td_ckpt"] = step  # follow the sidebar; moving this slider moves the sidebar too
    st.select_slider("Checkpoint", ckpts, key="td_ckpt", on_change=state.copy_key, args=("td_ckpt", state.KEY_STEP))
    trace = state.eval_trace(path, step)
    if trace is not None:
        c1, c2 = st.columns(2)
        load_LE = F.load_matrix(trace.routing, trace.n_layers, trace.n_experts)
        c1.plotly_chart(F.load_heatmap(load_LE), key="td_load")
        with c1:
            state.download_csv(F.matrix_frame(load_LE, "layer", "expert", "load"), f"load_step{step}.csv")
        spec = state.specialization(state.trace_key(path, step, trace), trace)
        if spec is not None and layer < trace.n_layers:
            cells = spec[0][spec[0]["layer"] == layer]
            ratio = cells.pivot(index="label", columns="expert", values="ratio")
            c2.plotly_chart(F.specialization_heatmap(ratio), key="td_spec")
        st.page_link(state.page_path("heatmaps"), label="More views of this checkpoint on Expert heatmaps", icon="➡️")
