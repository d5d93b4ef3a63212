"""Training-dynamics figures: the selected step marked, experts highlighted, smoothing per training step, log
scale named in the title, router saturation; and the EMA over unevenly logged steps."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis import figures, tables
from analysis.figures.training import OTHER


@pytest.fixture
def history():
    """Three logged steps of one MoE layer with three experts."""
    return pd.DataFrame(
        {
            "step": [1, 2, 3],
            "loss": [5.0, 4.0, 3.0],
            "load": [[[2, 1, 1]], [[1, 2, 1]], [[1, 1, 2]]],  # (N, L=1, E=3)
            "bias": [[[0.0, 0.0, 0.0]], [[0.1, 0.2, 0.3]], [[0.2, 0.4, 0.6]]],
        }
    )


def test_ema_steps_weights_each_training_step():
    assert np.allclose(tables.ema_steps([1, 2, 3], [4.0, 0.0, 0.0], 0.5), tables.ema([4.0, 0.0, 0.0], 0.5))
    # logged at steps 0, 2, 3: the 2-step gap weighs the past by 0.5**2, the next by 0.5
    assert np.allclose(tables.ema_steps([0, 2, 3], [4.0, 0.0, 2.0], 0.5), [4.0, 1.0, 1.5])


def test_highlighted_experts_keep_their_colour_the_rest_grey(history):
    fig = figures.training.load_share_curves(history, 0, highlight=[2], marker_step=2)
    assert [t.name for t in fig.data] == ["other experts (2)", "other experts (2)", "E2"]
    assert [t.showlegend for t in fig.data] == [True, False, True]  # one legend entry for the grey lines
    assert fig.data[0].line.color == fig.data[1].line.color == OTHER and fig.data[2].line.color != OTHER
    assert list(fig.data[2].y) == [0.25, 0.25, 0.5]
    assert [s.x0 for s in fig.layout.shapes if s.line.dash == "dot"] == [2]  # the selected step
    assert any(a.text == "step 2" for a in fig.layout.annotations)
    assert fig.layout.legend.orientation == "h" and fig.layout.legend.y < 0  # below the plot: never cut off
    every = figures.training.load_share_curves(history, 0)
    assert [t.name for t in every.data] == ["E0", "E1", "E2"] and not every.layout.shapes[1:]


def test_bias_smoothed_per_step_and_log_scale_named(history):
    fig = figures.training.bias_curves(history, 0, highlight=[0, 1, 2], smooth=0.5, log_y=True)
    assert list(fig.data[2].y) == pytest.approx([0.0, 0.15, 0.375])  # EMA 0.5: 0, 0.15, 0.5*0.15 + 0.5*0.6
    assert fig.layout.yaxis.type == "log" and fig.layout.title.text.endswith("(log scale)")


def test_run_curves_draw_raw_values_under_the_smoothed_ones():
    fig = figures.training.run_curves({"a": (np.array([1, 2]), np.array([2.0, 0.0]))}, "Loss", "loss", smooth=0.5)
    assert [t.showlegend for t in fig.data] == [None, False]
    assert list(fig.data[0].y) == [2.0, 1.0] and list(fig.data[1].y) == [2.0, 0.0]
    assert fig.data[1].zorder < 0 and not fig.data[0].zorder  # the raw values beneath the smoothed ones
    assert "EMA 0.5" in fig.layout.title.text and not fig.layout.shapes
    plain = figures.training.run_curves({"a": (np.array([1, 2]), np.array([2.0, 0.0]))}, "Loss", "loss")
    assert len(plain.data) == 1 and plain.layout.title.text == "Loss"


def test_saturation_curves_per_layer():
    table = tables.saturation_table({1: np.array([[[1, 0]], [[2, 0]]]), 2: np.array([[[0, 1]], [[2, 3]]])})
    fig = figures.training.saturation_curves(table, marker_step=1)
    assert [t.name for t in fig.data] == ["layer 0, top-1", "layer 0, top-k set"]
    assert list(fig.data[0].y) == [0.5, 1.0] and list(fig.data[1].y) == [0.5, 1.0]
    assert fig.layout.title.text == "Router saturation: agreement with step 2"
    assert list(fig.layout.yaxis.range) == [0, 1.02]


def test_smoothed_expert_lines_are_thinned_within_the_ema_time_constant():
    keep = figures.training.thinned(2000, 0.8)
    assert keep[0] == 0 and keep[-1] == 1999 and len(keep) <= figures.training.MAX_POINTS + 1
    assert np.diff(keep).max() <= 5  # 1 / (1 - 0.8): no coarser than the smoothing
    assert len(figures.training.thinned(2000, 0.0)) == 2000  # raw values: every point
    assert len(figures.training.thinned(300, 0.8)) == 300
    assert np.diff(figures.training.thinned(5000, 0.5)).max() == 2  # capped by the time constant
