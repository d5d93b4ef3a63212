"""The folder before loading: what the model picker shows, parameter counts from safetensors headers."""

import pytest

transformers = pytest.importorskip("transformers", reason="the HF adapter needs the optional extra: pip install .[hf]")

from analysis.hf import hf_folder_info, load_hf_model, memory_gb  # noqa: E402


def test_folder_info(hf_folders, tmp_path):
    info = hf_folder_info(hf_folders["mixtral"])
    assert info["supported"] and info["family"] == "Mixtral" and (info["n_experts"], info["top_k"]) == (4, 2)
    model = load_hf_model(hf_folders["mixtral"], device="cpu").model
    assert info["n_params"] == sum(p.numel() for p in model.parameters())
    bad = hf_folder_info(tmp_path / "nowhere")
    assert not bad["supported"] and "not found" in bad["reason"]


def test_memory_gb_by_hand():
    assert memory_gb(2_000_000_000) == 4.0  # bfloat16: 2 bytes per parameter
    assert memory_gb(1_000_000_000, "float32") == 4.0
