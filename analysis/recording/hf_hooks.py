"""Record the routing of a Hugging Face MoE model (`analysis.hf`): its forward hooks, and `record_hf`, text
in, `RoutingTrace` out, through the shared pipeline (`analysis.recording.pipeline.record_with`).

In the supported transformers versions every family routes through a small router module that returns
`(router_logits_TE, weights_TK, indices_TK)` and whose input is the router input hidden state; the MoE block
then calls `experts(x, indices, weights)` and, where it has them, shared experts. A forward hook on the router
records the experts and gate weights exactly as the model chose them (after any selection bias such as
DeepSeek-V3's `e_score_correction_bias`); nothing is re-chosen from the logits. From the logits we derive, per
family (`analysis.hf.families.FAMILIES`):
- scores over all experts: softmax(logits) or sigmoid(logits) (DeepSeek-V3). For GPT-OSS and GraniteMoE, which
  choose on raw logits and softmax only the chosen ones, scores are softmax over all logits (same order).
- biased scores: scores + e_score_correction_bias (DeepSeek-V3), else the scores.
- bias_flip (DeepSeek-V3, GLM-4-MoE): the chosen expert is not among those the same group-limited choice
  (`moe_core.moe.choose_experts`, tested against the model's router) makes on the unbiased scores.
- entropy: `moe_core.routing_stats.router_entropy` of the scores over all experts.
- shared_share = ||shared|| / (||routed|| + ||shared||) per token, from hooks on the experts module (weighted
  routed output) and the shared expert(s) (Qwen2-MoE: times sigmoid(shared_expert_gate(x))); 0 without one.
- rank: a token's chosen experts are ordered by biased score, highest first (DeepSeek routers return them
  unsorted); each weight stays with its expert.

`record_hf` windows the text as `record` does; the prefix tokens the tokenizer adds itself (e.g. BOS) are fed
in front of every window, so each window looks like a fresh sequence to the model, but are left out of the trace.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np
import torch

from analysis.hf.families import MIN_TRANSFORMERS, FamilySpec
from analysis.hf.loading import HFMoEModel, prefix_tokens, tokenize
from analysis.recording.pipeline import FP16_MAX, ForwardHooks, record_with
from analysis.trace import RoutingTrace
from moe_core.routing_stats import bias_flips, router_entropy


def router_tensors(spec: FamilySpec, router: torch.nn.Module, out: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
    """From a router's output (logits_TE, weights_TK, indices_TK), the per-token arrays of one layer:
    experts/weights/scores_k/biased_k/flips (T, K) in rank order, scores (T, E) float32."""
    if not (isinstance(out, tuple) and len(out) >= 3 and out[2].ndim == 2 and not out[2].is_floating_point()):
        raise ValueError(  # a transformers version that routes differently: never record garbage
            f"{type(router).__name__} does not return (logits, weights, indices) as this adapter expects "
            f"(tested with transformers {'.'.join(map(str, MIN_TRANSFORMERS))})"
        )
    logits_TE, weights_TK, idx_TK = (t.detach() for t in out[:3])
    logits_TE = logits_TE.reshape(idx_TK.shape[0], -1).float()
    scores_TE = logits_TE.sigmoid() if spec.score_fn == "sigmoid" else logits_TE.softmax(dim=-1)
    biased_TE = scores_TE
    if spec.bias_attr is not None:
        biased_TE = scores_TE + getattr(router, spec.bias_attr).float()
    # rank order: highest biased score first (stable, so already-sorted routers keep their order)
    order_TK = biased_TE.gather(1, idx_TK).argsort(dim=-1, descending=True, stable=True)
    idx_TK = idx_TK.gather(1, order_TK)
    weights_TK = weights_TK.float().gather(1, order_TK)
    flips_TK = torch.zeros_like(idx_TK, dtype=torch.bool)
    if spec.unbiased_choice is not None:
        unbiased_TK = spec.unbiased_choice(router, scores_TE)
        flips_TK = bias_flips(idx_TK, unbiased_TK)
    return {
        "experts": idx_TK,
        "weights": weights_TK,
        "scores_k": scores_TE.gather(1, idx_TK),
        "biased_k": biased_TE.gather(1, idx_TK),
        "flips": flips_TK,
        "scores": scores_TE,
    }


class HFRoutingRecorder(ForwardHooks):
    """Forward hooks on the routers, experts and shared experts of an `HFMoEModel`.

    Before each forward, `next_forward(keep, hidden)` says which of its T = B*S tokens (row-major) to keep
    (the others are prefix tokens such as BOS) and of which to keep the router input; `result()` stacks
    everything over forwards and layers, on the CPU."""

    def __init__(self, hf: HFMoEModel, keep_scores: bool = True):
        super().__init__()
        self.hf = hf
        self.keep_scores = keep_scores
        n = hf.n_layers
        self._router: list[list[dict[str, torch.Tensor]]] = [[] for _ in range(n)]
        self._routed_norm: list[list[torch.Tensor]] = [[] for _ in range(n)]  # (T,) per forward
        self._shared_norm: list[list[torch.Tensor]] = [[] for _ in range(n)]
        self._shared_gate: list[list[torch.Tensor]] = [[] for _ in range(n)]
        self._hidden: list[list[torch.Tensor]] = [[] for _ in range(n)]  # (m, D) float16 per forward
        self._keep: dict[torch.device, torch.Tensor] = {}
        self._keep_hidden: dict[torch.device, torch.Tensor] = {}
        self._keep_cpu = self._hidden_cpu = torch.zeros(0, dtype=torch.long)

    def attach(self) -> None:
        for i, layer in enumerate(self.hf.layers):
            self.hook(layer.router, partial(self._on_router, i))
            self.hook(layer.experts, partial(self._on_norm, self._routed_norm, i))
            if layer.shared is not None:
                self.hook(layer.shared, partial(self._on_norm, self._shared_norm, i))
            if layer.shared_gate is not None:
                self.hook(layer.shared_gate, partial(self._on_gate, i))

    def next_forward(self, keep: np.ndarray, keep_hidden: np.ndarray) -> None:
        """Local token rows (0..T-1) of the next forward to record, and the subset whose router inputs to keep."""
        self._keep_cpu = torch.as_tensor(keep, dtype=torch.long)
        self._hidden_cpu = torch.as_tensor(keep_hidden, dtype=torch.long)
        self._keep.clear()
        self._keep_hidden.clear()

    def _rows(self, cache: dict, rows: torch.Tensor, device: torch.device) -> torch.Tensor:
        if device not in cache:  # with device_map="auto" layers live on different devices
            cache[device] = rows.to(device)
        return cache[device]

    def _on_router(self, i: int, module, args, out) -> None:
        x_TD = args[0].detach()
        x_TD = x_TD.reshape(-1, x_TD.shape[-1])
        keep = self._rows(self._keep, self._keep_cpu, x_TD.device)
        parts = router_tensors(self.hf.spec, module, out)
        if not self.keep_scores:
            parts["entropy"] = router_entropy(parts["scores"])
            del parts["scores"]
        # to the CPU at once: a long text through a big model would otherwise pile up GBs on the GPU
        self._router[i].append({k: v.index_select(0, keep).cpu() for k, v in parts.items()})
        if len(self._hidden_cpu):
            rows = self._rows(self._keep_hidden, self._hidden_cpu, x_TD.device)
            self._hidden[i].append(x_TD.index_select(0, rows).float().clamp(-FP16_MAX, FP16_MAX).half().cpu())

    def _on_norm(self, store: list[list[torch.Tensor]], i: int, module, args, out) -> None:
        out = out[0] if isinstance(out, tuple) else out
        out_TD = out.detach().reshape(-1, out.shape[-1])
        keep = self._rows(self._keep, self._keep_cpu, out_TD.device)
        store[i].append(torch.linalg.vector_norm(out_TD.index_select(0, keep).float(), dim=-1).cpu())  # (T,)

    def _on_gate(self, i: int, module, args, out) -> None:
        g_T = out.detach().reshape(-1).float().sigmoid()
        self._shared_gate[i].append(g_T.index_select(0, self._rows(self._keep, self._keep_cpu, g_T.device)).cpu())

    def result(self) -> dict[str, np.ndarray | None]:
        """experts/weights/scores_k/biased_k/flips (n, L, K), scores (n, L, E) or None, shared_share/entropy
        (n, L), hidden (M, L, D) float16 or None, in stream order (forward after forward)."""
        if not self._router[0]:
            raise ValueError("the recorder saw no forward pass")
        per_layer = [self._layer_result(i) for i in range(self.hf.n_layers)]
        out: dict[str, np.ndarray | None] = {k: np.stack([p[k] for p in per_layer], axis=1) for k in per_layer[0]}
        out.setdefault("scores", None)
        out["hidden"] = None
        if self._hidden[0]:
            out["hidden"] = np.stack([torch.cat(chunks).numpy() for chunks in self._hidden], axis=1)
        return out

    def _layer_result(self, i: int) -> dict[str, np.ndarray]:
        parts = {k: torch.cat([p[k] for p in self._router[i]]) for k in self._router[i][0]}
        if "scores" in parts:
            parts["entropy"] = router_entropy(parts["scores"])
        routed_T = torch.cat(self._routed_norm[i])
        shared_T = torch.zeros_like(routed_T)
        if self._shared_norm[i]:
            shared_T = torch.cat(self._shared_norm[i])
            if self._shared_gate[i]:
                shared_T = shared_T * torch.cat(self._shared_gate[i])
        total_T = routed_T + shared_T
        parts["shared_share"] = torch.where(total_T > 0, shared_T / total_T.clamp_min(1e-30), 0.0)
        return {k: v.numpy() for k, v in parts.items()}


def record_hf(
    hf: HFMoEModel,
    docs: str | Sequence[str] | Sequence[Any],
    *,
    labels: Sequence[str] | None = None,
    batch_size: int = 8,
    window: int = 512,
    max_hidden: int = 2000,
    keep_scores: bool = True,
    add_prefix: bool = True,
    meta: dict[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> RoutingTrace:
    """Route `docs` through a loaded HF model and return their `RoutingTrace` (meta["source"] = "hf").

    docs/labels as `analysis.recording.record`. window: text tokens per forward sequence (plus the tokenizer's
    prefix tokens such as BOS when `add_prefix`); capped at the model's max_position_embeddings.
    max_hidden: router inputs kept (0 = none), a seeded random subsample when there are more tokens.
    keep_scores: keep the (n, L, E) scores over all experts (n*L*E*4 bytes). progress(done, total) per batch.
    """
    tok = hf.tokenizer
    prefix = prefix_tokens(tok) if add_prefix else []
    P = len(prefix)
    max_pos = getattr(hf.model.config, "max_position_embeddings", None) or window + P
    window = min(window, max_pos - P)
    if window < 1:
        raise ValueError(f"window must be >= 1 token, got {window}")
    vocab = hf.model.config.vocab_size
    if max(prefix, default=0) >= vocab:
        raise ValueError(f"the tokenizer does not match the model: prefix token id {max(prefix)} >= vocab_size {vocab}")

    rec = HFRoutingRecorder(hf, keep_scores=keep_scores)
    device = hf.input_device

    def forward(ids_BS: np.ndarray, keep_hidden_BS: np.ndarray) -> None:
        B, S = ids_BS.shape
        prefix_BP = np.tile(np.asarray(prefix, dtype=np.int64), (B, 1))
        input_BS = np.concatenate([prefix_BP, ids_BS], axis=1)  # (B, P + S)
        local = (np.arange(B)[:, None] * (S + P) + P + np.arange(S)).reshape(-1)  # text rows of B*(P+S)
        rec.next_forward(local, local[keep_hidden_BS.reshape(-1)])
        # the base model: no LM head, so no (B, S, vocab) logits
        hf.model.base_model(input_ids=torch.as_tensor(input_BS, device=device), use_cache=False)

    trace_meta = {
        **hf.meta(),
        "block_size": int(window),
        "windowing": "non-overlapping",
        "prefix_tokens": [int(t) for t in prefix],
        **(meta or {}),
    }
    return record_with(
        rec,
        lambda text: tokenize(tok, text),
        forward,
        docs,
        model=hf.model,
        vocab_size=vocab,
        window=window,
        batch_size=batch_size,
        labels=labels,
        max_hidden=max_hidden,
        max_tokens=None,  # no limit for Hugging Face models (as before the shared pipeline)
        meta=trace_meta,
        progress=progress,
    )
