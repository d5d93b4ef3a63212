"""RoutingTrace: exact parquet round trip, clear errors for bad files, views, subsets and unions."""

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analysis.trace import RoutingTrace, build_trace, concat, load
from analysis.trace_files import METADATA_KEY, sidecar_path


def make_trace(n_docs=2, doc_len=3, L=2, K=2, E=4, seed=0, arrays=True, texts=None, config=None):
    rng = np.random.default_rng(seed)
    n = n_docs * doc_len
    doc_ids = [f"d{i // doc_len}" for i in range(n)]
    hidden_rows = np.arange(0, n, 2)[:3]  # tokens 0, 2, 4 keep their router input
    experts = np.array([rng.permutation(E)[:K] for _ in range(n * L)], dtype=np.int64).reshape(n, L, K)
    return build_trace(
        tokens={
            "doc_id": doc_ids,
            "position": [i % doc_len for i in range(n)],
            "token_id": rng.integers(0, 300, n),
            "token_text": (texts or [f"t{i}" for i in range(n)]),
            "char_start": [i % doc_len for i in range(n)],
            "char_end": [i % doc_len + 1 for i in range(n)],
            "label": ["code" if i // doc_len % 2 else "prose" for i in range(n)],
        },
        experts=experts,
        weights=rng.random((n, L, K)),
        scores_k=rng.random((n, L, K)),
        biased_k=rng.random((n, L, K)),
        flips=rng.random((n, L, K)) < 0.3,
        shared_share=rng.random((n, L)),
        entropy=rng.random((n, L)),
        meta={"n_experts": E, "run": "r", "step": 7, "config": config or {"n_embd": 8}},
        texts={f"d{d}": "x" * doc_len for d in range(n_docs)},
        scores=rng.random((n, L, E)) if arrays else None,
        hidden=rng.standard_normal((len(hidden_rows), L, 8)) if arrays else None,
        hidden_rows=hidden_rows if arrays else None,
    )


def assert_same(a: RoutingTrace, b: RoutingTrace):
    for name in ("tokens", "routing", "token_layer"):
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name), check_exact=True)
    assert a.meta == b.meta and a.texts == b.texts
    for name in ("scores", "hidden", "hidden_rows"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None)
        if x is not None:
            assert x.dtype == y.dtype and x.shape == y.shape
            np.testing.assert_array_equal(x, y)


def test_tables_have_small_dtypes_and_canonical_order():
    tr = make_trace()
    assert tr.routing["layer"].dtype == np.int8 and tr.routing["expert"].dtype == np.int16
    assert tr.routing["token_row"].dtype == np.int32 and tr.routing["bias_flip"].dtype == bool
    assert tr.tokens.index.name == "token_row" and len(tr.routing) == 6 * 2 * 2 and len(tr.token_layer) == 12
    assert tr.routing["token_row"].tolist()[:8] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert tr.routing["rank"].tolist()[:4] == [0, 1, 0, 1]
    shuffled = tr.routing.iloc[::-1].reset_index(drop=True)
    with pytest.raises(ValueError, match="sorted"):
        RoutingTrace(tr.tokens, shuffled, tr.token_layer, meta=tr.meta)


def test_roundtrip_exact_with_arrays(tmp_path):
    tr = make_trace(texts=["<b>", "é😀", "", "a,b", '"q"', "\n"])
    path = tr.save(tmp_path / "t.parquet")
    assert sidecar_path(path).is_file()
    back = load(path)
    assert_same(tr, back)
    assert_same(tr, RoutingTrace.load(path))
    # the download form: the parquet alone, without the sidecar's arrays
    alone = tmp_path / "download.parquet"
    alone.write_bytes(tr.to_parquet_bytes())
    bare = load(alone)
    assert bare.scores is None and bare.hidden is None
    pd.testing.assert_frame_equal(bare.routing, tr.routing)
    assert bare.texts == tr.texts and bare.meta == tr.meta
    assert back.content_hash() == tr.content_hash()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    n_docs=st.integers(0, 3),
    doc_len=st.integers(1, 4),
    L=st.integers(1, 3),
    E=st.integers(2, 5),
    data=st.data(),
)
def test_roundtrip_exact_random(tmp_path, n_docs, doc_len, L, E, data):
    K = data.draw(st.integers(1, E))
    arrays = data.draw(st.booleans())
    texts = data.draw(st.lists(st.text(max_size=4), min_size=n_docs * doc_len, max_size=n_docs * doc_len))
    tr = make_trace(n_docs, doc_len, L, K, E, seed=data.draw(st.integers(0, 99)), arrays=arrays, texts=texts)
    path = tr.save(tmp_path / "r.parquet")
    assert sidecar_path(path).exists() == arrays
    assert_same(tr, load(path))


def test_not_a_file_not_parquet_not_a_trace(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        load(tmp_path / "missing.parquet")
    junk = tmp_path / "junk.parquet"
    junk.write_text("hello")
    with pytest.raises(ValueError, match="not a parquet file"):
        load(junk)
    other = tmp_path / "other.parquet"
    pq.write_table(pa.table({"a": [1, 2]}), other)
    with pytest.raises(ValueError, match="not a moe-explorer routing trace"):
        load(other)


def _rewrite_metadata(path, edit):
    table = pq.read_table(path)
    header = json.loads(table.schema.metadata[METADATA_KEY])
    raw = edit(header)
    pq.write_table(table.replace_schema_metadata({**table.schema.metadata, METADATA_KEY: raw}), path)


def test_malformed_traces(tmp_path):
    path = make_trace().save(tmp_path / "t.parquet")
    _rewrite_metadata(path, lambda h: b"{not json")
    with pytest.raises(ValueError, match="malformed routing-trace metadata"):
        load(path)

    path = make_trace().save(tmp_path / "t.parquet")
    _rewrite_metadata(path, lambda h: json.dumps({**h, "format": "moe-explorer-trace/99"}).encode())
    with pytest.raises(ValueError, match="unsupported trace format"):
        load(path)

    path = make_trace().save(tmp_path / "t.parquet")
    _rewrite_metadata(path, lambda h: json.dumps({**h, "n_tokens": 5}).encode())
    with pytest.raises(ValueError, match="malformed routing trace: .*rows"):
        load(path)

    path = make_trace().save(tmp_path / "t.parquet")
    table = pq.read_table(path)
    pq.write_table(table.drop_columns(["expert"]).replace_schema_metadata(table.schema.metadata), path)
    with pytest.raises(ValueError, match="missing column.*expert"):
        load(path)


def test_sidecar_missing_or_stale(tmp_path):
    path = make_trace(seed=1).save(tmp_path / "t.parquet")
    side = sidecar_path(path)
    stale = make_trace(seed=2).save(tmp_path / "u.parquet")
    side.write_bytes(sidecar_path(stale).read_bytes())
    with pytest.raises(ValueError, match="checksum"):
        load(path)
    side.unlink()
    with pytest.raises(ValueError, match="missing"):
        load(path)
    # saving without arrays removes an old sidecar, so it cannot be mistaken for this trace's
    make_trace(arrays=True).save(tmp_path / "v.parquet")
    make_trace(arrays=False).save(tmp_path / "v.parquet")
    assert not sidecar_path(tmp_path / "v.parquet").exists()
    assert load(tmp_path / "v.parquet").scores is None


def test_other_model_config_is_rejected(tmp_path):
    path = make_trace(config={"n_embd": 8, "moe": {"n_experts": 4}}).save(tmp_path / "t.parquet")
    assert load(path, expect_config={"n_embd": 8, "moe": {"n_experts": 4}}).n_tokens == 6
    with pytest.raises(ValueError, match=r"another model \(config differs in: moe.n_experts\)"):
        load(path, expect_config={"n_embd": 8, "moe": {"n_experts": 8}})


def test_views():
    tr = make_trace(L=2, K=2)
    arr = tr.experts_array()
    assert arr.shape == (6, 2, 2)
    top = tr.top1()
    assert list(top.columns) == ["token_row", "layer", "expert"] and len(top) == 12
    np.testing.assert_array_equal(top["expert"].to_numpy(), arr[:, :, 0].reshape(-1))
    # row i of routing belongs to token i // (L*K)
    r = tr.routing.iloc[13]
    assert (r["token_row"], r["layer"], r["rank"], r["expert"]) == (3, 0, 1, arr[3, 0, 1])


def test_csv_export(tmp_path):
    tr = make_trace(texts=["a", "b,c", "d", "e", "f", "g"])
    df = pd.read_csv(tr.to_csv(tmp_path / "t.csv"), keep_default_na=False)
    assert len(df) == 24
    assert {"token_text", "doc_id", "layer", "rank", "expert", "weight", "shared_share"} <= set(df.columns)
    assert df.loc[4, "token_text"] == "b,c" and df.loc[4, "token_row"] == 1


def test_select_docs_and_concat():
    tr = make_trace(n_docs=3, doc_len=2)
    code = tr.select_docs(labels=["code"])
    assert code.tokens["doc_id"].unique().tolist() == ["d1"] and code.n_tokens == 2
    np.testing.assert_array_equal(code.experts_array(), tr.experts_array()[2:4])
    np.testing.assert_array_equal(code.scores, tr.scores[2:4])
    # hidden rows were 0, 2, 4: only token 2 is in d1, and it becomes row 0
    assert code.hidden_rows.tolist() == [0]
    np.testing.assert_array_equal(code.hidden[0], tr.hidden[1])
    assert set(code.texts) == {"d1"}
    parts = [tr.select_docs(doc_ids=[d]) for d in ("d0", "d1", "d2")]
    assert concat(parts).content_hash() == tr.content_hash()
    with pytest.raises(ValueError, match="share doc_ids"):
        concat([parts[0], parts[0]])
    with pytest.raises(ValueError, match="different config"):
        concat([parts[0], make_trace(config={"n_embd": 16}).select_docs(doc_ids=["d1"])])
