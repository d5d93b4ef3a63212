"""`Router.override` (RoutingOverride): removing, zeroing, biasing, forcing and top-k, each against a manual
top-k on the same scores; and `MoETransformer.forward_from` / `unembed` against the plain forward."""

import pytest
import torch

import moe_core
from moe_core.config import MoEConfig
from moe_core.moe import Router, RoutingOverride


def router_and_input(seed=0, **cfg):
    torch.manual_seed(seed)
    router = Router(8, MoEConfig(n_experts=6, top_k=2, expert_hidden=8, **cfg))
    with torch.no_grad():
        router.expert_bias.copy_(torch.linspace(-0.05, 0.05, 6))
    return router, torch.randn(40, 8)


def test_override_off_by_default_and_none_changes_nothing():
    router, x = router_and_input()
    assert router.override is None
    plain = router(x)
    router.override = RoutingOverride()
    for a, b in zip(plain, router(x)):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("score_func", ["sigmoid", "softmax"])
def test_removed_expert_is_rechosen_from_the_rest_and_renormalised(score_func):
    router, x = router_and_input(score_func=score_func)
    plain = router(x)
    router.override = RoutingOverride(removed=(2,))
    out = router(x)
    assert not (out.topk_idx_TK == 2).any()
    # manual: the top-2 of the biased scores among experts {0,1,3,4,5}, best first
    keep = [0, 1, 3, 4, 5]
    manual = torch.tensor(keep)[plain.biased_TE[:, keep].topk(2, dim=-1).indices]
    assert torch.equal(out.topk_idx_TK, manual)
    chosen = plain.scores_TE.gather(1, manual)
    torch.testing.assert_close(out.weights_TK, chosen / chosen.sum(1, keepdim=True))
    torch.testing.assert_close(out.weights_TK.sum(1), torch.ones(40))


def test_removing_an_expert_nobody_chose_changes_nothing():
    router, x = router_and_input()
    plain = router(x)
    unused = sorted(set(range(6)) - set(plain.topk_idx_TK.unique().tolist()))
    if not unused:  # make one expert lose every token
        with torch.no_grad():
            router.expert_bias[5] = -10.0
        plain, unused = router(x), [5]
    router.override = RoutingOverride(removed=(unused[0],))
    out = router(x)
    assert torch.equal(out.topk_idx_TK, plain.topk_idx_TK)
    torch.testing.assert_close(out.weights_TK, plain.weights_TK)


def test_zeroed_expert_keeps_the_choice_and_gets_weight_zero():
    router, x = router_and_input()
    plain = router(x)
    router.override = RoutingOverride(zeroed=(1,))
    out = router(x)
    assert torch.equal(out.topk_idx_TK, plain.topk_idx_TK)
    expected = plain.weights_TK.masked_fill(plain.topk_idx_TK == 1, 0.0)
    torch.testing.assert_close(out.weights_TK, expected)


def test_bias_forced_and_top_k():
    router, x = router_and_input()
    plain = router(x)
    bias = (0.0, 0.0, 0.0, 0.0, 5.0, 0.0)
    router.override = RoutingOverride(bias=bias)
    out = router(x)
    assert (out.topk_idx_TK[:, 0] == 4).all()  # +5 puts expert 4 first for every token
    torch.testing.assert_close(out.scores_TE, plain.scores_TE)  # gate weights still from the scores
    router.override = RoutingOverride(forced=3, top_k=3)
    out = router(x)
    assert out.topk_idx_TK.shape == (40, 3) and (out.topk_idx_TK[:, 0] == 3).all()
    others = plain.biased_TE.index_fill(1, torch.tensor([3]), float("-inf")).topk(2, dim=-1).indices
    assert torch.equal(out.topk_idx_TK[:, 1:], others)
    chosen = plain.scores_TE.gather(1, out.topk_idx_TK)
    torch.testing.assert_close(out.weights_TK, chosen / chosen.sum(1, keepdim=True))


@pytest.mark.parametrize(
    "override,message",
    [
        (RoutingOverride(removed=(6,)), "expert ids"),
        (RoutingOverride(forced=1, removed=(1,)), "both forced and removed"),
        (RoutingOverride(bias=(0.0,)), "bias needs 6"),
        (RoutingOverride(top_k=6, removed=(0,)), "top-k must be in 1..5"),
    ],
)
def test_bad_override_is_a_clear_error(override, message):
    router, x = router_and_input()
    router.override = override
    with pytest.raises(ValueError, match=message):
        router(x)


def test_forward_from_and_unembed_match_forward():
    torch.manual_seed(0)
    model = moe_core.build_model(moe_core.preset("tiny")).eval()
    idx = torch.randint(0, model.config.vocab_size, (2, 9))
    with torch.no_grad():
        logits = model(idx).logits
        torch.testing.assert_close(model.forward_from(model.embed(idx), 0), logits)
        x = model.embed(idx)
        cos, sin = model.rope_cos[:9], model.rope_sin[:9]
        x = model.blocks[0](x, cos, sin)
        torch.testing.assert_close(model.forward_from(x, 1), logits)
        for block in model.blocks[1:]:
            x = block(x, cos, sin)
        torch.testing.assert_close(model.unembed(x), logits)
