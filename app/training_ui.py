"""The parts of the Training dynamics page (app/views/training.py reads as their sequence): the training
history's curves and its experts (a run), router saturation across the stored steps and the routing at the
selected step (a run's stored eval traces, a dataset's DuckDB counts: both without a history)."""

from __future__ import annotations

import streamlit as st

from analysis import figures, tables
from app import cache, downloads, session


def history_curves(name: str, hist, evals, layer: int, step: int | None, view: dict, config: dict) -> None:
    """Loss, validation, MaxVio and aux-loss curves (view: smooth, log_y, log_vio), the sidebar's step marked."""
    columns = st.columns(2)
    curves = figures.training.run_figures(name, hist, evals, layer, view["smooth"], view["log_y"], view["log_vio"],
                                          marker_step=step)  # fmt: skip
    for n, (key, fig) in enumerate(curves.items()):  # loss and validation left, MaxVio and aux losses right
        columns[n % 2].plotly_chart(fig, key=f"td_{key}", config=config)
    downloads.download_csv(lambda: tables.history_table(hist), "history.csv", "Download the whole history (CSV)")


def history_experts(hist, layer: int, step: int | None, view: dict, config: dict) -> None:
    """Every expert's share of routings and balancing bias over training, a few highlighted."""
    st.subheader(f"Experts at layer {layer}")
    steps, load = tables.history_array(hist, "load")
    E = load.shape[2] if load.ndim == 3 else 0
    highlight = st.multiselect("Experts in colour", range(E),
                               tables.top_bottom_experts(load[:, layer], 2) if E else [],
                               format_func=lambda e: f"E{e}", key=f"td_highlight_{layer}",
                               help="The rest are thin grey lines. Clear it to colour every expert.")  # fmt: skip
    st.caption("Preset: the 2 experts with the largest and the 2 with the smallest share of routings at the last "
               "logged step. Click a legend entry to hide a line; double-click to show it alone.")  # fmt: skip
    c1, c2 = st.columns(2)
    ex = dict(highlight=highlight or None, log_y=view["log_y"], smooth=view["smooth"], marker_step=step)
    c1.plotly_chart(figures.training.load_share_curves(hist, layer, **ex), key="td_share", config=config)
    c2.plotly_chart(figures.training.bias_curves(hist, layer, **ex), key="td_bias", config=config)
    if E:
        table = tables.matrix_frame(load[:, layer, :], "step", "expert", "load", rows=steps)
        downloads.download_csv(table, f"load_layer{layer}.csv", "Download routings per expert and step (CSV)")


def saturation(source, step: int | None, config: dict) -> None:
    """Per layer, how much of each stored step's routing is already the last step's (`ModelSource.saturation`)."""
    st.subheader("Router saturation")
    try:
        sat = cache.router_saturation(source)
    except ValueError as exc:
        st.warning(f"Cannot compare the stored traces: {exc}")
        sat = None
    if sat is not None and sat["step"].nunique() > 1:
        st.plotly_chart(figures.training.saturation_curves(sat, marker_step=step), key="td_sat", config=config)
        st.caption(f"Per layer, the share of the stored tokens whose top-1 expert (solid) or whose whole top-k set "
                   f"(dashed) at each stored step is the one chosen at step {sat['step'].max()}.")  # fmt: skip
        downloads.download_csv(sat, "router_saturation.csv")
    else:
        st.caption("Saturation needs stored routing (eval traces or a recorded dataset) at two steps or more.")


def routing_at(source, step: int | None, layer: int, config: dict) -> None:
    """Load per layer and the domain specialization of `layer` at `step`, from the source's aggregates (every
    token of a dataset, the eval documents of a run)."""
    st.subheader(f"Routing at step {step}")
    agg = cache.aggregates(source, step) if step is not None else None
    if agg is None:
        st.caption("No stored routing at this step.")
        return
    c1, c2 = st.columns(2)
    c1.plotly_chart(figures.heatmaps.load_heatmap(agg.load()), key="td_load", config=config)
    spec = agg.specialization()
    if spec is not None and layer < agg.n_layers:
        ratio = tables.ratio_pivot(spec[0], layer)
        c2.plotly_chart(figures.heatmaps.specialization_heatmap(ratio), key="td_spec", config=config)
    st.caption(f"{agg.n_tokens:,} tokens of {agg.n_docs:,} documents at step {step}")
    st.page_link(session.page_path("heatmaps"), label=f"More views of step {step} on Expert heatmaps", icon="➡️")
