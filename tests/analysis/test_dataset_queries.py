"""The DuckDB queries over a routing dataset equal the in-memory metric functions on the same routing."""

import numpy as np
import pandas as pd
import pytest

from analysis import metrics, mi_counts, specialization, tables
from analysis.dataset import layout
from analysis.dataset.queries import DatasetQueries, QueryConfig
from tests.analysis.dataset_fixtures import make_trace, write_dataset

pytest.importorskip("duckdb")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(queries, {step: trace}): two steps of the same 9 documents, written as 2 shards."""
    a = make_trace(seed=1, routing_seed=1, step=100)
    b = make_trace(seed=1, routing_seed=2, step=200)  # the same tokens, routed otherwise
    assert a.tokens.equals(b.tokens)
    root = write_dataset(tmp_path_factory.mktemp("ds") / "tiny", {100: a, 200: b})
    q = DatasetQueries(root, QueryConfig(memory_limit="256MB", threads=1, temp_directory=str(root.parent / "spill")))
    yield q, {100: a, 200: b}
    q.close()


def test_load_and_summary_equal_in_memory(tiny):
    q, traces = tiny
    for step, trace in traces.items():
        load = metrics.expert_load(trace.experts_array(), trace.n_experts)
        np.testing.assert_array_equal(q.load(step), load)
        expected = metrics.summary(trace.routing, trace.n_experts, trace.tokens)
        got = q.summary(step)
        for col in ("n_tokens", "max_vio", "cv", "load_entropy", "dead_experts", "min_share", "max_share"):
            np.testing.assert_allclose(got[col].to_numpy(float), expected[col].to_numpy(float), rtol=1e-12)
        np.testing.assert_allclose(got["bias_flip_rate"], expected["bias_flip_rate"], rtol=1e-12)
        np.testing.assert_allclose(got["consecutive_top1"], expected["consecutive_top1"], rtol=1e-12)
        entropy = trace.token_layer.groupby("layer")["entropy"].mean().to_numpy(np.float64)
        np.testing.assert_allclose(got["router_entropy"], entropy, rtol=1e-6)


def test_coactivation_equals_in_memory(tiny):
    q, traces = tiny
    trace = traces[100]
    expected = metrics.coactivation(trace.experts_array(), trace.n_experts)
    got = q.coactivation(100)
    np.testing.assert_array_equal(got.counts_LEE, expected.counts_LEE)
    np.testing.assert_allclose(got.cond_LEE, expected.cond_LEE, rtol=1e-12, equal_nan=True)
    np.testing.assert_allclose(got.lift_LEE, expected.lift_LEE, rtol=1e-12, equal_nan=True)
    one = q.coactivation(100, layer=2)
    np.testing.assert_array_equal(one.counts_LEE[0], expected.counts_LEE[2])
    np.testing.assert_allclose(one.lift_LEE[0], expected.lift_LEE[2], rtol=1e-12, equal_nan=True)


def test_domain_specialization_and_baseline_equal_in_memory(tiny):
    q, traces = tiny
    trace = traces[200]
    e = trace.experts_array()
    expected = specialization.domain_specialization(e, trace.tokens, trace.n_experts)
    pd.testing.assert_frame_equal(q.domain_specialization(200), expected, check_dtype=False)
    docs = q.labelled_docs(200)
    base = specialization.permutation_baseline_of(docs, trace.n_experts, n_permutations=50, seed=3)
    exp_base = specialization.specialization_permutation_baseline(
        e, trace.tokens, trace.n_experts, n_permutations=50, seed=3
    )
    pd.testing.assert_frame_equal(base.max_ratio, exp_base.max_ratio)
    pd.testing.assert_frame_equal(base.cells, exp_base.cells)
    with pytest.raises(ValueError, match="too many cells"):
        q.labelled_docs(200, max_cells=10)


def test_mutual_information_equals_in_memory(tiny):
    q, traces = tiny
    trace = traces[100]
    e = trace.experts_array()
    got = q.mutual_information(100)
    np.testing.assert_allclose(got["mi_domain_bits"], specialization.mi_expert_domain(e, trace.tokens, 6), rtol=1e-9)
    np.testing.assert_allclose(got["mi_token_bits"], specialization.mi_expert_token(e, trace.tokens, 6), rtol=1e-9)
    assert (got["mi_token_bits"] > 0).all()


def test_mi_domain_shuffles_equal_in_memory(tiny):
    """Label permutations across documents from the per-document counts: the in-memory runs, draw for draw."""
    q, traces = tiny
    trace = traces[200]
    e, tok = trace.experts_array(), trace.tokens
    codes = pd.Series(tok["label"]).map({"code": 0, "math": 1, "prose": 2}).fillna(-1).to_numpy(np.int64)
    expected = specialization.mi_shuffle_baseline(e, codes, 6, groups=tok["doc_id"].to_numpy(), n_shuffles=7, seed=4)
    runs = mi_counts.mi_label_shuffles_of(q.labelled_docs(200), 6, n_shuffles=7, seed=4)
    assert runs.shape == (7, 3) and np.isfinite(runs).all()
    np.testing.assert_allclose(runs.mean(axis=0), expected["baseline_mean"], rtol=1e-12)
    assert not np.allclose(runs.mean(axis=0), expected["mi_bits"])  # shuffled, not the observed MI


def test_mi_token_shuffle_expectation_is_the_mean_over_every_permutation(monkeypatch):
    """On 7 tokens, the in-memory MI averaged over all 5,040 orders of the token ids: the exact expectation."""
    import itertools

    ids = np.array([5, 5, 5, 9, 9, 2, 7])
    e = np.array([[0, 1], [0, 2], [1, 3], [0, 1], [2, 3], [0, 3], [1, 2]])[:, None, :]  # (T, L=1, K=2)
    runs = [specialization.mutual_information(e, ids[list(p)], 4)[0] for p in itertools.permutations(range(7))]
    load = metrics.expert_load(e, 4)[0]
    got = mi_counts.mi_token_shuffle_expectation(np.unique(ids, return_counts=True)[1], load, 2)
    assert got == pytest.approx(np.mean(runs), rel=1e-12, abs=1e-15)
    monkeypatch.setattr(mi_counts, "CHUNK_POINTS", 3)  # the sums in many small steps: the same number
    assert mi_counts.mi_token_shuffle_expectation(np.unique(ids, return_counts=True)[1], load, 2) == pytest.approx(got)
    with pytest.raises(ValueError, match="routings"):
        mi_counts.mi_token_shuffle_expectation(np.array([3, 4]), load[:-1], 2)


def test_mi_token_shuffle_expectation_matches_in_memory_shuffles(tiny):
    """On the dataset: within the standard error of 400 in-memory shuffles of the token ids, at every layer."""
    q, traces = tiny
    trace = traces[100]
    e, ids = trace.experts_array(), trace.tokens["token_id"].to_numpy(np.int64)
    n_X = q.token_id_counts()
    np.testing.assert_array_equal(n_X, np.unique(ids, return_counts=True)[1])
    load = q.load(100)
    for layer in range(3):
        got = mi_counts.mi_token_shuffle_expectation(n_X, load[layer], 2)
        runs = specialization.mi_shuffle_baseline(e[:, [layer]], ids, 6, n_shuffles=400, seed=1)
        rng = np.random.default_rng(1)
        ref = [specialization.mutual_information(e[:, [layer]], rng.permutation(ids), 6)[0] for _ in range(400)]
        assert runs["baseline_mean"][0] == pytest.approx(np.mean(ref))  # the in-memory baseline is this mean
        assert abs(got - np.mean(ref)) < 4 * np.std(ref) / np.sqrt(400)
        assert 0 < got < specialization.mi_expert_token(e, trace.tokens, 6)[layer]


@pytest.mark.parametrize("top1", [False, True])
def test_token_specialization_equals_in_memory(tiny, top1):
    q, traces = tiny
    trace = traces[100]
    expected = specialization.token_specialization(trace.experts_array(), trace.tokens, 6, min_count=5, top1=top1)
    got = q.token_specialization(100, min_count=5, top1=top1)
    assert len(expected) > 0
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)


@pytest.mark.parametrize("mode", ["top1", "any"])
def test_consecutive_rate_equals_in_memory(tiny, mode):
    q, traces = tiny
    trace = traces[200]
    expected = metrics.consecutive_same_expert(trace.experts_array(), trace.tokens, mode=mode, n_shuffles=0)
    got = q.consecutive(200, mode)
    np.testing.assert_array_equal(got["n_pairs"], expected["n_pairs"])
    np.testing.assert_allclose(got["rate"], expected["rate"], rtol=1e-12)
    assert 0 < got["rate"].min() < 1


def test_saturation_equals_in_memory(tiny):
    q, traces = tiny
    expected = tables.saturation_table({s: t.experts_array() for s, t in traces.items()})
    got = q.saturation()
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)
    assert (got[got["step"] == 200]["top1_agreement"] == 1).all()
    assert (got[got["step"] == 100]["top1_agreement"] < 1).any()


def test_reads_only_listed_files(tiny, tmp_path):
    """A stray parquet file in a partition (a half-written shard, say) is never read; a layer without listed
    files is a one-line error naming the dataset."""
    q, traces = tiny
    stray = q.root / "routing" / "step=100" / "layer=0" / "part-w000-s999999.parquet"
    stray.write_bytes(b"not parquet")
    try:
        np.testing.assert_array_equal(q.load(100), metrics.expert_load(traces[100].experts_array(), 6))
    finally:
        stray.unlink()
    with pytest.raises(layout.DatasetError, match="no routing files at step 300"):
        q.load(300)


def test_flow_and_top1_equal_in_memory(tiny):
    q, traces = tiny
    e = traces[100].experts_array()
    np.testing.assert_array_equal(q.cross_layer_flow(100), metrics.cross_layer_flow(e, 6))
    top1 = q.top1_load(100)
    np.testing.assert_array_equal(top1, np.stack([np.bincount(e[:, l, 0], minlength=6) for l in range(3)]))
    counts = q.top1_token_counts(100, layer=1, n=2)
    assert counts.groupby("expert").size().max() <= 2
    first = counts.iloc[0]
    tok = traces[100].tokens
    mine = tok["token_text"][e[:, 1, 0] == first["expert"]].value_counts()
    assert first["n"] == mine.max()
