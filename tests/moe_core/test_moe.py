"""The MoE layer: dispatch paths agree, the bias only chooses, balancing rules and losses by hand."""

import math

import pytest
import torch

from moe_core.config import BalanceConfig, MoEConfig
from moe_core.moe import (
    MoELayer,
    RoutedExperts,
    Router,
    bias_update,
    capacity_keep_mask,
    complementary_loss,
    expert_counts,
    sequence_balance_loss,
    switch_loss,
    z_loss,
)


@pytest.mark.parametrize("E,K", [(4, 1), (4, 2), (8, 3), (16, 2)])
def test_grouped_dispatch_matches_reference_loop(E, K):
    torch.manual_seed(E * 10 + K)
    cfg = MoEConfig(n_experts=E, top_k=K, expert_hidden=16)
    experts = RoutedExperts(24, cfg)
    T = 37
    x = torch.randn(T, 24, requires_grad=True)
    # route every token away from the last two experts so some experts are empty
    idx = torch.stack([torch.randperm(E - 2)[:K] for _ in range(T)]) if E - 2 >= K else torch.randint(0, E, (T, K))
    w = torch.rand(T, K, requires_grad=True)
    grads = []
    outs = []
    for fn in (experts.forward_grouped, experts.forward_loop):
        for t in (x, w, *experts.parameters()):
            t.grad = None
        out = fn(x, idx, w)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        outs.append(out.detach())
        grads.append([t.grad.clone() for t in (x, w, *experts.parameters())])
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-6)
    for g_fast, g_ref in zip(*grads):
        torch.testing.assert_close(g_fast, g_ref, rtol=1e-5, atol=1e-6)
    # the empty experts really got no gradient
    assert experts.w_down.grad[E - 1].abs().sum() == 0 or E - 2 < K


def test_all_tokens_to_one_expert():
    torch.manual_seed(0)
    experts = RoutedExperts(16, MoEConfig(n_experts=4, top_k=1, expert_hidden=8))
    x = torch.randn(5, 16)
    idx = torch.full((5, 1), 2)
    w = torch.ones(5, 1)
    torch.testing.assert_close(experts.forward_grouped(x, idx, w), experts.forward_loop(x, idx, w))


@pytest.mark.parametrize("score_func", ["softmax", "sigmoid"])
def test_bias_changes_choice_but_not_gate_weights(score_func):
    torch.manual_seed(1)
    cfg = MoEConfig(n_experts=4, top_k=2, expert_hidden=8, score_func=score_func)
    router = Router(8, cfg)
    x = torch.randn(50, 8)
    before = router(x)
    router.expert_bias[3] = 10.0  # expert 3 now always wins a slot
    after = router(x)
    assert (after.topk_idx_TK == 3).any(dim=1).all()
    assert not torch.equal(before.topk_idx_TK, after.topk_idx_TK)
    torch.testing.assert_close(after.scores_TE, before.scores_TE)  # scores never see the bias
    # gate weights come from the unbiased scores of the chosen experts, renormalised
    chosen = after.scores_TE.gather(1, after.topk_idx_TK)
    torch.testing.assert_close(after.weights_TK, chosen / chosen.sum(1, keepdim=True))
    torch.testing.assert_close(after.biased_TE, after.scores_TE + router.expert_bias)


def test_route_scale_and_no_renormalise():
    torch.manual_seed(2)
    cfg = MoEConfig(n_experts=4, top_k=2, expert_hidden=8, renormalize=False, route_scale=2.5)
    out = Router(8, cfg)(torch.randn(6, 8))
    torch.testing.assert_close(out.weights_TK, 2.5 * out.scores_TE.gather(1, out.topk_idx_TK))


def test_group_limited_routing_picks_from_best_groups():
    cfg = MoEConfig(n_experts=8, top_k=2, expert_hidden=8, n_groups=4, topk_groups=1, score_func="softmax")
    router = Router(4, cfg)
    with torch.no_grad():
        router.gate.weight.zero_()
    # bias makes group 2 (experts 4,5) the best group; expert 0 alone is the single best expert
    router.expert_bias.copy_(torch.tensor([0.9, 0.0, 0.0, 0.0, 0.5, 0.5, 0.0, 0.0]))
    out = router(torch.randn(3, 4))
    assert sorted(out.topk_idx_TK[0].tolist()) == [4, 5]  # group sum 1.0 beats group 0's 0.9


def test_bias_update_follows_sign_rule_exactly():
    bias = torch.tensor([0.0, 0.1, -0.2, 0.0])
    load = torch.tensor([10.0, 2.0, 4.0, 4.0])  # mean 5: expert 0 overloaded, others underloaded
    new = bias_update(bias, load, rate=1e-3, zero_center=False)
    torch.testing.assert_close(new, bias + 1e-3 * torch.tensor([-1.0, 1.0, 1.0, 1.0]))
    centred = bias_update(bias, load, rate=1e-3, zero_center=True)
    torch.testing.assert_close(centred, bias + 1e-3 * torch.tensor([-1.5, 0.5, 0.5, 0.5]))
    # a load exactly at the mean is left alone
    same = bias_update(bias, torch.tensor([5.0, 5.0, 5.0, 5.0]), rate=1e-3, zero_center=False)
    torch.testing.assert_close(same, bias)


def test_bias_updates_once_per_optimizer_step_not_per_forward():
    torch.manual_seed(3)
    cfg = MoEConfig(
        n_experts=4, top_k=2, expert_hidden=8, balance=BalanceConfig(bias_rate=0.01, bias_zero_center=False)
    )
    layer = MoELayer(8, cfg).train()
    xs = [torch.randn(2, 5, 8) for _ in range(3)]
    loads = torch.zeros(4)
    for x in xs:  # three forwards (e.g. gradient accumulation): the bias must not move
        layer(x)
        loads += expert_counts(layer.router(x.view(-1, 8)).topk_idx_TK, 4)
    assert torch.equal(layer.router.expert_bias, torch.zeros(4))
    popped = layer.pop_load()
    torch.testing.assert_close(popped, loads)  # summed over the whole step
    layer.update_bias(popped)
    torch.testing.assert_close(layer.router.expert_bias, 0.01 * torch.sign(loads.mean() - loads))
    assert layer.load_accum.sum() == 0
    layer.eval()
    layer(xs[0])
    assert layer.load_accum.sum() == 0  # eval forwards do not count


def test_switch_loss_by_hand():
    scores = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3]])
    idx = torch.tensor([[0], [1]])  # K=1
    # f = [1/2, 1/2, 0], P = [0.4, 0.4, 0.2]; loss = 3 * (0.2 + 0.2) = 1.2
    assert switch_loss(scores, idx).item() == pytest.approx(1.2)


def test_sequence_balance_loss_by_hand():
    scores = torch.tensor([[[0.5, 0.5, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]]])  # B=1, S=2, E=4
    idx = torch.tensor([[[0, 1], [0, 2]]])  # K=2
    # f = E/(K*S) * counts = 4/4 * [2, 1, 1, 0] ; P = mean over t = [0.375, 0.375, 0.125, 0.125]
    expected = 2 * 0.375 + 1 * 0.375 + 1 * 0.125
    assert sequence_balance_loss(scores, idx).item() == pytest.approx(expected)


def test_complementary_loss_by_hand():
    big = 50.0
    logits = torch.tensor([[[big, 0.0]], [[0.0, big]], [[big, 0.0]]])  # 3 sequences, usage ~ e0, e1, e0
    # similarity matrix off-diagonal: (0,1)=0, (0,2)=1, (1,2)=0, symmetric -> mean 2/6
    assert complementary_loss(logits).item() == pytest.approx(1 / 3, abs=1e-6)
    assert complementary_loss(logits[:1]).item() == 0.0


def test_z_loss_by_hand():
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    expected = (math.log(2.0) ** 2 + math.log(4.0) ** 2) / 2
    assert z_loss(logits).item() == pytest.approx(expected)


def test_aux_losses_scaled_by_alpha_in_layer():
    torch.manual_seed(4)
    bal = BalanceConfig(bias_rate=0.0, switch_alpha=0.01, seq_alpha=1e-4, comp_alpha=0.1, z_alpha=1e-3)
    layer = MoELayer(8, MoEConfig(n_experts=4, top_k=2, expert_hidden=8, balance=bal))
    x = torch.randn(3, 4, 8)
    layer(x)
    r = layer.router(x.view(-1, 8))
    assert set(layer.aux_losses) == {"switch", "seq", "comp", "zloss"}
    assert layer.aux_losses["switch"].item() == pytest.approx(0.01 * switch_loss(r.scores_TE, r.topk_idx_TK).item())
    assert layer.aux_losses["zloss"].item() == pytest.approx(1e-3 * z_loss(r.logits_TE).item())


def test_capacity_keep_mask_drops_later_tokens():
    idx = torch.tensor([[0, 1], [0, 2], [0, 1], [3, 0]])
    keep = capacity_keep_mask(idx, n_experts=4, capacity=2)
    # expert 0 is chosen by tokens 0,1,2,3: tokens 2 and 3 are over capacity 2
    expected = torch.tensor([[True, True], [True, True], [False, True], [True, False]])
    assert torch.equal(keep, expected)


def test_layer_capacity_reports_drops_and_zeroes_their_weight():
    torch.manual_seed(5)
    cfg = MoEConfig(n_experts=4, top_k=2, expert_hidden=8, n_shared=0, capacity_factor=0.5)
    layer = MoELayer(8, cfg).eval()
    x = torch.randn(1, 16, 8)
    out = layer(x)
    r = layer.router(x.view(-1, 8))
    keep = capacity_keep_mask(r.topk_idx_TK, 4, math.ceil(0.5 * 16 * 2 / 4))
    assert layer.dropped.item() == (~keep).sum().item() > 0
    expected = layer.experts.forward_loop(x.view(-1, 8), r.topk_idx_TK, r.weights_TK * keep)
    torch.testing.assert_close(out.view(-1, 8), expected)


def test_grouped_kernel_matches_per_expert_slices():
    # the CUDA path calls torch's grouped-GEMM kernel; it also runs on the CPU, so check it here
    from moe_core.moe import _grouped_mm

    torch.manual_seed(6)
    x = torch.randn(20, 16, requires_grad=True)
    w = torch.randn(4, 16, 8, requires_grad=True)
    offs = torch.tensor([5, 5, 12, 20], dtype=torch.int32)  # expert 1 is empty
    a = _grouped_mm(x, w, offs, kernel=True)
    b = _grouped_mm(x, w, offs, kernel=False)
    torch.testing.assert_close(a, b)
    r = torch.randn(20, 8)  # (a plain .sum() gives an expanded grad that the kernel rejects)
    ga = torch.autograd.grad((a * r).sum(), (x, w))
    gb = torch.autograd.grad((b * r).sum(), (x, w))
    for g1, g2 in zip(ga, gb):
        torch.testing.assert_close(g1, g2)
