"""`CausalTarget`: what causal analysis needs from a model source: a model that supports interventions
(our `MoETransformer`: `Router.override`, `forward_from`, `unembed`) and its tokenizer. Sources hand one out
through `ModelSource.causal_model(step)` when `capabilities.causal` is available."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from analysis.causal.ablation import BATCH_TOKENS, AblationRunner, EvalTokens, tokenize_docs


@dataclass(frozen=True)
class CausalTarget:
    model: Any  # moe_core.model.MoETransformer, eval mode
    tokenizer: Any  # its tokenizers.Tokenizer
    name: str  # the source's name (for tables and file names)
    step: int | None  # the checkpoint step

    @property
    def n_layers(self) -> int:
        return len(self.model.moe_layers)

    @property
    def n_experts(self) -> int:
        return self.model.config.moe.n_experts

    def token_text(self, token_id: int) -> str:
        """What a vocabulary entry stands for, as text (invalid UTF-8 bytes replaced)."""
        from moe_core.tokenizer import token_bytes

        return token_bytes(self.tokenizer, token_id).decode("utf-8", "replace")

    def tokens(self, docs: Sequence[Any], batch_tokens: int = BATCH_TOKENS) -> EvalTokens:
        """Documents (texts, `Doc`s or (doc_id, label, text) tuples) as tokens and windows; padded batches
        unless a capacity limit makes routing depend on the batch."""
        cfg = self.model.config
        pad = cfg.moe.capacity_factor <= 0
        return tokenize_docs(self.tokenizer, list(docs), cfg.block_size, batch_tokens, pad=pad)

    def runner(
        self, docs: Sequence[Any], progress: Callable[[int, int], None] | None = None, batch_tokens: int = BATCH_TOKENS
    ) -> AblationRunner:
        """The baseline forward of `docs`, ready for ablations."""
        return AblationRunner(self.model, self.tokens(docs, batch_tokens), progress)
