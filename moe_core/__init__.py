"""moe_core: a small DeepSeek-V3-style MoE language model and its training.

Public API for scripts and notebooks:
    cfg = moe_core.preset("tiny"); model = moe_core.build_model(cfg)
    logits, aux_loss = model(token_ids_BS)
"""

from moe_core.config import BalanceConfig, ModelConfig, MoEConfig, preset
from moe_core.model import LMOutput, MoETransformer, build_model, count_parameters

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
