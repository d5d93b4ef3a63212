"""The one copy of each routing quantity, pinned to hand-computed values."""

import math

import pytest
import torch

from moe_core.devices import resolve_device
from moe_core.moe import choose_experts
from moe_core.routing_stats import bias_flips, expert_counts, max_violation, router_entropy


def test_expert_counts_by_hand():
    topk = torch.tensor([[0, 1], [1, 2], [1, 3]])
    counts = expert_counts(topk, 5)
    assert counts.tolist() == [1, 3, 1, 1, 0] and counts.dtype == torch.int64  # exact, at any size


def test_max_violation_by_hand():
    # mean 2, max 4 -> (4 - 2) / 2 = 1; balanced -> 0; nothing routed -> 0 (not NaN)
    load = torch.tensor([[4.0, 2.0, 1.0, 1.0], [3.0, 3.0, 3.0, 3.0], [0.0, 0.0, 0.0, 0.0]])
    assert max_violation(load).tolist() == [1.0, 0.0, 0.0]
    assert max_violation(torch.tensor([6, 0, 0])).item() == pytest.approx(2.0)  # integer loads too


def test_router_entropy_by_hand():
    # uniform over 4 -> ln 4; one-hot -> 0; sigmoid-like [0.5, 0.5] renormalised -> ln 2
    scores = torch.tensor([[0.25, 0.25, 0.25, 0.25], [1.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0]])
    h = router_entropy(scores)
    assert h.tolist() == pytest.approx([math.log(4), 0.0, math.log(2)], abs=1e-6)
    assert router_entropy(scores.double()).dtype == torch.float64


def test_bias_flips_against_replayed_choice():
    scores = torch.tensor([[0.9, 0.8, 0.1, 0.0]])
    bias = torch.tensor([0.0, 0.0, 1.0, 0.0])
    chosen = choose_experts(scores + bias, top_k=2)  # expert 2 only thanks to its bias
    unbiased = choose_experts(scores, top_k=2)
    assert sorted(chosen[0].tolist()) == [0, 2]
    assert bias_flips(chosen, unbiased).tolist() == [[True, False]]  # rank 0 is expert 2, rank 1 expert 0


def test_choose_experts_group_limited():
    # 2 groups of 2: group sums 0.9+0.1=1.0 and 0.6+0.5=1.1 -> only group 1 competes
    scores = torch.tensor([[0.9, 0.1, 0.6, 0.5]])
    assert sorted(choose_experts(scores, top_k=2, n_groups=2, topk_groups=1)[0].tolist()) == [2, 3]
    assert sorted(choose_experts(scores, top_k=2)[0].tolist()) == [0, 2]


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
