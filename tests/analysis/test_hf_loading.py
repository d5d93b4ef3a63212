"""Loading a Hugging Face folder: dtypes, device maps, and one-line errors for bad folders."""

import json
import shutil

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers", reason="the HF adapter needs the optional extra: pip install .[hf]")

from analysis.hf import load_hf_model  # noqa: E402
from analysis.recording import record_hf  # noqa: E402
from tests.hf_fixtures import TINY_TEXTS  # noqa: E402

TEXTS = TINY_TEXTS
WINDOW = 12


def test_device_map_auto_matches_plain_load(hf_folders):
    """accelerate's device_map="auto" (here: everything on the CPU) records the same routing."""
    plain = record_hf(load_hf_model(hf_folders["mixtral"], device="cpu"), TEXTS[1], window=WINDOW)
    hf = load_hf_model(hf_folders["mixtral"], device_map="auto", dtype="float32")
    assert hf.device == "device_map=auto"
    mapped = record_hf(hf, TEXTS[1], window=WINDOW)
    np.testing.assert_array_equal(mapped.experts_array(), plain.experts_array())
    np.testing.assert_allclose(mapped.scores, plain.scores, rtol=1e-5, atol=1e-7)
    lean = record_hf(hf, TEXTS[1], window=WINDOW, keep_scores=False, max_hidden=0)  # entropy still recorded
    assert lean.scores is None and lean.hidden is None
    np.testing.assert_allclose(lean.token_layer["entropy"], plain.token_layer["entropy"], rtol=1e-5)


def test_bfloat16_load(hf_folders):
    hf = load_hf_model(hf_folders["olmoe"], device="cpu", dtype="bfloat16")
    assert next(hf.model.parameters()).dtype == torch.bfloat16
    trace = record_hf(hf, TEXTS[0], window=WINDOW)
    assert trace.meta["dtype"] == "bfloat16" and np.isfinite(trace.scores).all()
    np.testing.assert_allclose(trace.scores.sum(-1), 1.0, atol=1e-3)


def one_line_error(path, match, device="cpu"):
    with pytest.raises(ValueError, match=match) as err:
        load_hf_model(path, device=device)
    assert "\n" not in str(err.value)
    return str(err.value)


def test_non_moe_model_is_refused(tmp_path):
    cfg = transformers.LlamaConfig(vocab_size=300, hidden_size=32, num_hidden_layers=1, num_attention_heads=4)
    transformers.LlamaForCausalLM(cfg).save_pretrained(tmp_path / "llama")
    msg = one_line_error(tmp_path / "llama", "LlamaForCausalLM")
    assert "model_type 'llama'" in msg and "not a supported MoE architecture" in msg
    for name in ("Mixtral", "Qwen2-MoE", "Qwen3-MoE", "OLMoE", "DeepSeek-V3"):
        assert name in msg


def test_corrupted_folders_fail_clearly(hf_folders, tmp_path):
    one_line_error(tmp_path / "missing", "not found")
    (tmp_path / "empty").mkdir()
    one_line_error(tmp_path / "empty", "no config.json")

    bad_json = tmp_path / "bad_json"
    shutil.copytree(hf_folders["mixtral"], bad_json)
    (bad_json / "config.json").write_text('{"model_type": "mixtral", ')
    one_line_error(bad_json, "config.json is corrupted")

    truncated = tmp_path / "truncated"
    shutil.copytree(hf_folders["mixtral"], truncated)
    weights = truncated / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    one_line_error(truncated, "truncated")

    no_weights = tmp_path / "no_weights"
    shutil.copytree(hf_folders["mixtral"], no_weights)
    (no_weights / "model.safetensors").unlink()
    (no_weights / "pytorch_model.bin").write_bytes(b"never unpickled")
    one_line_error(no_weights, "no .safetensors weights")

    sharded = tmp_path / "sharded"  # an index naming a shard that is not there
    shutil.copytree(hf_folders["mixtral"], sharded)
    index = {"metadata": {}, "weight_map": {"a": "model.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    one_line_error(sharded, "lacks weight shard")

    # a well-formed file missing a router: transformers would initialise it randomly; we refuse
    partial = tmp_path / "partial"
    shutil.copytree(hf_folders["mixtral"], partial)
    from safetensors.torch import load_file, save_file

    tensors = load_file(partial / "model.safetensors")
    (router_key,) = [k for k in tensors if k.startswith("model.layers.1.") and k.endswith(".gate.weight")]
    del tensors[router_key]  # saved in the hub layout (block_sparse_moe.gate), converted on load
    save_file(tensors, partial / "model.safetensors", metadata={"format": "pt"})
    one_line_error(partial, "lack 1 tensor")

    wrong_shape = tmp_path / "wrong_shape"
    shutil.copytree(hf_folders["mixtral"], wrong_shape)
    cfg = json.loads((wrong_shape / "config.json").read_text())
    cfg["num_local_experts"] = 6
    (wrong_shape / "config.json").write_text(json.dumps(cfg))
    one_line_error(wrong_shape, "cannot load the weights")


def test_unknown_or_missing_device_is_refused(hf_folders):
    one_line_error(hf_folders["olmoe"], "unknown device", device="tpu")
    if not torch.cuda.is_available():
        one_line_error(hf_folders["olmoe"], "CUDA is not available", device="cuda")
