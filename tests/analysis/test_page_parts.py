"""Figure and table functions the thin pages call (Training dynamics' run curves, the specialization pivot), on
tiny hand-made inputs."""

import pandas as pd

from analysis import figures, tables


def test_run_figures_in_reading_order(tiny_history):
    evals = pd.DataFrame({"step": [2], "val_loss": [4.5]})
    hist = tiny_history.assign(aux=[{"switch": 0.1}, {"switch": 0.05}])
    figs = figures.training.run_figures("run A", hist, evals, layer=0, smooth=0.0, marker_step=2)
    assert list(figs) == ["loss", "vio", "val", "aux"]  # the page puts them left, right, left, right
    assert list(figs["loss"].data[0].y) == [5.0, 4.0] and list(figs["vio"].data[0].y) == [0.5, 0.0]
    assert list(figs["val"].data[0].y) == [4.5] and figs["aux"].data[0].name == "switch"
    assert "(log scale)" in figs["vio"].layout.title.text and "(log scale)" not in figs["loss"].layout.title.text
    assert all(f.layout.annotations[0].text == "step 2" for f in figs.values())  # the step marker on each
    bare = figures.training.run_figures("run A", tiny_history.drop(columns=["loss"]), None, layer=0)
    assert list(bare) == ["vio"]  # what the run did not log is left out


def test_ratio_pivot_picks_one_layer():
    cells = pd.DataFrame({"layer": [0, 0, 1, 1], "label": ["code", "prose", "code", "prose"],
                          "expert": [0, 0, 0, 0], "ratio": [1.5, 0.5, 0.9, 1.1]})  # fmt: skip
    table = tables.ratio_pivot(cells, 1)
    assert table.index.tolist() == ["code", "prose"] and table.columns.tolist() == [0]
    assert table[0].tolist() == [0.9, 1.1]
