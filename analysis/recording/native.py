"""Record the routing of our `MoETransformer` (moe_core): its forward hooks, and `record`, text in,
`RoutingTrace` out, through the shared pipeline (`analysis.recording.pipeline.record_with`).

`RoutingRecorder(model)` is a context manager that hooks every MoE layer (and removes the hooks on exit,
exceptions included). Per token and MoE layer it captures, from `layer.router` (its input is the router
input hidden state, its output a `RouterOutput`):
- the K chosen experts (chosen on score + bias, ranked by that biased score) and their gate weights,
- the unbiased `score` and `biased_score` of each chosen expert, and all E scores,
- `bias_flip` per (token, layer, rank): the expert was chosen on score + bias but is not among those the
  same router (`moe_core.moe.choose_experts`, same group limiting) chooses on the score alone,
- `entropy`: router entropy (`moe_core.routing_stats.router_entropy`) of the scores normalised over all E,
- optionally the router input x (float16, at most `max_hidden` tokens),
and from `layer.experts` (weighted routed output r_t) and `layer.shared` (shared output h_t):
- `shared_share` = ||h_t|| / (||h_t|| + ||r_t||), the shared expert's share of the FFN output norm
  (0 without a shared expert or when both outputs are zero).
Hooks only keep references/small reductions on the device; everything moves to the CPU once, at the end.

`record(model, tokenizer, docs)` windows the text by `block_size` (the pipeline's non-overlapping windows,
as during training on packed blocks) and feeds each batch of windows as it is. With `capacity_factor > 0`
the capacity drop depends on the batch, so the shared share and later layers depend on `batch_size`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np
import torch

from analysis.recording.pipeline import FP16_MAX, MAX_TOKENS, ForwardHooks, record_with
from analysis.trace import RoutingTrace
from moe_core.moe import choose_experts
from moe_core.routing_stats import bias_flips, router_entropy

BATCH_TOKENS = 4096  # default tokens per forward: few Python round trips, logits of B*S*vocab stay small


class RoutingRecorder(ForwardHooks):
    """Forward hooks on `model.moe_layers`; use as `with RoutingRecorder(model) as rec: model(x)`, then
    `rec.result()`. Tokens are numbered in "stream" order: the row-major (B, S) tokens of each forward, one
    forward after another.

    keep_hidden: also keep router inputs (float16) of at most `max_hidden` tokens: by default the first
    ones; `keep_rows(idx)` before a forward picks which of its T tokens to keep instead.
    """

    def __init__(self, model: torch.nn.Module, keep_hidden: bool = False, max_hidden: int = 2000):
        super().__init__()
        self.model = model
        self.layers = list(model.moe_layers)
        if not self.layers:
            raise ValueError("the model has no MoE layers to record")
        self.keep_hidden = keep_hidden
        self.max_hidden = max_hidden
        n = len(self.layers)
        self._router: list[list[tuple]] = [[] for _ in range(n)]  # per layer: (topk, weights, scores, biased)
        self._routed_norm: list[list[torch.Tensor]] = [[] for _ in range(n)]  # per layer: (T,)
        self._shared_norm: list[list[torch.Tensor]] = [[] for _ in range(n)]  # per layer: (T,)
        self._hidden: list[list[torch.Tensor]] = [[] for _ in range(n)]  # per layer: (m, D) float16
        self._hidden_rows: list[np.ndarray] = []  # stream rows of the kept inputs, per forward
        self._next_keep: np.ndarray | None = None
        self._sel: torch.Tensor | None = None  # this forward's kept local rows
        self._n_stream = 0  # tokens seen so far
        self._n_hidden = 0

    # --- context manager ----------------------------------------------------------------------------

    def attach(self) -> None:
        for i, layer in enumerate(self.layers):
            self.hook(layer.router, partial(self._on_router, i))
            self.hook(layer.experts, partial(self._on_experts, i))
            if layer.shared is not None:
                self.hook(layer.shared, partial(self._on_shared, i))

    def keep_rows(self, local_rows: Sequence[int] | np.ndarray) -> None:
        """Keep the router inputs of these token indices (0..T-1) of the NEXT forward (within the cap)."""
        self._next_keep = np.asarray(local_rows, dtype=np.int64)

    # --- hooks --------------------------------------------------------------------------------------

    def _on_router(self, i: int, module, args, out) -> None:
        x_TD = args[0].detach()  # detach: recording never keeps an autograd graph alive
        T = x_TD.shape[0]
        if i == 0:  # a new forward starts at the first MoE layer
            self._start_forward(T, x_TD.device)
        self._router[i].append(tuple(t.detach() for t in out[:4]))  # topk, weights, scores, biased
        if self._sel is not None:
            kept = x_TD.index_select(0, self._sel).clamp(-FP16_MAX, FP16_MAX)  # no inf from float16 overflow
            self._hidden[i].append(kept.to(torch.float16))
        if self.layers[i].shared is None:
            self._shared_norm[i].append(torch.zeros(T, device=x_TD.device))

    def _on_experts(self, i: int, module, args, out_TD) -> None:
        self._routed_norm[i].append(torch.linalg.vector_norm(out_TD.detach().float(), dim=-1))  # (T,)

    def _on_shared(self, i: int, module, args, out_TD) -> None:
        self._shared_norm[i].append(torch.linalg.vector_norm(out_TD.detach().float(), dim=-1))  # (T,)

    def _start_forward(self, T: int, device: torch.device) -> None:
        self._sel = None
        room = self.max_hidden - self._n_hidden
        if self.keep_hidden and room > 0:
            rows = np.arange(T) if self._next_keep is None else self._next_keep
            rows = rows[(rows >= 0) & (rows < T)][:room]
            if len(rows):
                self._sel = torch.as_tensor(rows, device=device)
                self._hidden_rows.append(rows + self._n_stream)
                self._n_hidden += len(rows)
        self._next_keep = None
        self._n_stream += T

    # --- result -------------------------------------------------------------------------------------

    def result(self) -> dict[str, np.ndarray]:
        """Everything captured so far, stacked over layers, on the CPU (n = tokens in stream order):
        experts (n, L, K) int64, weights/scores_k/biased_k (n, L, K) float32, flips (n, L, K) bool,
        scores (n, L, E) float32, shared_share/entropy (n, L) float32, hidden (M, L, D) float16 and
        hidden_rows (M,) int64 stream rows (both None without keep_hidden)."""
        if not self._router[0]:
            raise ValueError("the recorder saw no forward pass")
        per_layer = [self._layer_result(i) for i in range(len(self.layers))]
        out = {key: np.stack([p[key] for p in per_layer], axis=1) for key in per_layer[0]}
        out["hidden"] = out["hidden_rows"] = None
        if self._hidden_rows:
            out["hidden"] = np.stack([torch.cat(chunks).cpu().numpy() for chunks in self._hidden], axis=1)  # (M, L, D)
            out["hidden_rows"] = np.concatenate(self._hidden_rows)
        return out

    def _layer_result(self, i: int) -> dict[str, np.ndarray]:
        cfg = self.layers[i].cfg
        topk_TK, weights_TK, scores_TE, biased_TE = (torch.cat(parts) for parts in zip(*self._router[i]))
        # what the router would choose on the unbiased scores (same group limiting)
        unbiased_TK = choose_experts(scores_TE, cfg.top_k, cfg.n_groups, cfg.topk_groups)
        flips_TK = bias_flips(topk_TK, unbiased_TK)
        entropy_T = router_entropy(scores_TE)
        routed_T, shared_T = torch.cat(self._routed_norm[i]), torch.cat(self._shared_norm[i])
        total_T = routed_T + shared_T
        share_T = torch.where(total_T > 0, shared_T / total_T.clamp_min(1e-30), torch.zeros_like(total_T))
        parts = {
            "experts": topk_TK,
            "weights": weights_TK.float(),
            "scores_k": scores_TE.gather(-1, topk_TK),
            "biased_k": biased_TE.gather(-1, topk_TK),
            "flips": flips_TK,
            "scores": scores_TE.float(),
            "shared_share": share_T,
            "entropy": entropy_T.float(),
        }
        return {key: value.cpu().numpy() for key, value in parts.items()}


# --- text in, trace out ----------------------------------------------------------------------------------


def record(
    model: torch.nn.Module,
    tokenizer,
    docs: str | Sequence[str] | Sequence[Any],
    *,
    labels: Sequence[str] | None = None,
    batch_size: int | None = None,
    max_hidden: int = 2000,
    device: str | torch.device | None = None,
    meta: dict[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
    max_tokens: int = MAX_TOKENS,
) -> RoutingTrace:
    """Route `docs` through `model` and return their `RoutingTrace` (see the module docstring).

    docs: one text, a list of texts (doc_ids "0", "1", ...) or of `Doc`s (their doc_id, label, text).
    labels: one label per doc (overrides a Doc's label; default "" = unlabelled).
    batch_size: windows per forward pass (default: as many as make ~BATCH_TOKENS tokens).
    max_hidden: router inputs kept (0 = none), a seeded random
        subsample of the tokens when there are more (the same text always keeps the same tokens).
    device: where the inputs go (default: the model's device; the model must already be there).
    meta: merged into the trace meta (e.g. {"run": name, "step": 500}).
    progress: called as progress(tokens_done, tokens_total) after each batch.
    max_tokens: ValueError when the docs hold more tokens than this (checked before the model runs).
    """
    from moe_core.tokenizer import encode_with_offsets, token_bytes

    cfg = model.config
    model_device = next(model.parameters()).device
    device = model_device if device is None else torch.device(device)
    if device != model_device:
        raise ValueError(f"the model is on {model_device}, not on {device}: move it first (model.to(device))")

    def encode(text: str):
        ids, spans = encode_with_offsets(tokenizer, text)
        # a token holding only continuation bytes of a character has an empty span: show its bytes
        texts = [
            text[s:e] if e > s else token_bytes(tokenizer, t).decode("utf-8", "replace")
            for t, (s, e) in zip(ids, spans)
        ]
        return ids, spans, texts

    # the pipeline's sample is at most max_hidden tokens: the recorder's cap never cuts it
    rec = RoutingRecorder(model, keep_hidden=max_hidden > 0, max_hidden=max(max_hidden, 0))

    def forward(ids_BS: np.ndarray, keep_hidden_BS: np.ndarray) -> None:
        rec.keep_rows(np.flatnonzero(keep_hidden_BS.reshape(-1)))
        model(torch.as_tensor(ids_BS, device=device))

    trace_meta = {
        "run": None,
        "step": None,
        "config": cfg.to_dict(),
        "n_experts": cfg.moe.n_experts,
        "layer_blocks": list(cfg.moe_layers),
        "block_size": cfg.block_size,
        "windowing": "non-overlapping",
        **(meta or {}),
    }
    return record_with(
        rec,
        encode,
        forward,
        docs,
        model=model,
        vocab_size=cfg.vocab_size,
        window=cfg.block_size,
        batch_size=max(1, BATCH_TOKENS // cfg.block_size) if batch_size is None else batch_size,
        labels=labels,
        max_hidden=max_hidden,
        max_tokens=max_tokens,
        meta=trace_meta,
        progress=progress,
    )
