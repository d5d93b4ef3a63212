"""Compare runs: final val PPL, MaxVio_global and MaxVio_batch per run (mean ± sample std over seeds of one
strategy) and their curves overlaid; the shipped balancing-strategy study in one click."""

import streamlit as st

from analysis import figures, sources, tables
from app import cache, downloads, session

config = session.figure_config()  # every figure's camera button saves the sidebar's format

source, step = session.require_source(need_model=False)
path = source.path
runs = cache.discover_sources()
names = {p: n for n, p in runs.items()}
name = names.get(path, source.name)
st.title("Compare runs")
c1, c2, c3 = st.columns([2, 1, 1])
smooth = c1.slider("Smoothing (EMA)", 0.0, 0.99, 0.8, key="td_smooth", help="Per training step, every curve; 0 = raw")
log_y = c2.toggle("Log y", key="td_log", help="Losses")
log_vio = c3.toggle("Log y: MaxVio", True, key="td_log_vio", help="On by default: early spikes set no scale")
study = [p for p in sources.study_runs() if p != path and p in names]
if study:  # one click to compare the balancing strategies (docs/FINDINGS.md)
    st.button("Compare the balancing-strategy study", on_click=lambda: st.session_state.update(td_runs=study),
              help="Small runs with identical data, seed and steps; only the balancing differs.")  # fmt: skip
c1, c2 = st.columns([3, 1])
others = c1.multiselect("Runs", [p for p in runs.values() if p != path], format_func=names.get, key="td_runs")
with_self = c2.checkbox(f"Include {name}", key="td_with_self", help="Off by default: runs of other lengths and "
                        "settings can set the scale")  # fmt: skip
compared = [p for p in runs.values() if p in others or (with_self and p == path)]
if not compared:
    st.info("Choose runs to compare, or compare the shipped balancing-strategy study in one click.")
else:
    table = cache.run_comparison(tuple(compared), tuple(names.get(p, p) for p in compared))
    st.dataframe(tables.comparison_display(table), hide_index=True, key="td_compare")
    st.caption(f"val PPL and MaxVio_global (mean over layers): the last validation; MaxVio_batch: mean over the last "
               f"{tables.FINAL_WINDOW} logged steps of the layer mean. Runs whose settings differ only in the seed "
               "are one strategy: mean ± sample standard deviation (ddof = 1) over its n runs.")  # fmt: skip
    downloads.download_csv(table, "run_comparison.csv")
    if without := [names.get(p, p) for p in compared if not cache.get_source(p).capabilities.history]:
        st.caption(f"No training history, hence no numbers or curves, for: {', '.join(without)}.")  # e.g. a dataset
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
        tab.plotly_chart(
            figures.training.run_curves(series, title, y, smooth, log),
            key=f"td_cmp_{i}",
            config=config,
        )
