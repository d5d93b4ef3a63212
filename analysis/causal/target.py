"""`CausalTarget`: what causal analysis needs from a model source: a model that supports interventions
(our `MoETransformer`: `Router.override`, `forward_from`, `unembed`) and its tokenizer. Sources hand one out
through `ModelSource.causal_model(step)` when `capabilities.causal` is available. A Hugging Face folder hands
out `analysis.causal.hf_interventions.HFCausalTarget`, with the same members: pages and the CLI call these and
never ask which model it is."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from analysis.causal.ablation import BATCH_TOKENS, MODES, AblationRunner, EvalTokens, tokenize_docs


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

    @property
    def top_k(self) -> int:
        return self.model.config.moe.top_k

    @property
    def block_size(self) -> int:
        """Tokens per window."""
        return self.model.config.block_size

    @property
    def modes(self) -> tuple[str, ...]:
        """The ablation modes this model supports (all; "shared" fails where a layer has no shared expert)."""
        return MODES

    what_if_reason = None  # why what-if routing is unavailable (never, for our model)
    lens_reason = None  # why the expert logit lens is unavailable (never)

    def token_text(self, token_id: int) -> str:
        """What a vocabulary entry stands for, as text (invalid UTF-8 bytes replaced)."""
        from moe_core.tokenizer import token_bytes

        return token_bytes(self.tokenizer, token_id).decode("utf-8", "replace")

    def tokens(self, docs: Sequence[Any], batch_tokens: int | None = None) -> EvalTokens:
        """Documents (texts, `Doc`s or (doc_id, label, text) tuples) as tokens and windows; padded batches
        unless a capacity limit makes routing depend on the batch. batch_tokens: default BATCH_TOKENS."""
        cfg = self.model.config
        batch_tokens = BATCH_TOKENS if batch_tokens is None else batch_tokens
        pad = cfg.moe.capacity_factor <= 0
        return tokenize_docs(self.tokenizer, list(docs), cfg.block_size, batch_tokens, pad=pad)

    def runner(
        self, docs: Sequence[Any], progress: Callable[[int, int], None] | None = None, batch_tokens: int | None = None
    ) -> AblationRunner:
        """The baseline forward of `docs`, ready for ablations."""
        return AblationRunner(self.model, self.tokens(docs, batch_tokens), progress)

    def logit_lens(self, data: EvalTokens, layer: int, **kwargs):
        """`analysis.causal.logit_lens.expert_logit_lens` of `layer` on `data` (rows, top_n as there)."""
        from analysis.causal.logit_lens import expert_logit_lens

        return expert_logit_lens(self.model, data, layer, token_text=self.token_text, **kwargs)

    def what_if(self, data: EvalTokens, overrides: dict):
        """`analysis.causal.what_if.what_if` on `data` with `overrides` (MoE layer -> RoutingOverride)."""
        from analysis.causal.what_if import what_if

        return what_if(self.model, data, overrides)
