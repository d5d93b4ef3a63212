"""The routing dataset on disk: RoutingTrace <-> dataset round trip, the manifest's checks, one-line errors."""

import dataclasses
import json

import numpy as np
import pytest

from analysis.dataset import DatasetError, DatasetWriter, from_trace, layout, open_dataset
from analysis.dataset.writer import ShardBuilder, merged_progress, sample_keys, stratified_pick
from tests.analysis.test_trace import assert_same, make_trace


def test_paths_and_ids():
    assert layout.shard_id(0, 7) == "w000-s000007"
    assert layout.parse_shard_id("w012-s000003") == (12, 3)
    assert layout.table_path("routing", "w000-s000001", 5, 2) == "routing/step=5/layer=2/part-w000-s000001.parquet"
    assert layout.table_path("token_layer", "w000-s000001", None, 0).startswith("token_layer/step=none/layer=0/")
    assert layout.parse_path("routing/step=none/layer=2/part-w001-s000004.parquet") == {
        "table": "routing", "step": None, "layer": 2, "shard": "w001-s000004"
    }  # fmt: skip
    with pytest.raises(DatasetError, match="malformed shard id"):
        layout.parse_shard_id("shard-1")


def test_trace_roundtrip_exact(tmp_path):
    trace = dataclasses.replace(make_trace(n_docs=3, doc_len=4, L=2, K=2, E=4), scores=None)
    ds = from_trace(trace, tmp_path / "ds")
    ds.verify()
    assert (ds.n_docs, ds.n_tokens, ds.steps, ds.complete) == (3, 12, [7], True)
    back = ds.to_trace()
    assert_same(back, trace)
    assert back.content_hash() == trace.content_hash()
    # a bounded page: the first document, or given ones
    part = ds.to_trace(1)
    assert_same(part, trace.select_docs(["d0"]))
    assert_same(ds.to_trace([2, 0]), trace.select_docs(["d0", "d2"]))


def test_trace_without_step_or_hidden(tmp_path):
    trace = make_trace(arrays=False)
    trace.meta = {**trace.meta, "step": None}
    ds = from_trace(trace, tmp_path / "ds")
    assert ds.steps == [None]
    assert list(ds.files("routing", None, 0))[0].parent.parent.name == "step=none"
    assert_same(ds.to_trace(step=None), trace)
    with pytest.raises(DatasetError, match="step 3 is not recorded"):
        ds.to_trace(step=3)


def test_partitions_read_only_their_files(tmp_path):
    ds = from_trace(make_trace(n_docs=2, L=3), tmp_path / "ds")
    assert len(ds.files("routing")) == 3 and len(ds.files("routing", 7, 1)) == 1
    table = ds.read("routing", 7, 1)
    assert table.schema == layout.ROUTING_SCHEMA and table.num_rows == 6 * 2


def test_wrong_size_checksum_and_version_are_one_line_errors(tmp_path):
    root = tmp_path / "ds"
    from_trace(make_trace(), root)
    manifest = json.loads((root / "manifest.json").read_text())
    rel = next(iter(manifest["shards"][0]["files"]))
    path = root / rel
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other bytes: only the checksum sees it
    path.write_bytes(bytes(data))
    ds = open_dataset(root)
    with pytest.raises(DatasetError, match="checksum does not match") as err:
        ds.verify()
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    path.write_bytes(bytes(data[:-10]))  # truncated
    with pytest.raises(DatasetError, match="truncated or replaced"):
        open_dataset(root)
    path.unlink()
    with pytest.raises(DatasetError, match="missing"):
        open_dataset(root)
    (root / "manifest.json").write_text(json.dumps({**manifest, "format": "moe-explorer-dataset/9"}))
    with pytest.raises(DatasetError, match="unsupported dataset format 'moe-explorer-dataset/9'"):
        open_dataset(root)
    (root / "manifest.json").write_text("{not json")
    with pytest.raises(DatasetError, match="not a JSON manifest"):
        open_dataset(root)
    with pytest.raises(DatasetError, match="not a routing dataset"):
        open_dataset(tmp_path / "nothing")


def test_writer_refuses_other_settings_and_foreign_folders(tmp_path):
    root = tmp_path / "ds"
    DatasetWriter(root, {"name": "a", "kind": "run", "path": "/x"}, steps=[1], config={"shard_tokens": 10})
    with pytest.raises(DatasetError, match="recorded with another config"):
        DatasetWriter(root, {"name": "a", "kind": "run", "path": "/x"}, steps=[1], config={"shard_tokens": 20})
    with pytest.raises(DatasetError, match="recorded with another source / steps"):
        DatasetWriter(root, {"name": "b", "kind": "run", "path": "/y"}, steps=[2], config={"shard_tokens": 10})
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("hi")
    with pytest.raises(DatasetError, match="not empty and not a routing dataset"):
        DatasetWriter(tmp_path / "other", {"name": "a"})


def test_unfinished_shard_is_never_listed_and_is_cleaned(tmp_path):
    root = tmp_path / "ds"
    trace = dataclasses.replace(make_trace(n_docs=2), scores=None)
    builder = ShardBuilder([7], max_hidden=10)
    doc_index = trace.tokens["doc_id"].map({"d0": 0, "d1": 1}).to_numpy()
    builder.add_docs([0, 1], ["d0", "d1"], ["prose", "code"], ["xxx", "xxx"], [3, 3])
    builder.add_trace(trace, 7, with_tokens=True, doc_index=doc_index)
    writer = DatasetWriter(root, {"name": "r"}, steps=[7])
    writer.write_shard("w000-s000000", builder.build(), builder.meta)
    # a crash after the files of shard 1 were renamed into place, before its progress line, mid-append
    stray = root / layout.table_path("tokens", "w000-s000001")
    stray.write_bytes(b"half")
    temp = root / "docs" / ".part-w000-s000002.parquet.abc.tmp"
    temp.write_bytes(b"half")
    with open(layout.progress_path(root, 0), "a") as f:
        f.write('{"id": "w000-s0000')  # torn
    writer = DatasetWriter(root, {"name": "r"}, steps=[7])
    assert not stray.exists() and not temp.exists()
    assert list(writer.finished_shards()) == ["w000-s000000"]
    writer.finalize(complete=True)
    assert [s["id"] for s in merged_progress(root)] == ["w000-s000000"]
    assert_same(open_dataset(root).to_trace(), trace.select_docs(["d0", "d1"]))


def test_stratified_pick_shares_and_is_order_free():
    labels = np.array(["a"] * 10 + ["b"] * 2 + ["c"] * 10)
    keys = sample_keys(np.arange(22), np.zeros(22))
    pick = stratified_pick(labels, keys, 8)
    assert sorted(np.unique(labels[pick], return_counts=True)[1].tolist()) == [2, 3, 3]
    perm = np.random.default_rng(0).permutation(22)
    again = stratified_pick(labels[perm], keys[perm], 8)
    assert sorted(perm[again].tolist()) == sorted(pick.tolist())
    assert len(stratified_pick(labels, keys, 100)) == 22 and len(stratified_pick(labels, keys, 0)) == 0
