"""`DatasetSource`: a routing dataset as a model source; its aggregates equal a trace's (`TraceAggregates`)."""

import numpy as np
import pandas as pd
import pytest

from analysis.sources import DatasetSource, ModelSource, discover_sources, open_source
from analysis.sources.aggregates import TraceAggregates
from analysis.sources.discovery import is_dataset_dir
from tests.analysis.dataset_fixtures import make_trace, write_dataset

pytest.importorskip("duckdb")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    traces = {100: make_trace(seed=5, routing_seed=1, step=100), 200: make_trace(seed=5, routing_seed=2, step=200)}
    root = write_dataset(tmp_path_factory.mktemp("src") / "tiny", traces)
    return root, traces


def test_opens_as_a_source_with_its_capabilities(tiny):
    root, traces = tiny
    source = open_source(root, duckdb_threads=1)
    assert isinstance(source, DatasetSource) and isinstance(source, ModelSource)
    caps = source.capabilities
    assert not caps.route_text and "recorded routing dataset" in caps.route_text.reason
    assert caps.steps and caps.stored_traces and caps.eval_docs and not caps.history and not caps.router_biases
    assert source.steps() == [100, 200] and source.model_steps() == [] and source.default_step() == 200
    card = source.card()
    assert (card.n_layers, card.n_experts, card.top_k) == (3, 6, 2)
    assert ("Tokens", f"{traces[100].n_tokens:,}") in card.metrics
    assert source.history() is None and source.router_biases(200).shape == (3, 6)
    with pytest.raises(ValueError, match="cannot be routed"):
        source.record([("x", "", "new text")], 200)


def test_stored_trace_is_a_bounded_page(tiny):
    root, traces = tiny
    source = DatasetSource(root, threads=1, page_tokens=40)
    page = source.stored_trace(100)
    full = traces[100]
    n_docs = len(page.texts)
    assert 1 <= n_docs < len(full.texts) and page.n_tokens < full.n_tokens
    expected = full.select_docs(list(page.texts))
    np.testing.assert_array_equal(page.experts_array(), expected.experts_array())
    assert source.stored_trace(100, page=1) is not None
    pages = [source.page_docs(p) for p in range(20)]
    assert sorted(np.concatenate(pages).tolist()) == list(range(len(full.texts)))  # every doc in one page
    docs = source.eval_docs()
    assert [d[0] for d in docs] == list(page.texts) and docs[0][2] == page.texts[docs[0][0]]
    again = source.record(docs[:1], 200)  # a stored document is served from the page
    assert again.n_tokens == (page.tokens["doc_id"] == docs[0][0]).sum()


def test_aggregates_equal_the_trace_aggregates(tiny):
    root, traces = tiny
    source = DatasetSource(root, threads=1)
    agg, ref = source.aggregates(200), TraceAggregates(traces[200])
    assert (agg.n_tokens, agg.n_docs, agg.n_layers) == (ref.n_tokens, ref.n_docs, ref.n_layers)
    np.testing.assert_array_equal(agg.load(), ref.load())
    np.testing.assert_array_equal(agg.top1_load(), ref.top1_load())
    np.testing.assert_array_equal(agg.flow(), ref.flow())
    for layer in range(3):
        np.testing.assert_allclose(agg.coactivation(layer).lift_LEE, ref.coactivation(layer).lift_LEE, equal_nan=True)
    cells, base, mi = agg.specialization()
    rcells, rbase, rmi = ref.specialization()
    pd.testing.assert_frame_equal(cells, rcells, check_dtype=False)
    pd.testing.assert_frame_equal(base, rbase)
    np.testing.assert_allclose(mi["mi_domain_bits"], rmi["mi_domain_bits"], rtol=1e-9)
    np.testing.assert_allclose(mi["mi_token_bits"], rmi["mi_token_bits"], rtol=1e-9)
    # shuffle baselines: label permutations draw for draw as in memory; token-id shuffles, their exact mean
    np.testing.assert_allclose(mi["mi_domain_baseline"], rmi["mi_domain_baseline"], rtol=1e-12)
    assert np.isfinite(mi["mi_token_baseline"]).all()
    assert (mi["mi_token_baseline"] > 0).all() and (mi["mi_token_baseline"] < mi["mi_token_bits"]).all()
    np.testing.assert_allclose(mi["mi_token_baseline"], rmi["mi_token_baseline"], rtol=0.25)  # 10 shuffles there
    top, rtop = agg.top_tokens(1, n=3), ref.top_tokens(1, n=3)
    pd.testing.assert_frame_equal(top[["expert", "tokens"]], rtop[["expert", "tokens"]], check_dtype=False)
    sat = source.saturation()
    assert list(sat["step"].unique()) == [100, 200] and (sat[sat["step"] == 200]["topk_exact"] == 1).all()


def test_discovery_recognises_a_dataset(tiny, tmp_path):
    root, _ = tiny
    assert is_dataset_dir(root) and not is_dataset_dir(tmp_path)
    (tmp_path / "manifest.json").write_text('{"seed": 1}')  # a corpus folder's manifest: not a dataset
    assert not is_dataset_dir(tmp_path)
    found = discover_sources(None, [], tmp_path / "runs", datasets=[root, tmp_path])
    assert list(found.items())[0] == ("dataset: tiny", str(root.resolve()))
    assert str(tmp_path) not in found.values()


def test_pages_reach_every_document(tiny):
    root, traces = tiny
    source = DatasetSource(root, threads=1, page_tokens=40)
    n = source.n_pages()
    assert n > 2
    pages = [source.page_docs(p) for p in range(n)]
    assert all(len(p) for p in pages) and len(source.page_docs(n)) == 0
    assert np.concatenate(pages).tolist() == list(range(len(traces[100].texts)))  # each doc once, in order
    sizes = traces[100].tokens.groupby("doc_id", sort=False).size().to_numpy()
    for p, docs in enumerate(pages):  # full pages: at most 40 tokens each, and the next document did not fit
        assert sizes[docs].sum() <= 40 or len(docs) == 1
        if p + 1 < n:
            assert sizes[docs].sum() + sizes[pages[p + 1][0]] > 40
    last = source.stored_trace(100, page=n - 1)
    assert "doc8" in last.texts  # the last document of the stream
    expected = traces[100].select_docs(list(last.texts))
    np.testing.assert_array_equal(last.experts_array(), expected.experts_array())
    at_200 = source.record([("doc8", "", last.texts["doc8"])], 200)  # a later page's document at another step
    np.testing.assert_array_equal(at_200.experts_array(), traces[200].select_docs(["doc8"]).experts_array())
    with pytest.raises(ValueError, match="cannot be routed"):
        source.record([("a", "", last.texts["doc8"]), ("b", "", source.stored_trace(100).texts["doc0"])], 200)


@pytest.fixture(scope="module")
def sampled(tmp_path_factory):
    """Two steps of 9 documents with router inputs (D=8); the stored sample: up to 12, an equal share per label."""
    traces = {s: make_trace(seed=3, routing_seed=s, step=s, D=8) for s in (100, 200)}
    return write_dataset(tmp_path_factory.mktemp("sampled") / "tiny", traces, max_hidden=12), traces


def test_projection_takes_the_whole_stored_sample(sampled):
    from analysis.projections import project

    root, traces = sampled
    source = DatasetSource(root, threads=1, page_tokens=40)
    first_page = set(source.stored_trace(200).texts)
    trace = source.aggregates(200).projection_trace()
    stored = source.dataset.sample(200)
    assert trace.n_tokens == len(stored["doc_index"]) == len(trace.hidden_rows)
    assert set(trace.texts) - first_page, "the sample reaches beyond the first page"
    full = traces[200]
    key = full.tokens.reset_index().set_index(["doc_id", "position"])["token_row"]
    rows = key.loc[list(zip(trace.tokens["doc_id"], trace.tokens["position"]))].to_numpy()
    np.testing.assert_array_equal(trace.hidden, full.hidden[rows])  # float16 stored as recorded
    np.testing.assert_array_equal(trace.experts_array(), full.experts_array()[rows])
    np.testing.assert_array_equal(trace.tokens["token_text"], full.tokens["token_text"].to_numpy()[rows])
    np.testing.assert_array_equal(trace.tokens["label"], full.tokens["label"].to_numpy()[rows])
    proj = project(trace, 1, "pca")
    assert len(proj.coords) == trace.n_tokens and set(proj.coords["doc_id"]) - first_page
    assert source.aggregates(100).projection_trace().meta["step"] == 100
