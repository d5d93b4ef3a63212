"""Router geometry: PCA/UMAP of the router inputs at one layer; select points to read their tokens."""

import streamlit as st

from analysis import figures, tables
from app import cache, downloads, session

config = session.figure_config()  # every figure's camera button saves the sidebar's format

source, step = session.require_source(need_model=False)  # a dataset has no model, but a stored sample
st.title("Router geometry")
st.caption(
    "Each point is one token's router input (the hidden state the router sees) at the chosen layer, projected "
    "to 2-D, coloured by its top-1 expert (or its domain or token). Pick lasso or box select in the chart toolbar "
    "and drag to list the selected tokens; click a point to open its expert's profile."
)
trace = cache.projection_trace(source, step)  # a dataset: its whole stored sample
if trace is None or trace.hidden is None:
    if source.capabilities.pages:  # a dataset keeps router inputs for its stored sample only
        st.info(f"This dataset stores no router inputs at step {step} (recorded without a sample), so there is "
                "nothing to project; it has no model to record them with.")  # fmt: skip
    elif source.capabilities.route_text:
        with_inputs = ", ".join(str(s) for s in source.model_steps()) or "none"
        st.info(f"No router inputs were recorded at step {step}; they are recorded at the steps with weights "
                f"({with_inputs}).")  # fmt: skip
    else:
        st.info(f"No router inputs are stored at step {step}. {source.capabilities.route_text.reason}")
    st.stop()
if trace.meta.get("sample"):
    st.caption(f"The dataset's stored stratified sample: {trace.n_tokens:,} router inputs from "
               f"{len(trace.texts):,} documents of every part of it (at most {trace.meta['sample']:,}, an equal "
               "share per domain).")  # fmt: skip

c1, c2, c3 = st.columns(3)
session.layer_param(trace.n_layers, "geo_layer")
layer = c1.selectbox("MoE layer", range(trace.n_layers), key="geo_layer")
method = c2.radio("Projection", ["PCA", "UMAP"], horizontal=True, key="geo_method",
                  help="PCA is instant; UMAP is computed once per layer and checkpoint, then cached")  # fmt: skip
color_by = c3.radio("Colour by", ["expert", "domain", "token"], horizontal=True, key="geo_color")
if method == "PCA":
    cache.warm_umap()  # so that switching to UMAP later is quick
proj = cache.projection(source, step, layer, method.lower())
if proj is None:
    st.stop()

coords = proj.coords
color = {"expert": coords["expert"], "domain": coords["label"], "token": coords["token_text"]}[color_by]
hover = [
    f"{tables.short_token(t)} · E{e} · {d}" for t, e, d in zip(coords["token_text"], coords["expert"], coords["label"])
]
kind = "expert" if color_by == "expert" else "category"
fig = figures.geometry.projection_scatter(
    coords[["x", "y"]], color, coords["token_row"], hover, kind, n_experts=trace.n_experts, silhouette=proj.silhouette
)
m1, m2, m3 = st.columns(3)
m1.metric("Points", f"{len(coords):,}")
if proj.extra.get("points_total", 0) > len(coords):  # the max_points cap (stratified by expert)
    st.caption(f"Showing a stratified sample of {len(coords):,} of {proj.extra['points_total']:,} router inputs.")
m2.metric("Silhouette (router-input space)", "–" if proj.silhouette is None else f"{proj.silhouette:.3f}",
          help="How compact the top-1 expert regions are: 1 = separated, 0 = overlapping, < 0 = mixed")  # fmt: skip
m3.metric("Silhouette (2-D plane)", "–" if proj.silhouette_2d is None else f"{proj.silhouette_2d:.3f}")
st.caption(figures.geometry.silhouette_caption(proj.silhouette))
event = st.plotly_chart(fig, key=f"geo_scatter_{layer}_{method}_{color_by}", on_select="rerun",
                        selection_mode=("points", "box", "lasso"), config=config)  # fmt: skip
downloads.download_csv(coords, f"projection_layer{layer}_{method.lower()}.csv", "Download coordinates (CSV)")

selection = event.selection if event and event.selection else {}
rows = tables.selected_rows(selection.get("points", []))
expert_of = dict(zip(coords["token_row"], coords["expert"]))
if len(rows) == 1 and not selection.get("box") and not selection.get("lasso"):  # a click, not a drag
    st.switch_page(session.page_path("expert"), query_params={"layer": str(layer), "expert": str(expert_of[rows[0]])})
if rows:
    st.subheader(f"{len(rows)} selected tokens")
    table = tables.token_context(trace.tokens, trace.texts, rows, experts=expert_of)
    st.dataframe(table, hide_index=True, key="geo_selected")
    downloads.download_csv(table, "selected_tokens.csv", "Download selection (CSV)")
else:
    st.caption("No selection yet.")
