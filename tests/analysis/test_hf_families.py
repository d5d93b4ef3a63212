"""The family specs: DeepSeek-V3's (and GLM-4-MoE's) unbiased replay is our router's choice,
`moe_core.moe.choose_experts`, and equals the transformers router's own."""

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="the HF adapter needs the optional extra: pip install .[hf]")

from analysis.hf import FAMILIES, deepseek_v3_unbiased  # noqa: E402
from moe_core.moe import choose_experts  # noqa: E402
from tests.hf_fixtures import tiny_hf_config  # noqa: E402


def test_deepseek_v3_choice_matches_the_model_router():
    """choose_experts (groups ranked by their top-2 sum) equals DeepseekV3TopkRouter's choice, with and without bias;
    the family's unbiased replay is that choice on the scores alone."""
    torch.manual_seed(1)
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3TopkRouter

    router = DeepseekV3TopkRouter(tiny_hf_config("deepseek_v3"))
    with torch.no_grad():
        router.weight.normal_()
    x_TD = torch.randn(200, 32)
    for bias in (torch.zeros(8), torch.randn(8) * 0.3):
        router.e_score_correction_bias.copy_(bias)
        with torch.no_grad():
            logits, _, idx = router(x_TD)
            scores = logits.sigmoid()
            mine = choose_experts(scores + bias, router.top_k, router.num_group, router.topk_group)
            unbiased = choose_experts(scores, router.top_k, router.num_group, router.topk_group)
        assert torch.equal(idx.sort(-1).values, mine.sort(-1).values)
        assert torch.equal(deepseek_v3_unbiased(router, scores), unbiased)
    # bias zero: the replay is the model's own choice
    router.e_score_correction_bias.zero_()
    with torch.no_grad():
        logits, _, idx = router(x_TD)
    assert torch.equal(deepseek_v3_unbiased(router, logits.sigmoid()).sort(-1).values, idx.sort(-1).values)


def test_the_v3_like_families_replay_the_unbiased_choice():
    for family in ("deepseek_v3", "glm4_moe"):
        assert FAMILIES[family].unbiased_choice is deepseek_v3_unbiased and FAMILIES[family].bias_attr
    assert all(FAMILIES[f].unbiased_choice is None for f in FAMILIES if f not in ("deepseek_v3", "glm4_moe"))
