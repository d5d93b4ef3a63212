"""The supported Hugging Face MoE families: how each one's router scores, biases and shares (`FAMILIES`, keyed
by config.json "model_type"). Torch only; no transformers import."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from moe_core.moe import choose_experts

# routers return (logits, weights, indices) in every supported family only from this version on (5.20 still
# differs for GraniteMoE; 5.12 for DeepSeek/GLM/Granite); tested with 5.23.0
MIN_TRANSFORMERS = (5, 23)


def deepseek_v3_unbiased(router: torch.nn.Module, scores_TE: torch.Tensor) -> torch.Tensor:
    """(T, K) experts DeepSeek-V3's router (transformers' DeepseekV3TopkRouter; GLM-4-MoE's is the same) would
    choose on the unbiased scores, for bias flips. Its algorithm is ours: keep the `topk_group` groups whose two
    best scores sum highest, then the top_k experts inside them (`moe_core.moe.choose_experts`; tested against
    the model's router)."""
    return choose_experts(scores_TE, router.top_k, router.num_group, router.topk_group)


@dataclass(frozen=True)
class FamilySpec:
    """How one transformers MoE family routes; every router returns (logits_TE, weights_TK, indices_TK)."""

    name: str  # shown to users
    router_class: str  # class name of the router module inside each MoE block
    experts_key: str  # config.json key holding the number of routed experts
    score_fn: str = "softmax"  # "softmax" | "sigmoid": scores over all experts from the router logits
    bias_attr: str | None = None  # router buffer added to the scores only to choose experts
    unbiased_choice: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor] | None = None  # for bias flips
    shared_attr: str | None = None  # shared-expert module on the MoE block
    shared_gate_attr: str | None = None  # its scalar gate: shared output = sigmoid(gate(x)) * shared(x)
    notes: str = ""  # what the scores mean, for docs and the app


FAMILIES: dict[str, FamilySpec] = {  # key: config.json "model_type"
    "mixtral": FamilySpec("Mixtral", "MixtralTopKRouter", "num_local_experts", notes="softmax, top-k renormalised"),
    "qwen2_moe": FamilySpec(
        "Qwen2-MoE",
        "Qwen2MoeTopKRouter",
        "num_experts",
        shared_attr="shared_expert",
        shared_gate_attr="shared_expert_gate",
        notes="softmax; one sigmoid-gated shared expert",
    ),
    "qwen3_moe": FamilySpec("Qwen3-MoE", "Qwen3MoeTopKRouter", "num_experts", notes="softmax"),
    "olmoe": FamilySpec("OLMoE", "OlmoeTopKRouter", "num_experts", notes="softmax"),
    "deepseek_v3": FamilySpec(
        "DeepSeek-V3",
        "DeepseekV3TopkRouter",
        "n_routed_experts",
        score_fn="sigmoid",
        bias_attr="e_score_correction_bias",
        unbiased_choice=deepseek_v3_unbiased,
        shared_attr="shared_experts",
        notes="sigmoid; choice on score + e_score_correction_bias, group-limited; shared experts",
    ),
    "glm4_moe": FamilySpec(
        "GLM-4-MoE",
        "Glm4MoeTopkRouter",
        "n_routed_experts",
        score_fn="sigmoid",
        bias_attr="e_score_correction_bias",
        unbiased_choice=deepseek_v3_unbiased,  # the router is DeepSeek-V3's, line for line
        shared_attr="shared_experts",
        notes="as DeepSeek-V3",
    ),
    "deepseek_v2": FamilySpec(
        "DeepSeek-V2",
        "DeepseekV2TopkRouter",
        "n_routed_experts",
        shared_attr="shared_experts",
        notes="softmax, greedy or group-limited; shared experts",
    ),
    "gpt_oss": FamilySpec(
        "GPT-OSS", "GptOssTopKRouter", "num_local_experts", notes="top-k on logits; scores = softmax(all logits)"
    ),
    "granitemoe": FamilySpec(
        "GraniteMoE", "GraniteMoeTopKRouter", "num_local_experts", notes="top-k on logits; scores = softmax(logits)"
    ),
    "phimoe": FamilySpec("Phi-MoE", "PhimoeTopKRouter", "num_local_experts", notes="sparsemixer top-2; softmax"),
}


def supported_families() -> str:
    return ", ".join(f"{s.name} ({key})" for key, s in FAMILIES.items())
