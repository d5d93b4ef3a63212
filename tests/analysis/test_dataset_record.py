"""The streaming recorder: inputs streamed in a fixed order, shards equal to the in-memory recording, resume
keeps finished shards, several steps, a stratified sample, and one-line errors for bad input."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import moe_core
from analysis.dataset import DatasetError, open_dataset
from analysis.dataset.inputs import iter_docs, list_inputs
from analysis.dataset.record import RecordConfig, record_dataset
from analysis.sources import RunSource
from moe_core.files import write_json_atomic
from moe_core.run import save_weights, weights_path
from moe_core.tokenizer import save_tokenizer, train_tokenizer

TEXTS = {
    "prose": "The river bends slowly past the old mill, and the town sleeps. ",
    "code": "for i in range(10):\n    total += i * i\nprint(total)\n",
    "math": "12 + 7 = 19; 3 * (4 + 5) = 27; x^2 - 1 = (x - 1)(x + 1). ",
}


def make_run(root, steps=(2,)):
    """A run directory by hand: run.json, tokenizer, checkpoints at `steps` (no training)."""
    cfg = moe_core.preset("tiny")
    cfg.vocab_size = 300
    save_tokenizer(train_tokenizer(list(TEXTS.values()), 300), root / "tokenizer.json")
    write_json_atomic(root / "run.json", {"format": "moe-explorer-run/1", "name": "tiny-rec", "model": cfg.to_dict()})
    for i, step in enumerate(steps):
        torch.manual_seed(i)
        model = moe_core.build_model(cfg)
        save_weights(weights_path(root, step), model.state_dict(), {"config": cfg.to_dict(), "step": str(step)})
    return root


def write_corpus(path, n_docs=24, reps=3):
    """A JSONL corpus of n_docs labelled documents of a few dozen tokens each."""
    labels = list(TEXTS)
    with open(path, "w") as f:
        for i in range(n_docs):
            label = labels[i % len(labels)]
            f.write(json.dumps({"text": f"{i}: " + TEXTS[label] * reps, "label": label, "doc_id": f"doc{i}"}) + "\n")
    return path


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("runs") / "tiny", steps=(1, 2))


def all_rows(ds, table, **kw):
    """Every row of a table, sorted, as a dict of lists (order-free comparison of two datasets)."""
    t = ds.read(table, **kw)
    keys = [c for c in ("doc_index", "position", "rank") if c in t.column_names]
    return t.sort_by([(k, "ascending") for k in keys]).to_pydict()


def test_inputs_stream_in_a_fixed_order(tmp_path):
    (tmp_path / "folder" / "poems").mkdir(parents=True)
    (tmp_path / "folder" / "poems" / "a.txt").write_text("roses are red\n\nviolets are blue")
    (tmp_path / "folder" / "top.md").write_text("# notes")
    (tmp_path / "folder" / ".hidden.txt").write_text("skip me")
    (tmp_path / "folder" / "bin.dat").write_bytes(b"\x00\x01binary")
    rows = [{"text": "first", "label": "x", "doc_id": 7}, {"text": "   "}, {"text": "third"}]
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    pq.write_table(pa.table({"text": ["p0", "p1"], "label": ["L", None]}), tmp_path / "d.parquet", row_group_size=1)
    files = list_inputs([tmp_path / "folder", tmp_path / "c.jsonl", tmp_path / "d.parquet"])
    docs = list(iter_docs(files))
    assert [(d.doc_index, d.doc_id, d.label, d.text) for d in docs] == [
        (0, "poems/a.txt", "poems", "roses are red\n\nviolets are blue"),
        (1, "top.md", "folder", "# notes"),
        (2, "7", "x", "first"),
        (3, "3", "", "third"),
        (4, "4", "L", "p0"),
        (5, "5", "", "p1"),
    ]


def test_bad_inputs_are_one_line_errors_naming_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"label": "no text"}\n')
    with pytest.raises(ValueError, match=rf"^{bad}:2: no 'text' field"):
        list(iter_docs(list_inputs([bad])))
    bad.write_text('{"text": "ok"}\n{not json\n')
    with pytest.raises(ValueError, match=rf"^{bad}:2: not a JSON line"):
        list(iter_docs(list_inputs([bad])))
    good = tmp_path / "good.parquet"
    pq.write_table(pa.table({"text": ["a" * 50] * 100}), good)
    truncated = tmp_path / "truncated.parquet"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError, match=rf"^{truncated}: not a readable Parquet file") as err:
        list(iter_docs(list_inputs([truncated])))
    assert "\n" not in str(err.value)
    foreign = tmp_path / "foreign.parquet"
    pq.write_table(pa.table({"body": ["x"]}), foreign)
    with pytest.raises(ValueError, match=rf"^{foreign}: no 'text' column \(columns: body\)"):
        list(iter_docs(list_inputs([foreign])))
    with pytest.raises(ValueError, match="no such file or folder"):
        list_inputs([tmp_path / "missing.txt"])


def test_dataset_equals_in_memory_recording(run_dir, tmp_path, one_thread):
    corpus = write_corpus(tmp_path / "c.jsonl")
    source = RunSource(run_dir)
    result = record_dataset(source, [corpus], tmp_path / "ds", RecordConfig(batch_tokens=100, shard_tokens=300))
    ds = open_dataset(tmp_path / "ds")
    ds.verify()
    assert result.status == "complete" and ds.complete and len(ds.shards) == result.shards_written > 2
    assert ds.steps == [2] and ds.meta["n_layers"] == 2
    docs = [(str(d.doc_index), d.label, d.text) for d in iter_docs(list_inputs([corpus]))]
    ref = source.record(docs, 2)
    trace = ds.to_trace(step=2)
    assert trace.n_tokens == ref.n_tokens == ds.n_tokens
    assert np.array_equal(trace.experts_array(), ref.experts_array())
    np.testing.assert_allclose(trace.routing["weight"], ref.routing["weight"], atol=1e-5)
    assert trace.tokens["doc_id"].tolist()[0] == "doc0" and set(trace.tokens["label"]) == set(TEXTS)
    # a bounded page of the first 2 documents
    page = ds.to_trace(2)
    assert page.tokens["doc_id"].unique().tolist() == ["doc0", "doc1"]


def test_resume_skips_finished_shards_and_refuses_other_settings(run_dir, tmp_path, one_thread):
    corpus = write_corpus(tmp_path / "c.jsonl")
    config = RecordConfig(batch_tokens=100, shard_tokens=300)
    source = RunSource(run_dir)
    out = tmp_path / "ds"
    full = record_dataset(source, [corpus], tmp_path / "full", config)
    # a recording that stopped after 2 shards: keep only their progress lines
    record_dataset(source, [corpus], out, config)
    progress = out / "progress" / "worker-000.jsonl"
    progress.write_text("".join(progress.read_text().splitlines(keepends=True)[:2]))
    (out / "manifest.json").write_text(
        json.dumps({**json.loads((out / "manifest.json").read_text()), "complete": False, "shards": []})
    )
    with pytest.raises(DatasetError, match="add --resume to continue it"):
        record_dataset(source, [corpus], out, config)
    with pytest.raises(DatasetError, match="recorded with another config"):
        record_dataset(source, [corpus], out, RecordConfig(batch_tokens=100, shard_tokens=200), resume=True)
    lines = []
    result = record_dataset(source, [corpus], out, config, resume=True, log=lines.append)
    assert (result.shards_skipped, result.shards_written) == (2, full.shards_written - 2)
    assert "2 finished shard(s)" in lines[0]
    a, b = open_dataset(tmp_path / "full"), open_dataset(out)
    for table in ("docs", "tokens", "routing", "token_layer"):
        assert all_rows(a, table) == all_rows(b, table)
    again = record_dataset(source, [corpus], out, config, resume=True, log=lines.append)
    assert again.status == "already complete" and "already complete" in lines[-1]
    corpus.write_text(corpus.read_text() + json.dumps({"text": "one more"}) + "\n")
    with pytest.raises(DatasetError, match="recorded with another inputs"):
        record_dataset(source, [corpus], out, config, resume=True)


def test_several_steps_and_the_stratified_sample(run_dir, tmp_path, one_thread):
    corpus = write_corpus(tmp_path / "c.jsonl", n_docs=12)
    config = RecordConfig(batch_tokens=100, shard_tokens=250, max_hidden=30, steps=[1, 2])
    record_dataset(RunSource(run_dir), [corpus], tmp_path / "ds", config)
    ds = open_dataset(tmp_path / "ds")
    assert ds.steps == [1, 2] and len(ds.files("routing", 1)) == len(ds.files("routing", 2)) == 2 * len(ds.shards)
    one, two = ds.to_trace(step=1), ds.to_trace(step=2)
    assert one.tokens.equals(two.tokens) and not np.array_equal(one.experts_array(), two.experts_array())
    sample = ds.sample(2)
    assert sample["hidden"].shape[0] == 30 and sample["hidden"].dtype == np.float16
    assert sorted(np.unique(sample["label"], return_counts=True)[1].tolist()) == [10, 10, 10]
    # the same tokens at every step, and the trace carries the sampled tokens of its documents
    assert np.array_equal(ds.sample(1)["doc_index"], sample["doc_index"])
    assert two.hidden is not None and len(two.hidden_rows) >= 30
    with pytest.raises(ValueError, match="step 5 has no weights"):
        record_dataset(RunSource(run_dir), [corpus], tmp_path / "ds2", RecordConfig(steps=[5]))


@pytest.mark.slow
def test_hugging_face_source_records_at_step_none(tmp_path, one_thread):
    pytest.importorskip("transformers", reason="the HF adapter needs the optional extra: pip install .[hf]")
    from analysis.sources import HFSource
    from tests.hf_fixtures import save_tiny_hf_model

    source = HFSource(save_tiny_hf_model(tmp_path / "olmoe", "olmoe"), device="cpu")
    corpus = write_corpus(tmp_path / "c.jsonl", n_docs=6, reps=1)
    record_dataset(source, [corpus], tmp_path / "ds", RecordConfig(batch_tokens=60, shard_tokens=120))
    ds = open_dataset(tmp_path / "ds")
    assert ds.steps == [None] and all("/step=none/" in str(p) for p in ds.files("routing"))
    assert ds.manifest["source"]["kind"] == "hf" and len(ds.shards) > 1
    docs = [(str(d.doc_index), d.label, d.text) for d in iter_docs(list_inputs([corpus]))]
    ref = source.record(docs)
    trace = ds.to_trace(step=None)
    assert trace.n_tokens == ref.n_tokens and np.array_equal(trace.experts_array(), ref.experts_array())


def test_ctrl_c_keeps_finished_shards_listed(run_dir, tmp_path, one_thread):
    corpus = write_corpus(tmp_path / "c.jsonl", n_docs=12)
    config = RecordConfig(batch_tokens=100, shard_tokens=200)
    source = RunSource(run_dir)
    calls = []

    class Interrupted:  # the source, with Ctrl-C arriving during its 4th model call
        def __getattr__(self, name):
            return getattr(source, name)

        def record(self, docs, step=None):
            calls.append(1)
            if len(calls) == 4:
                raise KeyboardInterrupt
            return source.record(docs, step)

    with pytest.raises(KeyboardInterrupt):
        record_dataset(Interrupted(), [corpus], tmp_path / "ds", config)
    ds = open_dataset(tmp_path / "ds")  # the manifest lists the shards finished before the interrupt
    assert 1 <= len(ds.shards) < 12 and not ds.complete
    result = record_dataset(source, [corpus], tmp_path / "ds", config, resume=True)
    assert result.shards_skipped == len(ds.shards) and open_dataset(tmp_path / "ds").complete


def test_progress_total_follows_the_tokens_per_byte_of_the_planned_shard():
    """The bar's total is re-estimated as soon as a shard is tokenized, not only after it is recorded: on a
    single-shard corpus at 2 bytes a token the total is right before the first batch (the first guess is 4)."""
    from analysis.dataset.inputs import InputDoc
    from analysis.dataset.record import PlannedShard, RecordProgress

    bar = RecordProgress(True, input_bytes=1000, name="t")
    assert bar.bar.total == 250  # 4 bytes a token, the first guess
    shard = PlannedShard(0, [InputDoc(0, "0", "", "x" * 600, 600), InputDoc(1, "1", "", "y" * 400, 400)], [300, 200])
    bar.planned(shard)
    assert bar.bar.total == 500
    bar.update(500)
    bar.advance(shard, counted=True)
    assert bar.bar.n == bar.bar.total == 500
    bar.close()


def test_text_files_name_their_documents(tmp_path):
    """A text file's documents are named by its path below the given folder (#n when it is cut in several)."""
    from analysis.dataset.inputs import iter_docs, list_inputs

    (tmp_path / "corpus" / "legal").mkdir(parents=True)
    (tmp_path / "corpus" / "legal" / "a.txt").write_text("short text")
    (tmp_path / "corpus" / "long.md").write_text("\n\n".join(["paragraph " * 150] * 4))
    (tmp_path / "one.txt").write_text("alone")
    docs = list(iter_docs(list_inputs([tmp_path / "corpus", tmp_path / "one.txt"])))
    ids = [d.doc_id for d in docs]
    assert ids[0] == "legal/a.txt" and docs[0].label == "legal"
    assert ids[1:-1] == [f"long.md#{i}" for i in range(1, len(ids) - 1)] and len(ids) > 3
    assert ids[-1] == "one.txt" and docs[-1].label == "one"
