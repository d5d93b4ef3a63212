"""The learning-rate schedule and the data a step sees: token streams and the windows cut from them.

Batches are a pure function of (seed, step), so a resumed run sees exactly the batches it would have seen.
"""

from __future__ import annotations

import math

import torch

from moe_core.corpus import Doc
from moe_core.tokenizer import eot_id
from moe_core.training.config import TrainConfig


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate of optimizer step `step` (1-based): linear warmup, then cosine from lr to min_lr."""
    if cfg.warmup_steps and step <= cfg.warmup_steps:
        return cfg.lr * step / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * progress))


def encode_docs(tok, docs: list[Doc]) -> torch.Tensor:
    """One int32 stream: <eot> doc0 <eot> doc1 ... (the EOT token separates documents)."""
    eot = eot_id(tok)
    ids: list[int] = []
    for enc in tok.encode_batch([d.text for d in docs]):
        ids.append(eot)
        ids.extend(enc.ids)
    return torch.tensor(ids, dtype=torch.int32)


def batch_starts(seed: int, step: int, n_tokens: int, batch_size: int, seq_len: int) -> torch.Tensor:
    """(batch_size,) window offsets of step `step`, a pure function of (seed, step): resume = same order."""
    if n_tokens < seq_len + 2:
        raise ValueError(f"token stream too short ({n_tokens} tokens) for seq_len {seq_len}; use a bigger corpus")
    g = torch.Generator().manual_seed((seed * 1_000_003 + step * 7_919 + 12_345) % (2**63))
    return torch.randint(0, n_tokens - seq_len, (batch_size,), generator=g)


def val_starts(n_tokens: int, n_windows: int, seq_len: int) -> torch.Tensor:
    """Fixed, evenly spaced validation windows over the val stream (the same at every validation)."""
    if n_tokens < seq_len + 2:
        raise ValueError(f"validation stream too short ({n_tokens} tokens) for seq_len {seq_len}")
    return torch.linspace(0, n_tokens - seq_len - 1, n_windows).long()


def windows(tokens: torch.Tensor, starts: torch.Tensor, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and next-token targets, each (B, seq_len) long."""
    idx_BS = starts[:, None] + torch.arange(seq_len + 1)
    chunk = tokens[idx_BS].long()
    return chunk[:, :-1], chunk[:, 1:]
