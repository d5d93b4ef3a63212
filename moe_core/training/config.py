"""TrainConfig: how a run is trained (schedule, batch, checkpoints, eval docs), and what may not change on resume."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from moe_core.config import ModelConfig


@dataclass
class TrainConfig:
    steps: int = 2000  # optimizer steps in the whole run
    batch_size: int = 32  # sequences per optimizer step, over all ranks and micro-batches (global batch)
    seq_len: int = 0  # tokens per sequence; 0 = the model's block_size (must be <= block_size)
    grad_accum: int = 1  # micro-batches per optimizer step (the bias still updates once per step)
    lr: float = 3e-3  # peak learning rate after warmup
    min_lr: float = 3e-4  # learning rate at the end of the cosine decay
    warmup_steps: int = 100  # linear warmup from lr/warmup_steps to lr
    weight_decay: float = 0.1  # AdamW decay on matrices (not on norms)
    beta1: float = 0.9  # AdamW betas
    beta2: float = 0.95
    grad_clip: float = 1.0  # max global grad norm; 0 disables clipping
    eval_every: int = 200  # validate every N steps (and at the last step); 0 = only at the end
    eval_batches: int = 8  # validation batches of batch_size sequences (fixed windows of the val stream)
    ckpt_every: int = 500  # checkpoint every N steps (and at the last step); 0 = only at the end
    keep_states: int = 1  # optimizer-state files kept for resume (older ones deleted); 0 keeps all
    seed: int = 0  # seeds the init, the data order (batch offsets from (seed, step)) and the tokenizer split
    compile: bool = False  # torch.compile the model
    val_fraction: float = 0.05  # share of docs held out when the corpus is given as plain files
    vocab_size: int = 0  # tokenizer vocabulary; 0 = the model's vocab_size (must be <= it)
    eval_docs_per_label: int = 40  # held-out docs per label written to eval/docs.jsonl for routing traces
    eval_doc_chars: int = 1500  # each eval doc is cut to about this many characters

    def validate(self, model_cfg: ModelConfig | None = None) -> None:
        for name in ("steps", "batch_size", "grad_accum", "eval_batches"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"train.{name} must be a positive integer, got {value!r}")
        for name in ("seq_len", "warmup_steps", "eval_every", "ckpt_every", "keep_states", "vocab_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"train.{name} must be an integer >= 0, got {value!r}")
        for name in ("lr", "min_lr", "weight_decay", "grad_clip"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value < 0 or value != value:
                raise ValueError(f"train.{name} must be a number >= 0, got {value!r}")
        if self.min_lr > self.lr:
            raise ValueError(f"train.min_lr ({self.min_lr}) must be <= train.lr ({self.lr})")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"train.val_fraction must be in [0, 1), got {self.val_fraction}")
        if model_cfg is not None:
            if self.seq_len > model_cfg.block_size:
                raise ValueError(f"train.seq_len ({self.seq_len}) must be <= block_size ({model_cfg.block_size})")
            if (self.vocab_size or model_cfg.vocab_size) < 257:
                raise ValueError(
                    f"vocab_size {self.vocab_size or model_cfg.vocab_size} is too small for the byte-level "
                    "tokenizer (needs >= 257); pass --vocab-size 320 or more"
                )
            if self.vocab_size > model_cfg.vocab_size:
                raise ValueError(
                    f"train.vocab_size ({self.vocab_size}) must be <= the model's vocab_size ({model_cfg.vocab_size})"
                )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown field(s) in train config: {', '.join(unknown)}")
        return cls(**data)


# Fields that must not change on resume (they change the data or the optimisation, not just logging).
RESUME_FIXED = (
    "batch_size",
    "seq_len",
    "grad_accum",
    "lr",
    "min_lr",
    "warmup_steps",
    "weight_decay",
    "beta1",
    "beta2",
    "grad_clip",
    "seed",
    "vocab_size",
    "eval_batches",
)
