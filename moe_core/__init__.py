"""moe_core: a small DeepSeek-V3-style MoE language model and its training.

Public API for scripts and notebooks:
    cfg = moe_core.preset("tiny"); model = moe_core.build_model(cfg)
    logits, aux_loss = model(token_ids_BS)
"""

import importlib

from moe_core.config import BalanceConfig, ModelConfig, MoEConfig, preset

_FROM_MODEL = ("LMOutput", "MoETransformer", "build_model", "count_parameters")


def __getattr__(name: str):
    # the model (and torch) load on first use, so torch-free modules (config, paths) import fast
    if name in _FROM_MODEL:
        return getattr(importlib.import_module("moe_core.model"), name)
    raise AttributeError(f"module 'moe_core' has no attribute {name!r}")


__all__ = [
    "BalanceConfig",
    "LMOutput",
    "ModelConfig",
    "MoEConfig",
    "MoETransformer",
    "build_model",
    "count_parameters",
    "preset",
]
__version__ = "0.1.0"
