"""The routing quantities, one copy each, on tensors: expert counts, MaxVio, router entropy, bias flips.

Training history (no host syncs), both recorders, `analysis.metrics` (numpy in, via `torch.from_numpy`) and
therefore the app and the report all compute them here. Shape legend: T tokens, E experts, K top-k, L layers.
"""

from __future__ import annotations

import torch


def expert_counts(topk_idx_TK: torch.Tensor, n_experts: int) -> torch.Tensor:
    """(E,) int64: load_i = number of tokens whose top-k contains expert i (exact at any size). No host sync."""
    flat = topk_idx_TK.reshape(-1).long()
    counts = torch.zeros(n_experts, dtype=torch.int64, device=flat.device)
    return counts.scatter_add_(0, flat, torch.ones_like(flat))


def max_violation(load_LE: torch.Tensor) -> torch.Tensor:
    """(...,) over the last dim: MaxVio = (max_i load_i - mean_i load_i) / mean_i load_i.

    0 = perfectly balanced; 0 also when nothing was routed (mean load 0). No host sync."""
    load = load_LE.double() if load_LE.dtype == torch.float64 else load_LE.float()
    mean = load.mean(dim=-1)
    return torch.where(mean > 0, (load.amax(dim=-1) - mean) / mean.clamp_min(1e-30), torch.zeros_like(mean))


def router_entropy(scores_TE: torch.Tensor) -> torch.Tensor:
    """(...,) nats over the last dim: H = -sum_i p_i ln p_i with p_i = s_i / sum_j s_j over ALL experts.

    Scores are renormalised first (sigmoid scores do not sum to 1; softmax scores already do); 0 ln 0 = 0.
    Float32 stays float32, float64 stays float64 (memory: a long trace holds T*L*E scores)."""
    s = scores_TE if scores_TE.dtype in (torch.float32, torch.float64) else scores_TE.float()
    tiny = torch.finfo(s.dtype).tiny
    p = s / s.sum(dim=-1, keepdim=True).clamp_min(tiny)
    return -(p * p.clamp_min(tiny).log()).sum(dim=-1)


def bias_flips(chosen_TK: torch.Tensor, unbiased_TK: torch.Tensor) -> torch.Tensor:
    """(T, K) bool: the chosen expert (on score + bias) is not among the experts the same router would
    choose on the scores alone (`unbiased_TK`, e.g. `moe_core.moe.choose_experts` with bias zero)."""
    return ~(chosen_TK.unsqueeze(-1) == unbiased_TK.unsqueeze(-2)).any(dim=-1)
