"""The supported Hugging Face MoE families: how each one's router scores, biases and shares (`FAMILIES`, keyed
by config.json "model_type"). Torch only; no transformers import."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch

from moe_core.moe import RoutingOverride, choose_experts

# routers return (logits, weights, indices) in every supported family only from this version on (5.20 still
# differs for GraniteMoE; 5.12 for DeepSeek/GLM/Granite); tested with 5.23.0
MIN_TRANSFORMERS = (5, 23)


def deepseek_v3_unbiased(router: torch.nn.Module, scores_TE: torch.Tensor) -> torch.Tensor:
    """(T, K) experts DeepSeek-V3's router (transformers' DeepseekV3TopkRouter; GLM-4-MoE's is the same) would
    choose on the unbiased scores, for bias flips. Its algorithm is ours: keep the `topk_group` groups whose two
    best scores sum highest, then the top_k experts inside them (`moe_core.moe.choose_experts`; tested against
    the model's router)."""
    return choose_experts(scores_TE, router.top_k, router.num_group, router.topk_group)


# --- routing rules: each family's router, recomputed from its returned logits -----------------------------------
# rule(router, logits_TE, x_dtype, override) -> (weights_TK, indices_TK). With `RoutingOverride()` (no change) a
# rule returns what the router itself returned (tested per family on tiny models: same experts, same weights;
# DeepSeek-V3/GLM return their experts unsorted, a rule best first). With an override the same rule runs on
# choice scores where removed experts are -inf, the forced one +inf and `bias` is added, as our `Router` does:
# reroute ablation and what-if routing on a Hugging Face model reuse the family's own arithmetic.
RoutingRule = Callable[[torch.nn.Module, torch.Tensor, torch.dtype, RoutingOverride], tuple[torch.Tensor, torch.Tensor]]


def overridden(choice_TE: torch.Tensor, ov: RoutingOverride) -> torch.Tensor:
    """Choice scores under `ov`: + bias, removed experts -inf, the forced expert +inf (chosen first)."""
    if ov.bias is not None:
        choice_TE = choice_TE + torch.tensor(ov.bias, dtype=choice_TE.dtype, device=choice_TE.device)
    if ov.removed:
        choice_TE = choice_TE.index_fill(-1, torch.tensor(ov.removed, device=choice_TE.device), float("-inf"))
    if ov.forced is not None:
        choice_TE = choice_TE.index_fill(-1, torch.tensor([ov.forced], device=choice_TE.device), float("inf"))
    return choice_TE


def _top_k(router: torch.nn.Module, ov: RoutingOverride) -> int:
    ov.validate(int(router.num_experts), int(router.top_k))  # ValueError for bad experts or top-k
    return int(router.top_k) if ov.top_k is None else ov.top_k


def softmax_topk(router, logits_TE, x_dtype, ov, *, always_renorm: bool = False, cast: bool = True):
    """Mixtral (always renormalised, fp32 weights), Qwen2/3-MoE and OLMoE (renormalised when `norm_topk_prob`,
    cast to the logits' dtype): softmax over all experts in fp32, top-k, weights = the chosen probabilities."""
    probs_TE = logits_TE.softmax(dim=-1, dtype=torch.float)
    idx_TK = overridden(probs_TE, ov).topk(_top_k(router, ov), dim=-1).indices
    w_TK = probs_TE.gather(1, idx_TK)
    if always_renorm or router.norm_topk_prob:
        w_TK = w_TK / w_TK.sum(dim=-1, keepdim=True)
    return (w_TK.to(logits_TE.dtype) if cast else w_TK), idx_TK


def sigmoid_group_limited(router, logits_TE, x_dtype, ov):
    """DeepSeek-V3 and GLM-4-MoE: sigmoid scores; choice on scores + e_score_correction_bias inside the best
    groups (`choose_experts`); weights = the chosen scores, renormalised when `norm_topk_prob`, times
    `routed_scaling_factor`."""
    scores_TE = logits_TE.float().sigmoid()
    choice_TE = overridden(scores_TE + router.e_score_correction_bias, ov)
    idx_TK = choose_experts(choice_TE, _top_k(router, ov), router.num_group, router.topk_group)
    w_TK = scores_TE.gather(1, idx_TK)
    if router.norm_topk_prob:
        w_TK = w_TK / (w_TK.sum(dim=-1, keepdim=True) + 1e-20)
    return w_TK * router.routed_scaling_factor, idx_TK


def softmax_greedy_v2(router, logits_TE, x_dtype, ov):
    """DeepSeek-V2: softmax scores; top-k over all experts ("greedy") or inside the `topk_group` groups with
    the highest best score ("group_limited_greedy"); weights = the chosen scores × `routed_scaling_factor`
    (no renormalisation). Masked groups are -inf here, 0 in transformers: the same choice unless fewer than
    top-k experts are left in the kept groups."""
    scores_TE = logits_TE.softmax(dim=-1, dtype=torch.float32)
    choice_TE = overridden(scores_TE, ov)
    if router.topk_method == "group_limited_greedy":
        T, E = choice_TE.shape
        grouped_TGe = choice_TE.view(T, router.num_group, E // router.num_group)
        keep_TG = torch.zeros(grouped_TGe.shape[:2], dtype=torch.bool, device=choice_TE.device)
        keep_TG.scatter_(1, grouped_TGe.max(dim=-1).values.topk(router.topk_group, dim=-1).indices, True)
        choice_TE = grouped_TGe.masked_fill(~keep_TG.unsqueeze(-1), float("-inf")).view(T, E)
    idx_TK = choice_TE.topk(_top_k(router, ov), dim=-1).indices
    return scores_TE.gather(1, idx_TK) * router.routed_scaling_factor, idx_TK


def logits_topk(router, logits_TE, x_dtype, ov, *, to_input_dtype: bool = False):
    """GPT-OSS and GraniteMoE: top-k on the raw logits, weights = softmax over the chosen logits (GraniteMoE:
    cast to the router input's dtype). A what-if bias is added to the logits."""
    idx_TK = overridden(logits_TE, ov).topk(_top_k(router, ov), dim=-1).indices
    top_TK = logits_TE.gather(1, idx_TK)
    if to_input_dtype:
        return top_TK.softmax(dim=-1).to(x_dtype), idx_TK
    return top_TK.softmax(dim=1, dtype=top_TK.dtype), idx_TK


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
    # the router's rule recomputed from its logits (see RoutingRule); None where we cannot reproduce it exactly:
    # then no reroute ablation and no what-if routing for the family
    routing_rule: RoutingRule | None = None
    lens: bool = True  # the final norm is an RMSNorm (scale, no bias): the expert logit lens is exact

    @property
    def causal_modes(self) -> tuple[str, ...]:
        """The ablation modes (`analysis.causal.ablation.MODES`) hooks can apply to this family."""
        reroute = ("reroute",) if self.routing_rule is not None else ()
        return (*reroute, "zero", "layer") + (("shared",) if self.shared_attr else ())


FAMILIES: dict[str, FamilySpec] = {  # key: config.json "model_type"
    "mixtral": FamilySpec(
        "Mixtral",
        "MixtralTopKRouter",
        "num_local_experts",
        notes="softmax, top-k renormalised",
        routing_rule=partial(softmax_topk, always_renorm=True, cast=False),
    ),
    "qwen2_moe": FamilySpec(
        "Qwen2-MoE",
        "Qwen2MoeTopKRouter",
        "num_experts",
        shared_attr="shared_expert",
        shared_gate_attr="shared_expert_gate",
        notes="softmax; one sigmoid-gated shared expert",
        routing_rule=softmax_topk,
    ),
    "qwen3_moe": FamilySpec(
        "Qwen3-MoE", "Qwen3MoeTopKRouter", "num_experts", notes="softmax", routing_rule=softmax_topk
    ),
    "olmoe": FamilySpec("OLMoE", "OlmoeTopKRouter", "num_experts", notes="softmax", routing_rule=softmax_topk),
    "deepseek_v3": FamilySpec(
        "DeepSeek-V3",
        "DeepseekV3TopkRouter",
        "n_routed_experts",
        score_fn="sigmoid",
        bias_attr="e_score_correction_bias",
        unbiased_choice=deepseek_v3_unbiased,
        shared_attr="shared_experts",
        notes="sigmoid; choice on score + e_score_correction_bias, group-limited; shared experts",
        routing_rule=sigmoid_group_limited,
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
        routing_rule=sigmoid_group_limited,
    ),
    "deepseek_v2": FamilySpec(
        "DeepSeek-V2",
        "DeepseekV2TopkRouter",
        "n_routed_experts",
        shared_attr="shared_experts",
        notes="softmax, greedy or group-limited; shared experts",
        routing_rule=softmax_greedy_v2,
    ),
    "gpt_oss": FamilySpec(
        "GPT-OSS",
        "GptOssTopKRouter",
        "num_local_experts",
        notes="top-k on logits; scores = softmax(all logits)",
        routing_rule=logits_topk,
    ),
    "granitemoe": FamilySpec(
        "GraniteMoE",
        "GraniteMoeTopKRouter",
        "num_local_experts",
        notes="top-k on logits; scores = softmax(logits)",
        routing_rule=partial(logits_topk, to_input_dtype=True),
    ),
    # sparsemixer's second choice depends on a jitter threshold: not reproduced (no reroute, no what-if); its
    # final norm is a LayerNorm with a bias (no exact logit lens)
    "phimoe": FamilySpec(
        "Phi-MoE", "PhimoeTopKRouter", "num_local_experts", notes="sparsemixer top-2; softmax", lens=False
    ),
}


def supported_families() -> str:
    return ", ".join(f"{s.name} ({key})" for key, s in FAMILIES.items())
