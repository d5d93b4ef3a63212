"""Tiny random Hugging Face MoE checkpoints for tests (nothing downloaded): one per supported family, hidden 32,
2 blocks, 4-8 experts, top-2, vocab 300, saved with safetensors and a locally trained byte-level BPE tokenizer.
Needs transformers (the optional `hf` extra); imported by tests only."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from analysis.hf import FAMILIES, find_moe_layers

TINY_TEXTS = [
    "The quick brown fox jumps over the lazy dog. " * 3,
    "def add(a, b):\n    return a + b\n" * 3,
    "Les experts du routeur choisissent les jetons, déjà vu. " * 2,
]
_TINY_COMMON: dict[str, Any] = {
    "vocab_size": 300,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 48,
    "max_position_embeddings": 64,
    "tie_word_embeddings": False,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "pad_token_id": 1,
    "num_experts_per_tok": 2,
}
_TINY_MLA = {"num_key_value_heads": 4, "kv_lora_rank": 16, "q_lora_rank": 16, "qk_rope_head_dim": 8}
_TINY_MLA.update(qk_nope_head_dim=8, v_head_dim=8)
_TINY_SHARED = {"moe_intermediate_size": 16, "n_shared_experts": 1, "n_group": 4, "topk_group": 2}
TINY_CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {  # family -> (transformers config class, overrides)
    "mixtral": ("MixtralConfig", {"num_local_experts": 4}),
    "qwen2_moe": (
        "Qwen2MoeConfig",
        {"num_experts": 6, "moe_intermediate_size": 16, "shared_expert_intermediate_size": 24},
    ),
    "qwen3_moe": ("Qwen3MoeConfig", {"num_experts": 6, "moe_intermediate_size": 16, "head_dim": 8}),
    "olmoe": ("OlmoeConfig", {"num_experts": 8}),
    "deepseek_v3": (
        "DeepseekV3Config",
        {
            **_TINY_MLA,
            **_TINY_SHARED,
            "n_routed_experts": 8,
            "first_k_dense_replace": 0,
            "routed_scaling_factor": 2.5,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
        },
    ),  # fmt: skip
    "glm4_moe": (
        "Glm4MoeConfig",
        {**_TINY_SHARED, "head_dim": 8, "n_routed_experts": 8, "first_k_dense_replace": 0},
    ),
    "deepseek_v2": (  # a dense first block: one MoE layer
        "DeepseekV2Config",
        {
            **_TINY_MLA,
            **_TINY_SHARED,
            "n_routed_experts": 8,
            "first_k_dense_replace": 1,
            "topk_method": "group_limited_greedy",
        },
    ),  # fmt: skip
    "gpt_oss": ("GptOssConfig", {"num_local_experts": 4, "head_dim": 8}),
    "granitemoe": ("GraniteMoeConfig", {"num_local_experts": 4}),
    "phimoe": ("PhimoeConfig", {"num_local_experts": 4}),
}


def tiny_hf_config(family: str):
    """A tiny config of a supported family: hidden 32, 2 blocks, 4-8 experts, top-2, vocab 300."""
    import transformers

    cls_name, overrides = TINY_CONFIGS[family]
    return getattr(transformers, cls_name)(**{**_TINY_COMMON, **overrides})


def save_tiny_hf_model(
    folder: str | Path,
    family: str = "olmoe",
    *,
    seed: int = 0,
    bias: torch.Tensor | None = None,
    texts: Sequence[str] = TINY_TEXTS,
) -> Path:
    """Write a random-weight model of `family` (safetensors) and a byte-level BPE tokenizer trained on `texts`
    (vocab 300, puts <s> before every text) into `folder`. Routers get N(0, 1) weights so top-k choices are far
    from ties; `bias` sets DeepSeek-V3's e_score_correction_bias in every MoE layer."""
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    folder = Path(folder)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(list(texts), trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")

    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(tiny_hf_config(family)).eval()
    spec = FAMILIES[family]
    with torch.no_grad():
        for layer in find_moe_layers(model, spec):
            layer.router.weight.normal_(0, 1.0)
            if bias is not None:
                getattr(layer.router, spec.bias_attr).copy_(bias)
    model.save_pretrained(folder, safe_serialization=True)
    fast.save_pretrained(folder)
    return folder
