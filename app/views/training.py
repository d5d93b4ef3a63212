"""Training dynamics: this run's curves with the sidebar's step marked, its experts (some highlighted), router
saturation, routing at the selected step; then the comparison of runs (final numbers and overlays)."""

import streamlit as st

from analysis import figures, sources, tables
from app import cache, downloads, session

source, step = session.require_source(need_model=False)
path = source.path
runs = cache.discover_sources()
names = {p: n for n, p in runs.items()}
name = names.get(path, source.name)
st.title("Training dynamics")
if not source.capabilities.history:
    st.info(f"This source has no training history. {source.capabilities.history.reason}")
    st.stop()
hist, evals = cache.histories(path)
if hist is None or hist.empty:
    st.info("This run has no training history yet.")
    st.stop()

L = source.card().n_layers
c1, c2, c3, c4 = st.columns([1, 2, 1, 1])
session.layer_param(L, "td_layer")
layer = c1.selectbox("MoE layer", range(L), key="td_layer")
smooth = c2.slider("Smoothing (EMA)", 0.0, 0.99, 0.8, key="td_smooth", help="Per training step, every curve; 0 = raw")
log_y = c3.toggle("Log y", key="td_log", help="Losses, shares and biases")
log_vio = c4.toggle("Log y: MaxVio", True, key="td_log_vio", help="On by default: early spikes set no scale")
at = dict(smooth=smooth, marker_step=step)
if len(all_steps := source.steps()) > 1 and step is not None:
    st.session_state["td_ckpt"] = step  # follow the sidebar; moving this slider moves the sidebar too
    st.select_slider("Step", all_steps, key="td_ckpt", on_change=session.copy_key, args=("td_ckpt", session.KEY_STEP),
                     help="Every step with weights or with a stored trace of the eval documents")  # fmt: skip
if step is not None:
    st.caption(f"Run **{name}**. The dotted line marks step {step}, chosen here or in the sidebar.")

loss = {name: (hist["step"].to_numpy(), hist["loss"].to_numpy())} if "loss" in hist else {}
c1, c2 = st.columns(2)
c1.plotly_chart(figures.training.run_curves(loss, "Training loss", "loss", log_y=log_y, **at), key="td_loss")
vio = {name: tables.maxvio_series(hist, layer)}
title = f"MaxVio_batch, layer {layer}"
c2.plotly_chart(figures.training.run_curves(vio, title, "MaxVio_batch", log_y=log_vio, **at), key="td_vio")
if evals is not None and "val_loss" in evals:
    val = {name: (evals["step"].to_numpy(), evals["val_loss"].to_numpy())}
    c1.plotly_chart(figures.training.run_curves(val, "Validation loss", "val loss", log_y=log_y, **at), key="td_val")
if aux := tables.aux_series(hist):
    c2.plotly_chart(figures.training.run_curves(aux, "Auxiliary losses", "loss", log_y=log_y, **at), key="td_aux")
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
ex = dict(highlight=highlight or None, log_y=log_y, **at)
c1.plotly_chart(figures.training.load_share_curves(hist, layer, **ex), key="td_share")
c2.plotly_chart(figures.training.bias_curves(hist, layer, **ex), key="td_bias")
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
    st.plotly_chart(figures.training.saturation_curves(sat, marker_step=step), key="td_sat")
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
    c1.plotly_chart(figures.heatmaps.load_heatmap(load_LE), key="td_load")
    spec = cache.specialization_tables(cache.trace_key(source, step, trace), trace)
    if spec is not None and layer < trace.n_layers:
        cells = spec[0][spec[0]["layer"] == layer]
        c2.plotly_chart(figures.heatmaps.specialization_heatmap(cells.pivot(index="label", columns="expert",
                        values="ratio")), key="td_spec")  # fmt: skip
    st.page_link(session.page_path("heatmaps"), label=f"More views of step {step} on Expert heatmaps", icon="➡️")

st.header("Compare runs")
study = [p for p in sources.study_runs() if p != path and p in names]
if study:  # one click to compare the balancing strategies (docs/FINDINGS.md)
    st.button("Compare the balancing-strategy study", on_click=lambda: st.session_state.update(td_runs=study),
              help="Small runs with identical data, seed and steps; only the balancing differs.")  # fmt: skip
c1, c2 = st.columns([3, 1])
others = c1.multiselect("Runs", [p for p in runs.values() if p != path], format_func=names.get, key="td_runs")
with_self = c2.checkbox(f"Include {name}", key="td_with_self", help="Off by default: runs of other lengths and "
                        "settings can set the scale")  # fmt: skip
compared = [p for p in runs.values() if p in others or (with_self and p == path)]
if compared:
    table = cache.run_comparison(tuple(compared), tuple(names.get(p, p) for p in compared))
    st.dataframe(tables.comparison_display(table), hide_index=True, key="td_compare")
    st.caption(f"val PPL and MaxVio_global (mean over layers): the last validation; MaxVio_batch: mean over the last "
               f"{tables.FINAL_WINDOW} logged steps of the layer mean. Runs whose settings differ only in the seed "
               "are one strategy: mean ± sample standard deviation (ddof = 1) over its n runs.")  # fmt: skip
    downloads.download_csv(table, "run_comparison.csv")
    pairs = {names.get(p, p): cache.histories(p) for p in compared}
    hists = {n: h for n, (h, _) in pairs.items() if h is not None}
    vals = {n: e for n, (_, e) in pairs.items() if e is not None and "val_loss" in e}
    curves = {  # (title, y axis, log y): {run: (steps, values)}
        ("Training loss", "loss", log_y): {n: (h["step"], h["loss"]) for n, h in hists.items()},
        ("Validation loss", "val loss", log_y): {n: (e["step"], e["val_loss"]) for n, e in vals.items()},
        ("MaxVio_batch, mean over layers", "MaxVio_batch", log_vio): {n: tables.maxvio_series(h)
                                                                      for n, h in hists.items()},
        ("MaxVio_global, mean over layers", "MaxVio_global", log_vio): {n: tables.maxvio_global_series(e)
                                                                        for n, e in vals.items()},
    }  # fmt: skip
    for i, (tab, ((title, y, log), series)) in enumerate(zip(st.tabs([t for t, _, _ in curves]), curves.items())):
        tab.plotly_chart(figures.training.run_curves(series, title, y, smooth, log), key=f"td_cmp_{i}")
