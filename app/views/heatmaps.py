"""Expert heatmaps: load per layer, domain specialization, top tokens, co-activation, cross-layer flow."""

import streamlit as st

from analysis import figures, tables
from app import cache, downloads, session, uploads

source, step = session.require_source(need_model=False)  # a dataset has no model, but routing to show
st.title("Expert heatmaps")
texts = st.radio("Texts", ["Eval documents of this run", "My labelled files"], horizontal=True, key="hm_source",
                  help="Files: each file is one domain (its name), or a .csv with columns label,text. "
                  + uploads.LIMITS_TEXT)  # fmt: skip
if texts == "My labelled files":
    files = st.file_uploader("Labelled files", type=uploads.UPLOAD_TYPES, accept_multiple_files=True, key="hm_files",
                             max_upload_size=uploads.UPLOAD_MAX_MB, help=uploads.LIMITS_TEXT)  # fmt: skip
    good, errors = uploads.read_uploads(files)
    for message in errors:
        st.error(message)
    uploads.show_notices(good)
    docs, _ = uploads.limit_docs(source, uploads.docs_from_uploads(good))
    try:
        trace = cache.route_trace(source, step, docs) if docs else None
    except ValueError as exc:  # e.g. a step with recorded eval traces only: no weights to route files
        st.error(f"Could not route these files: {exc}")
        st.stop()
    agg = cache.aggregates(source, step, trace) if trace is not None else None
else:  # the source's own routing (a dataset: DuckDB over every token), else its eval documents
    agg = cache.aggregates(source, step)
if agg is None:
    st.info("No texts to analyse yet." if source.capabilities.route_text else source.capabilities.route_text.reason)
    st.stop()

L, E, K = agg.n_layers, agg.n_experts, agg.top_k
config = session.figure_config()

session.layer_param(L, "hm_layer")
layer = st.selectbox("MoE layer", range(L), key="hm_layer")
st.caption(f"{agg.n_tokens:,} tokens of {agg.n_docs:,} documents at step {step}")
st.caption("Click a cell of the load or specialization heatmap to open that expert's profile.")

load = agg.load()
event = st.plotly_chart(figures.heatmaps.load_heatmap(load), key="hm_load", on_select="rerun",
                        selection_mode="points", config=config)  # fmt: skip
if cell := figures.heatmaps.clicked_cell(event.selection.points, layer):
    st.switch_page(session.page_path("expert"), query_params={"layer": str(cell[0]), "expert": str(cell[1])})
downloads.download_csv(tables.matrix_frame(load, "layer", "expert", "load"), "expert_load.csv")

st.subheader(f"Domain specialization, layer {layer}")
spec = agg.specialization()
if spec is not None:
    cells, baseline, mi = spec
    cells = cells[cells["layer"] == layer]
    ratio = cells.pivot(index="label", columns="expert", values="ratio")
    share = cells.pivot(index="label", columns="expert", values="share")
    event = st.plotly_chart(figures.heatmaps.specialization_heatmap(ratio, share), key="hm_spec",
                            on_select="rerun", selection_mode="points", config=config)  # fmt: skip
    if cell := figures.heatmaps.clicked_cell(event.selection.points, layer):
        st.switch_page(session.page_path("expert"), query_params={"layer": str(cell[0]), "expert": str(cell[1])})
    b, m = baseline[baseline["layer"] == layer].iloc[0], mi[mi["layer"] == layer].iloc[0]

    def shuffled(value: float, fmt: str) -> str:  # NaN: no shuffle baseline (a dataset's whole corpus)
        return "" if value != value else fmt.format(value)

    st.caption(
        f"Most specialised cell: {b['max_ratio']:.2f}x uniform"
        + shuffled(b["perm_lo"], "; with shuffled domain labels {:.2f}–")
        + shuffled(b["perm_hi"], "{:.2f}x")
        + shuffled(b["p_value"], " (p = {:.3f})")
        + f". I(expert; domain) = {m['mi_domain_bits']:.3f} bits"
        + shuffled(m["mi_domain_baseline"], " (shuffled {:.3f})")
        + f"; I(expert; token id) = "
        f"{m['mi_token_bits']:.3f} bits" + shuffled(m["mi_token_baseline"], " (shuffled {:.3f})") + "."
    )
    downloads.download_csv(cells, f"specialization_layer{layer}.csv")
else:
    st.caption("These texts carry no domain labels.")

st.subheader(f"Top tokens per expert, layer {layer}")
top = agg.top_tokens(layer)
st.dataframe(top, hide_index=True, key="hm_top")
downloads.download_csv(top, f"top_tokens_layer{layer}.csv")

c1, c2 = st.columns(2)
with c1:
    co = agg.coactivation(layer)  # arrays of this layer only: (1, E, E)
    st.plotly_chart(figures.heatmaps.coactivation_heatmap(co.cond_LEE[0], co.lift_LEE[0]), key="hm_coact",
                    config=config)  # fmt: skip
    table = tables.matrix_frame(co.cond_LEE[0], "expert_i", "expert_j", "p_j_given_i")
    table["lift"] = co.lift_LEE[0].ravel()
    downloads.download_csv(table, f"coactivation_layer{layer}.csv")
with c2:
    if L > 1:
        min_share = st.slider("Hide links below this share", 0.0, 0.2, 0.01, key="hm_min_share")
        flow = tables.flow_frame(agg.flow())
        st.plotly_chart(figures.heatmaps.flow_sankey(flow, L, E, min_share), key="hm_flow", config=config)
        downloads.download_csv(flow, "cross_layer_flow.csv")
    else:
        st.caption("Cross-layer flow needs at least two MoE layers.")
