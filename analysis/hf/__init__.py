"""Hugging Face MoE checkpoints from a local folder: the supported families (`families`), the folder before
loading (`folder`, no transformers import) and the loaded model (`loading`). Recording them is
`analysis.recording.record_hf`; docs/HF_MODELS.md."""

from analysis.hf.families import FAMILIES, MIN_TRANSFORMERS, FamilySpec, deepseek_v3_unbiased, supported_families
from analysis.hf.folder import DTYPES, family_of, hf_folder_info, memory_gb, read_config, safetensors_params
from analysis.hf.loading import HFMoELayer, HFMoEModel, find_moe_layers, load_hf_model, prefix_tokens, tokenize

__all__ = [
    "DTYPES",
    "FAMILIES",
    "MIN_TRANSFORMERS",
    "FamilySpec",
    "HFMoELayer",
    "HFMoEModel",
    "deepseek_v3_unbiased",
    "family_of",
    "find_moe_layers",
    "hf_folder_info",
    "load_hf_model",
    "memory_gb",
    "prefix_tokens",
    "read_config",
    "safetensors_params",
    "supported_families",
    "tokenize",
]
