"""The embedded default run (sample_data/default_run): complete, small enough for git, routes text, and its
precomputed projections were computed from the router inputs of the shipped checkpoint."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.projections import ProjectionParams, project
from analysis.recording import record
from analysis.trace import load
from moe_core.paths import SAMPLE_DATA, default_run_path
from moe_core.run import load_run


@pytest.fixture(scope="module")
def run():
    return load_run(default_run_path())


@pytest.fixture(scope="module")
def final_trace(run):
    return load(run.trace_path(run.latest_step()), expect_config=run.config)


def test_files_and_size(run):
    for name in ("run.json", "tokenizer.json", "history/train.jsonl", "history/eval.jsonl", "eval/docs.jsonl"):
        assert (run.path / name).is_file(), name
    assert len(run.checkpoints()) == 1, "only the final weights are shipped"
    total = sum(f.stat().st_size for f in SAMPLE_DATA.rglob("*") if f.is_file())
    assert total <= 40e6, f"sample_data is {total / 1e6:.1f} MB (limit 40 MB)"


def test_history_is_complete(run):
    steps = [row["step"] for row in run.history()]
    assert steps == list(range(1, run.info["train"]["steps"] + 1)), "no lost or duplicated rows"
    evals = run.eval_history()
    assert evals[-1]["step"] == run.latest_step()
    # really trained: validation loss fell far below a uniform guess over the vocabulary
    assert evals[-1]["val_loss"] < 0.5 * np.log(run.config.vocab_size)
    assert evals[-1]["val_loss"] < evals[0]["val_loss"]


def test_traces_over_training(run, final_trace):
    steps = sorted(int(p.stem.split("_")[-1]) for p in (run.path / "eval").glob("trace_step_*.parquet"))
    assert len(steps) >= 6 and steps[-1] == run.latest_step()
    labels = set(final_trace.tokens["label"])
    assert {"prose", "code", "math", "data"} <= labels
    first = load(run.trace_path(steps[0]), expect_config=run.config)
    assert first.n_tokens == final_trace.n_tokens, "every checkpoint traced the same eval docs"
    assert final_trace.hidden is not None and len(final_trace.hidden_rows) > 1000


def test_routes_a_short_text(run):
    model = run.load_model()
    trace = record(model, run.tokenizer(), "def add(a, b):\n    return a + b  # the sum", max_hidden=0)
    experts = trace.experts_array()  # (n, L, K)
    assert experts.shape[1:] == (3, run.config.moe.top_k)
    assert experts.min() >= 0 and experts.max() < run.config.moe.n_experts
    weights = trace.routing["weight"].to_numpy().reshape(trace.n_tokens, trace.n_layers, -1)
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)  # sigmoid + renormalise


def test_final_trace_matches_the_checkpoint(run, final_trace):
    """Re-record the eval docs with the shipped weights: the same experts and router inputs as stored."""
    fresh = record(run.load_model(), run.tokenizer(), run.eval_docs(), max_hidden=len(final_trace.hidden_rows))
    assert fresh.n_tokens == final_trace.n_tokens
    agree = (fresh.experts_array() == final_trace.experts_array()).mean()
    assert agree > 0.995, f"only {agree:.4f} of the routings agree with the shipped trace"
    np.testing.assert_array_equal(fresh.hidden_rows, final_trace.hidden_rows)
    np.testing.assert_allclose(
        fresh.hidden.astype(np.float32), final_trace.hidden.astype(np.float32), atol=2e-2, rtol=1e-2
    )


@pytest.mark.parametrize("method", ["pca", "umap"])
def test_precomputed_projections_are_of_this_trace(run, final_trace, method):
    for layer in range(final_trace.n_layers):
        proj = project(final_trace, layer, params=ProjectionParams(method=method), cache_dir=run.path / "projections")
        assert proj.from_cache, f"layer {layer} {method}: no precomputed projection for this trace"
        assert set(proj.coords["token_row"]) <= set(final_trace.hidden_rows)
        assert proj.silhouette is not None
        if method == "pca":  # PCA is cheap: recompute it and compare (up to the sign of each axis)
            fresh = project(final_trace, layer, params=ProjectionParams(method="pca"))
            for axis in ("x", "y"):
                a, b = proj.coords[axis].to_numpy(), fresh.coords[axis].to_numpy()
                sign = np.sign(np.dot(a, b))
                np.testing.assert_allclose(a, sign * b, atol=1e-3 * np.abs(b).max())
