"""The MoE language model, readable top to bottom (nanoGPT style).

tokens (B, S) -> embedding -> n_layer x [RMSNorm -> causal attention (RoPE) -> +,
RMSNorm -> FFN (dense for the first k blocks, MoE after) -> +] -> RMSNorm -> tied LM head -> logits.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from moe_core.config import ModelConfig
from moe_core.moe import MoELayer, SwiGLU


class LMOutput(NamedTuple):
    logits: torch.Tensor  # (B, S, vocab)
    aux_loss: torch.Tensor  # scalar: sum of every MoE layer's balancing losses (0 if none)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


def rope_tables(head_dim: int, length: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables, each (length, head_dim/2)."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(length, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def apply_rope(x_BHSd: torch.Tensor, cos_Sh: torch.Tensor, sin_Sh: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive pairs (x0, x1) of each head dim by the position's angle."""
    x1, x2 = x_BHSd.float().unflatten(-1, (-1, 2)).unbind(-1)  # each (B, H, S, d/2)
    out = torch.stack((x1 * cos_Sh - x2 * sin_Sh, x1 * sin_Sh + x2 * cos_Sh), dim=-1)
    return out.flatten(-2).type_as(x_BHSd)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=False)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False)
        self.dropout = cfg.dropout

    def forward(self, x_BSD: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        B, S, D = x_BSD.shape
        q, k, v = self.qkv(x_BSD).view(B, S, 3, self.n_head, D // self.n_head).permute(2, 0, 3, 1, 4)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)  # (B, H, S, d)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=p)
        return self.proj(y.transpose(1, 2).reshape(B, S, D))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.n_embd, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.ffn_norm = RMSNorm(cfg.n_embd, cfg.norm_eps)
        self.is_moe = layer >= cfg.n_dense_layers
        self.ffn = MoELayer(cfg.n_embd, cfg.moe) if self.is_moe else SwiGLU(cfg.n_embd, cfg.dense_hidden)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.dropout(self.attn(self.attn_norm(x), cos, sin))
        return x + self.dropout(self.ffn(self.ffn_norm(x)))


class MoETransformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layer))
        self.norm = RMSNorm(cfg.n_embd, cfg.norm_eps)
        cos, sin = rope_tables(cfg.n_embd // cfg.n_head, cfg.block_size, cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init)

    def _init(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=self.config.init_std)

    @property
    def moe_layers(self) -> list[MoELayer]:
        """The MoE layers in depth order (index i is the i-th MoE layer, not the block index)."""
        return [b.ffn for b in self.blocks if b.is_moe]

    def forward(self, idx_BS: torch.Tensor) -> LMOutput:
        B, S = idx_BS.shape
        if S > self.config.block_size:
            raise ValueError(f"sequence length {S} exceeds block_size {self.config.block_size}")
        logits = self.forward_from(self.embed(idx_BS), 0)  # (B, S, vocab)
        aux = [loss for layer in self.moe_layers for loss in layer.aux_losses.values()]
        aux_loss = torch.stack(aux).sum() if aux else logits.new_zeros(()).float()
        return LMOutput(logits, aux_loss)

    def forward_from(self, x_BSD: torch.Tensor, block: int) -> torch.Tensor:
        """Logits (B, S, vocab) from the residual stream `x_BSD` entering block `block` (0: the embeddings):
        causal analysis re-runs only the blocks after a change, from a cached input."""
        S = x_BSD.shape[1]
        cos, sin = self.rope_cos[:S], self.rope_sin[:S]
        for b in self.blocks[block:]:
            x_BSD = b(x_BSD, cos, sin)
        return self.unembed(x_BSD)

    def unembed(self, x_BSD: torch.Tensor) -> torch.Tensor:
        """The final norm and the tied LM head: residual stream -> logits (..., vocab)."""
        return F.linear(self.norm(x_BSD), self.embed.weight)

    @torch.no_grad()
    def pop_expert_loads(self) -> torch.Tensor:
        """(L_moe, E) token counts per MoE layer since the last call (training forwards only)."""
        return torch.stack([layer.pop_load() for layer in self.moe_layers])

    @torch.no_grad()
    def update_router_biases(self, loads_LE: torch.Tensor) -> None:
        """The aux-loss-free bias update; call once per optimizer step with the global loads."""
        for layer, load_E in zip(self.moe_layers, loads_LE):
            layer.update_bias(load_E)

    def router_biases(self) -> torch.Tensor:
        """(L_moe, E) current balancing biases."""
        return torch.stack([layer.router.expert_bias for layer in self.moe_layers])


def build_model(cfg: ModelConfig) -> MoETransformer:
    return MoETransformer(cfg)


def count_parameters(cfg: ModelConfig) -> dict[str, int]:
    """Total parameters and those active for one token (K of E routed experts per MoE layer)."""
    model = build_model_meta(cfg)
    total = sum(p.numel() for p in model.parameters())
    E, K = cfg.moe.n_experts, cfg.moe.top_k
    routed = sum(sum(p.numel() for p in layer.experts.parameters()) for layer in model.moe_layers)
    inactive = routed * (E - K) // E
    return {"total": total, "active": total - inactive, "routed_experts": routed}


def build_model_meta(cfg: ModelConfig) -> MoETransformer:
    """The model on the meta device: shapes only, no memory (for counting parameters)."""
    with torch.device("meta"):
        return MoETransformer(cfg)
