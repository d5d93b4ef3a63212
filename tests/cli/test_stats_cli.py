"""`moe-explorer stats DIR` (app/cli/stats.py): the per-layer summary of a routing dataset and its full tables."""

import json

import numpy as np
import pandas as pd
import pytest

from analysis import metrics
from app.cli import main
from app.cli.stats import pick_step
from tests.analysis.dataset_fixtures import make_trace, write_dataset

pytest.importorskip("duckdb")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    traces = {100: make_trace(seed=4, routing_seed=1, step=100), 200: make_trace(seed=4, routing_seed=2, step=200)}
    return write_dataset(tmp_path_factory.mktemp("stats") / "ds", traces), traces


def test_prints_the_per_layer_summary(dataset, capsys):
    root, traces = dataset
    assert main(["stats", str(root), "--threads", "1", "--memory-limit", "256MB"]) == 0
    out = capsys.readouterr().out
    trace = traces[200]  # the default step is the last one
    T = trace.n_tokens
    assert f"step 200: {T:,} tokens, 3 MoE layers, 6 experts, top-2" in out
    lines = out.splitlines()
    assert "MaxVio" in lines[1] and "dead" in lines[1] and "min share" in lines[1]
    expected = metrics.summary(trace.routing, 6)
    for layer in range(3):
        cells = lines[2 + layer].split()
        assert cells[0] == str(layer)
        assert cells[1] == f"{expected['min_share'][layer]:.2%}" and cells[2] == f"{expected['max_share'][layer]:.2%}"
        assert cells[3] == f"{expected['max_vio'][layer]:.3f}"


def test_writes_the_full_tables(dataset, tmp_path, capsys):
    root, traces = dataset
    out = tmp_path / "tables"
    assert main(["stats", str(root), "--step", "100", "--out", str(out), "--format", "csv", "--threads", "1"]) == 0
    names = {p.stem for p in out.iterdir()}
    assert names == {
        "summary", "load", "coactivation", "domain_specialization", "mutual_information", "token_specialization",
        "consecutive", "saturation",
    }  # fmt: skip
    load = pd.read_csv(out / "load.csv")
    expected = metrics.expert_load(traces[100].experts_array(), 6)
    np.testing.assert_array_equal(load.pivot(index="layer", columns="expert", values="load").to_numpy(), expected)
    co = pd.read_csv(out / "coactivation.csv")
    assert len(co) == 3 * 6 * 6 and {"p_j_given_i", "lift"} <= set(co.columns)
    assert main(["stats", str(root), "--out", str(tmp_path / "pq"), "--format", "parquet", "--threads", "1"]) == 0
    assert len(pd.read_parquet(tmp_path / "pq" / "summary.parquet")) == 3


def test_bad_input_is_one_line(dataset, tmp_path, capsys):
    root, _ = dataset
    assert main(["stats", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "manifest.json" in err and len(err.strip().splitlines()) == 1
    assert main(["stats", str(root), "--step", "7"]) == 2
    assert "--step 7: not recorded in this dataset (steps: 100, 200)" in capsys.readouterr().err
    other = tmp_path / "other"
    other.mkdir()
    (other / "manifest.json").write_text(json.dumps({"format": "moe-explorer-dataset/99"}))
    assert main(["stats", str(other)]) == 2
    assert "unsupported dataset format" in capsys.readouterr().err


def test_pick_step():
    assert pick_step([None], None) is None and pick_step([None], "none") is None
    assert pick_step([1, 5], "5") == 5 and pick_step([1, 5], None) == 5
    with pytest.raises(ValueError, match="not recorded"):
        pick_step([1, 5], "x")
