"""Run directory: atomic safetensors weights, JSONL history, and clear errors on broken runs."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from moe_core import build_model, preset
from moe_core.files import append_jsonl, read_jsonl, write_json_atomic
from moe_core.paths import default_run_path
from moe_core.run import RUN_FORMAT, list_runs, load_run, load_weights, save_weights, state_path, weights_path


def make_run(path, cfg=None, steps=(5,)):
    """A minimal run directory: run.json + weights of a freshly initialised tiny model at `steps`."""
    cfg = cfg or preset("tiny")
    torch.manual_seed(0)
    model = build_model(cfg)
    write_json_atomic(path / "run.json", {"format": RUN_FORMAT, "name": "t", "model": cfg.to_dict()})
    for step in steps:
        save_weights(weights_path(path, step), model.state_dict(), {"config": cfg.to_dict(), "step": str(step)})
    return model


def test_weights_round_trip_with_metadata_and_no_temp_files(tmp_path):
    tensors = {"a": torch.arange(6, dtype=torch.float32).view(2, 3), "b": torch.tensor([1, 2], dtype=torch.int32)}
    path = tmp_path / "w.safetensors"
    save_weights(path, tensors, {"config": {"x": 1}, "step": "7"})
    got, meta = load_weights(path)
    assert torch.equal(got["a"], tensors["a"]) and torch.equal(got["b"], tensors["b"])
    assert meta == {"config": '{"x": 1}', "step": "7"}  # non-str values stored as JSON text
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]  # the temp file was renamed away


def test_read_jsonl_ignores_torn_last_line_only(tmp_path):
    path = tmp_path / "h.jsonl"
    assert read_jsonl(path) == []
    append_jsonl(path, {"step": 1})
    append_jsonl(path, {"step": 2})
    with open(path, "a") as f:
        f.write('{"step": 3, "lo')  # a writer caught mid-line
    assert read_jsonl(path) == [{"step": 1}, {"step": 2}]
    path.write_text('{"step": 1}\n{"st\n{"step": 3}\n')
    with pytest.raises(ValueError, match=r"h.jsonl:2"):
        read_jsonl(path)


def test_load_run_and_model(tmp_path):
    model = make_run(tmp_path, steps=(10, 5))
    (tmp_path / "checkpoints" / ".step_000015.safetensors.abc.tmp").write_bytes(b"partial")  # a crashed write
    save_weights(state_path(tmp_path, 10), {"x": torch.zeros(1)}, {})
    run = load_run(tmp_path)
    assert run.name == "t" and run.config == preset("tiny")
    assert run.checkpoints() == [5, 10]  # state files and temp files are not checkpoints
    loaded = run.load_model()
    assert not loaded.training
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
    assert run.trace_path(10).name == "trace_step_000010.parquet"
    with pytest.raises(ValueError, match="no checkpoint at step 7"):
        run.load_model(7)


def test_eval_docs_and_history(tmp_path):
    make_run(tmp_path)
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "docs.jsonl").write_text(json.dumps({"doc_id": 3, "label": "math", "text": "1+1=2"}) + "\n")
    append_jsonl(tmp_path / "history" / "train.jsonl", {"step": 1, "loss": 5.0})
    append_jsonl(tmp_path / "history" / "eval.jsonl", {"step": 1, "val_loss": 5.5})
    run = load_run(tmp_path)
    (doc,) = run.eval_docs()
    assert (doc.doc_id, doc.label, doc.text) == (3, "math", "1+1=2")
    assert run.history() == [{"step": 1, "loss": 5.0}]
    assert run.eval_history() == [{"step": 1, "val_loss": 5.5}]


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "no run.json"),
        ("{not json", "invalid run.json"),
        (json.dumps({"format": "other/9", "model": {}}), "unknown run format"),
        (json.dumps({"format": RUN_FORMAT, "model": {}, "colour": "red"}), "unknown field.*colour"),
        (json.dumps({"format": RUN_FORMAT, "model": {"n_layers": 3}}), "invalid model config.*n_layers"),
        (json.dumps({"format": RUN_FORMAT, "model": {"n_embd": 30, "n_head": 4}}), "invalid model config.*n_embd"),
        (json.dumps({"format": RUN_FORMAT}), "no 'model'"),
    ],
)
def test_load_run_errors_name_the_problem(tmp_path, content, message):
    if content is not None:
        (tmp_path / "run.json").write_text(content)
    with pytest.raises(ValueError, match=message):
        load_run(tmp_path)


def test_load_run_missing_folder(tmp_path):
    with pytest.raises(ValueError, match="no such folder"):
        load_run(tmp_path / "nope")


def test_corrupt_checkpoints_give_clear_errors(tmp_path):
    model = make_run(tmp_path, steps=(1,))
    run = load_run(tmp_path)
    good = weights_path(tmp_path, 1).read_bytes()
    # a pickle renamed to .safetensors (never unpickled: safetensors rejects the header)
    weights_path(tmp_path, 2).write_bytes(pickle.dumps({k: v.numpy() for k, v in model.state_dict().items()}))
    with pytest.raises(ValueError, match="not a valid safetensors file"):
        run.load_model(2)
    weights_path(tmp_path, 3).write_bytes(good[: len(good) // 2])  # truncated
    with pytest.raises(ValueError, match="not a valid safetensors file"):
        run.load_model(3)
    # shape mismatch: weights of a model with 8 experts under a 4-expert config
    wide = preset("tiny")
    wide.moe.n_experts = 8
    save_weights(weights_path(tmp_path, 4), build_model(wide).state_dict(), {})
    with pytest.raises(ValueError, match=r"shape \(8,"):
        run.load_model(4)
    # a missing tensor
    partial = {k: v for k, v in model.state_dict().items() if k != "norm.weight"}
    save_weights(weights_path(tmp_path, 5), partial, {})
    with pytest.raises(ValueError, match="missing 1 tensor.*norm.weight"):
        run.load_model(5)
    assert run.load_model(1) is not None  # the good one still loads


def test_list_runs_and_default_path(tmp_path):
    for name in ("b", "a"):
        (tmp_path / name).mkdir()
        make_run(tmp_path / name, steps=())
    (tmp_path / "not_a_run").mkdir()
    assert list_runs(tmp_path) == [tmp_path / "a", tmp_path / "b"]
    assert list_runs(tmp_path / "missing") == []
    assert default_run_path().parts[-2:] == ("sample_data", "default_run")
