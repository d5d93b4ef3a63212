"""The seed tutorial's MoE layer, reconstructed for comparison (a loop over nn.Linear experts).

Router logits + bias -> top-k on the biased logits -> softmax over the chosen logits -> a Python loop
over experts with boolean masks -> shared expert -> the per-forward bias update with a loop of `.item()`
comparisons. Linear layers without bias (the tutorial's `config.bias` is not given).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SeedSwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class SeedMoE(nn.Module):
    def __init__(self, dim=256, n_experts=4, top_k=2, hidden=512, shared_hidden=768, rate=1e-3):
        super().__init__()
        self.n_experts, self.top_k, self.rate = n_experts, top_k, rate
        self.router = nn.Linear(dim, n_experts, bias=False)
        self.experts = nn.ModuleList(SeedSwiGLU(dim, hidden) for _ in range(n_experts))
        self.shared_expert = SeedSwiGLU(dim, shared_hidden)
        self.register_buffer("expert_bias", torch.zeros(n_experts))

    def forward(self, x):
        B, S, D = x.shape
        x_flat = x.view(-1, D)
        router_logits = self.router(x_flat) + self.expert_bias
        top_k_logits, top_k_indices = torch.topk(router_logits, self.top_k, dim=-1)
        routing_weights = torch.zeros_like(router_logits)
        routing_weights.scatter_(-1, top_k_indices, F.softmax(top_k_logits, dim=-1))
        output = torch.zeros_like(x_flat)
        usage = torch.zeros(self.n_experts, device=x.device)
        for e in range(self.n_experts):
            mask = (top_k_indices == e).any(dim=-1)
            usage[e] = mask.sum().float()
            if mask.any():
                output[mask] += self.experts[e](x_flat[mask]) * routing_weights[mask, e].unsqueeze(-1)
        output = output + self.shared_expert(x_flat)
        if self.training:
            with torch.no_grad():
                avg = usage.mean()
                for i in range(self.n_experts):
                    self.expert_bias[i] += -self.rate if usage[i] > avg else self.rate
        return output.view(B, S, D), router_logits.view(B, S, -1)
