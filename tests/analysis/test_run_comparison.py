"""Run comparison and routing through training: final numbers per run, seeds grouped by strategy (mean ± sample
std), router saturation against the final step, the experts to highlight. Tiny inputs, hand-computed values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis import tables


def history(maxvio_rows):
    return pd.DataFrame({"step": np.arange(1, len(maxvio_rows) + 1), "maxvio_batch": maxvio_rows})


def test_final_metrics_last_validation_and_final_window_mean():
    hist = history([[9.0, 9.0], [1.0, 3.0], [2.0, 4.0]])  # layer means 9, 2, 3
    ev = pd.DataFrame({"step": [1, 3], "val_ppl": [50.0, 20.0], "maxvio_global": [[5.0, 5.0], [0.25, 0.75]]})
    got = tables.final_metrics(hist, ev, window=2)
    assert got == {"val_ppl": 20.0, "maxvio_global": 0.5, "maxvio_batch": 2.5}  # (2 + 3) / 2
    assert tables.final_metrics(hist, ev, window=10)["maxvio_batch"] == pytest.approx(14 / 3)
    steps, v = tables.maxvio_global_series(ev)
    assert steps.tolist() == [1, 3] and v.tolist() == [5.0, 0.5]
    assert len(tables.maxvio_global_series(ev.drop(columns=["maxvio_global"]))[0]) == 0
    missing = tables.final_metrics(None, None)
    assert all(np.isnan(v) for v in missing.values())


def test_seeds_of_one_strategy_are_grouped():
    base = {"model": {"moe": {"n_experts": 4}}, "train": {"lr": 1e-3, "seed": 0}}
    configs = {
        "auxfree-s0": base,
        "none": {**base, "model": {"moe": {"n_experts": 8}}},
        "auxfree-s1": {**base, "train": {"lr": 1e-3, "seed": 1}},
        "hf": None,
        "other-lr": {**base, "train": {"lr": 2e-3, "seed": 0}},
    }
    assert tables.strategy_groups(configs) == {
        "auxfree-s0": "auxfree-s0",
        "none": "none",
        "auxfree-s1": "auxfree-s0",
        "hf": "hf",
        "other-lr": "other-lr",
    }


def test_run_comparison_mean_and_sample_std():
    finals = {
        "a0": {"val_ppl": 10.0, "maxvio_global": 0.5, "maxvio_batch": 1.0},
        "b": {"val_ppl": 30.0, "maxvio_global": 2.0, "maxvio_batch": np.nan},
        "a1": {"val_ppl": 14.0, "maxvio_global": 0.25, "maxvio_batch": 2.0},
    }
    table = tables.run_comparison(finals, {"a0": "a0", "a1": "a0", "b": "b"})
    assert table["strategy"].tolist() == ["a0", "b"] and table["n"].tolist() == [2, 1]
    assert table["runs"].tolist() == ["a0, a1", "b"]
    a = table.iloc[0]
    assert a["val_ppl_mean"] == 12.0 and a["val_ppl_std"] == pytest.approx(np.sqrt(8))  # ((2² + 2²) / (2 - 1))^½
    assert a["maxvio_global_mean"] == 0.375 and a["maxvio_global_std"] == pytest.approx(np.sqrt(0.03125))
    assert a["maxvio_batch_mean"] == 1.5 and a["maxvio_batch_std"] == pytest.approx(np.sqrt(0.5))
    b = table.iloc[1]
    assert b["val_ppl_mean"] == 30.0 and np.isnan(b["val_ppl_std"]) and np.isnan(b["maxvio_batch_mean"])
    shown = tables.comparison_display(table)
    assert shown.columns.tolist() == ["strategy", "n", "val PPL", "MaxVio_global", "MaxVio_batch"]
    assert shown.iloc[0].tolist() == ["a0", 2, "12 ± 2.8", "0.375 ± 0.18", "1.5 ± 0.71"]
    assert shown.iloc[1].tolist() == ["b", 1, "30", "2", "–"]  # one run: no ±


def test_saturation_table_against_the_last_step():
    # 2 tokens, 1 layer, top-2; the last step (300) routes t0 -> {0, 1}, t1 -> {2, 3}
    final = np.array([[[0, 1]], [[2, 3]]])
    early = np.array([[[1, 0]], [[2, 0]]])  # t0: other top-1, same set; t1: same top-1, one of two shared
    table = tables.saturation_table({300: final, 100: early})
    assert table.columns.tolist() == ["step", "layer", "top1_agreement", "topk_overlap", "topk_exact"]
    assert table["step"].tolist() == [100, 300]
    assert table.iloc[0, 2:].tolist() == [0.5, 0.75, 0.5]  # top-1: t1 only; overlap (2/2 + 1/2) / 2; exact: t0
    assert table.iloc[1, 2:].tolist() == [1.0, 1.0, 1.0]
    assert tables.saturation_table({}).empty


def test_top_bottom_experts_by_final_load():
    load = np.array([[9, 0, 0, 0, 0], [1, 5, 3, 0, 2]])
    assert tables.top_bottom_experts(load, 1) == [1, 3]
    assert tables.top_bottom_experts(load, 2) == [1, 2, 0, 3]  # shares 5, 3 | 1, 0 (expert 4: 2, in between)
    assert tables.top_bottom_experts(load, 3) == [1, 2, 4, 0, 3]  # 2k >= E: all, largest first
    assert tables.top_bottom_experts(np.zeros((0, 5)), 2) == []
