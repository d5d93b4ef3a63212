"""Expert ablation, the expert logit lens and what-if routing on a loaded Hugging Face MoE (`analysis.hf.HFMoEModel`),
through forward hooks only (no transformers code is changed). Hooks live for the duration of a context manager
and are always removed, exceptions included.

Every supported router returns `(logits_TE, weights_TK, indices_TK)` and the MoE block then calls
`experts(x_TD, indices_TK, weights_TK)` (analysis/recording/hf_hooks.py), so:
- "zero": a hook on the router sets expert e's returned weight to 0 (no renormalisation): every family;
- "layer": a hook on the experts module returns zeros (only the shared expert and the residual remain);
- "shared": a hook on the shared expert(s) returns zeros (families with `FamilySpec.shared_attr`);
- "reroute" and what-if routing: a hook on the router replaces its choice by the family's own rule recomputed
  from the returned logits under a `RoutingOverride` (`FamilySpec.routing_rule`: removed experts -inf, a
  forced one +inf, an added bias, another top-k); only where the rule is reproduced exactly (not Phi-MoE).
`FamilySpec.causal_modes` lists a family's ablation modes; anything else is a one-line ValueError.

Runs are plain full forwards over the windows of `analysis.causal.ablation.tokenize_docs` (the tokenizer's
prefix tokens such as BOS in front of each window, as `record_hf` does, and left out of every table), so the
Δ loss tables are those of our model (`ablation_result`, `domain_deltas`, `sweep`): loss at a window's first
text token is NaN there too. Shape legend: B windows, P prefix tokens, S positions, T tokens, D model dim,
V vocabulary, E experts, K top-k.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from analysis.causal.ablation import BATCH_TOKENS, Ablation, AblationRunner, EvalTokens, tokenize_docs
from analysis.causal.logit_lens import SHARED, LensResult, LensTables, lens_change
from analysis.causal.what_if import capture_routing, what_if_frame
from analysis.hf.families import FamilySpec
from analysis.hf.loading import HFMoEModel, prefix_tokens, tokenize
from analysis.recording.hf_hooks import router_tensors
from analysis.recording.pipeline import model_lock
from moe_core.moe import RoutingOverride

LOGITS_BYTES = 2**28  # a forward's (B, P+S, V) float32 logits stay under ~256 MB: fewer tokens per batch at large V
NO_RULE = "its router's rule is not recomputed here"
NO_LENS = "its final norm is not an RMSNorm"


def unsupported(spec: FamilySpec) -> str:
    """What this family cannot do, one line ('' when everything is supported), for the app and the CLI."""
    missing = []
    if spec.routing_rule is None:
        missing.append(f"re-routing ablation and what-if routing ({NO_RULE})")
    if not spec.lens:
        missing.append(f"the expert logit lens ({NO_LENS})")
    if not spec.shared_attr:
        missing.append("shared-expert ablation (no shared expert)")
    return f"{spec.name}: no {'; no '.join(missing)}." if missing else ""


def check_mode(spec: FamilySpec, mode: str) -> None:
    if mode not in spec.causal_modes:
        raise ValueError(
            f"{spec.name} supports the ablation modes {', '.join(spec.causal_modes)}, not {mode!r}"
            + (f" ({NO_RULE})" if mode == "reroute" else "")
        )


def _check_layer(hf: HFMoEModel, layer: int) -> None:
    if not 0 <= layer < hf.n_layers:
        raise ValueError(f"layer must be in 0..{hf.n_layers - 1}, got {layer}")


def _router_out(module: torch.nn.Module, out) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if not (isinstance(out, tuple) and len(out) >= 3 and not out[2].is_floating_point()):
        raise ValueError(f"{type(module).__name__} does not return (logits, weights, indices) as the hooks expect")
    return out[0], out[1], out[2]


def _zero_hook(experts: tuple[int, ...]) -> Callable:
    """Router hook: the listed experts keep being chosen, with weight 0 (no renormalisation)."""

    def hook(module, args, out):
        logits_TE, w_TK, idx_TK = _router_out(module, out)
        zeroed_TK = torch.isin(idx_TK, torch.tensor(experts, device=idx_TK.device))
        return (logits_TE, w_TK.masked_fill(zeroed_TK, 0.0), idx_TK, *out[3:])

    return hook


def _rule_hook(spec: FamilySpec, override: RoutingOverride) -> Callable:
    """Router hook: the family's rule recomputed from the returned logits under `override` (experts best first)."""

    def hook(module, args, out):
        logits_TE, w_TK, idx_TK = _router_out(module, out)
        w_new, idx_new = spec.routing_rule(module, logits_TE.reshape(idx_TK.shape[0], -1), args[0].dtype, override)
        if override.zeroed:
            zeroed = torch.isin(idx_new, torch.tensor(override.zeroed, device=idx_new.device))
            w_new = w_new.masked_fill(zeroed, 0.0)
        return (logits_TE, w_new, idx_new, *out[3:])

    return hook


def _zeros_hook(module, args, out):
    return torch.zeros_like(out[0] if isinstance(out, tuple) else out)


@contextmanager
def hf_ablation(hf: HFMoEModel, ablation: Ablation | None) -> Iterator[None]:
    """`hf.model` with `ablation` applied by forward hooks for the duration (None: unchanged); always removed.
    ValueError (one line) for a mode the family does not support or a bad layer/expert."""
    if ablation is None:
        yield
        return
    check_mode(hf.spec, ablation.mode)
    _check_layer(hf, ablation.layer)
    layer = hf.layers[ablation.layer]
    if ablation.expert is not None and not 0 <= ablation.expert < hf.n_experts:
        raise ValueError(f"expert must be in 0..{hf.n_experts - 1}, got {ablation.expert}")
    if ablation.mode == "shared":
        module, hook = layer.shared, _zeros_hook
    elif ablation.mode == "layer":
        module, hook = layer.experts, _zeros_hook
    elif ablation.mode == "zero":
        module, hook = layer.router, _zero_hook((ablation.expert,))
    else:
        module, hook = layer.router, _rule_hook(hf.spec, RoutingOverride(removed=(ablation.expert,)))
    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def hf_routing_override(hf: HFMoEModel, overrides: dict[int, RoutingOverride]) -> Iterator[None]:
    """The given MoE layers' routers follow the family's rule under their `RoutingOverride` for the duration
    (forward hooks, always removed). ValueError where the family's rule is not reproduced."""
    if overrides and hf.spec.routing_rule is None:
        raise ValueError(f"{hf.spec.name} cannot re-route: {NO_RULE} (what-if routing needs it)")
    for layer, override in overrides.items():
        _check_layer(hf, layer)
        override.validate(hf.n_experts, hf.top_k)
    with ExitStack() as stack:
        for layer, override in overrides.items():
            handle = hf.layers[layer].router.register_forward_hook(_rule_hook(hf.spec, override))
            stack.callback(handle.remove)
        yield


# --- forwards --------------------------------------------------------------------------------------------------


class _Forward:
    """One forward of a batch of windows with the tokenizer's prefix in front; `S` is the last batch's length."""

    def __init__(self, hf: HFMoEModel):
        self.hf = hf
        self.prefix = torch.as_tensor(prefix_tokens(hf.tokenizer), dtype=torch.long, device=hf.input_device)
        self.P, self.S = len(self.prefix), 0

    def logits(self, ids_BS: torch.Tensor) -> torch.Tensor:
        """(B, S, V) logits of the text positions (ids (B, S))."""
        B, self.S = ids_BS.shape
        input_BPS = torch.cat([self.prefix.expand(B, self.P), ids_BS], dim=1)
        return self.hf.model(input_ids=input_BPS, use_cache=False).logits[:, self.P :]

    def text_rows(self, t_TX: torch.Tensor) -> torch.Tensor:
        """Rows of a (B*(P+S), ...) tensor seen by a hook -> those of the text positions, (B*S, ...)."""
        if not self.P:
            return t_TX
        return t_TX.reshape(-1, self.P + self.S, *t_TX.shape[1:])[:, self.P :].reshape(-1, *t_TX.shape[1:])


class HFAblationRunner(AblationRunner):
    """`AblationRunner` on a Hugging Face model: the same loop, losses and tables; every run (baseline or
    ablated) is a plain full forward with the ablation's hooks (`hf_ablation`)."""

    def __init__(self, hf: HFMoEModel, data: EvalTokens, progress: Callable[[int, int], None] | None = None):
        self.hf, self.forward = hf, _Forward(hf)
        super().__init__(hf.model, data, progress)

    def _input_device(self) -> torch.device:
        return self.hf.input_device

    def _check_batches(self) -> None:
        pass  # routing is per token in every supported family (no capacity limit): padding is exact

    def _intervention(self, ablation: Ablation | None):
        return hf_ablation(self.hf, ablation)

    def _logits(self, i: int, ids_BS: torch.Tensor, ablation: Ablation | None) -> torch.Tensor:
        return self.forward.logits(ids_BS)


# --- logit lens ----------------------------------------------------------------------------------------------


def expert_outputs(layer, x_TD: torch.Tensor, idx_TK: torch.Tensor, w_TK: torch.Tensor) -> list[torch.Tensor]:
    """Each rank's weighted expert output, (T, D) per k: the family's experts module called with the one
    expert and its weight; summed over k they are the module's output (tested)."""
    return [layer.experts(x_TD, idx_TK[:, k : k + 1], w_TK[:, k : k + 1]) for k in range(idx_TK.shape[1])]


def shared_output(layer, x_TD: torch.Tensor) -> torch.Tensor:
    """The shared expert(s)' output as added to the residual stream (Qwen2-MoE: times its sigmoid gate)."""
    y_TD = layer.shared(x_TD)
    if layer.shared_gate is not None:
        y_TD = torch.sigmoid(layer.shared_gate(x_TD)) * y_TD
    return y_TD


def final_norm(hf: HFMoEModel) -> tuple[torch.nn.Module, float, torch.Tensor]:
    """(final norm, its eps, the unembedding (V, D)) with a family's constant factors folded in: GraniteMoE
    scales each block's output by `residual_multiplier` and divides the logits by `logits_scaling`."""
    if not hf.spec.lens:
        raise ValueError(f"{hf.spec.name} has no expert logit lens: {NO_LENS}")
    norm = hf.model.base_model.norm
    eps = getattr(norm, "variance_epsilon", getattr(norm, "eps", None))
    if eps is None or getattr(norm, "bias", None) is not None:
        raise ValueError(f"{hf.spec.name} has no expert logit lens: {NO_LENS}")
    cfg = hf.model.config
    factor = getattr(cfg, "residual_multiplier", 1.0) / getattr(cfg, "logits_scaling", 1.0)
    return norm, float(eps), hf.model.get_output_embeddings().weight * factor


def hf_logit_lens(
    hf: HFMoEModel,
    data: EvalTokens,
    layer: int,
    *,
    token_text: Callable[[int], str],
    rows: Sequence[int] | None = None,
    top_n: int = 10,
) -> LensResult:
    """`analysis.causal.logit_lens.expert_logit_lens` for a Hugging Face model: the same formula
    (`lens_change`: RMSNorm scale frozen at the token's final residual, then the LM head) and the same tables;
    experts ranked best first as the recorder ranks them."""
    _check_layer(hf, layer)
    norm, eps, W_VD = final_norm(hf)
    moe = hf.layers[layer]
    fwd = _Forward(hf)
    tables = LensTables(len(data.tokens), hf.n_experts, W_VD.shape[0], layer, top_n, rows)
    ids_all = torch.as_tensor(data.tokens["token_id"].to_numpy(np.int64, copy=True))
    seen: dict[str, Any] = {}

    def on_router(module, args, out):
        x_TD = args[0].reshape(-1, args[0].shape[-1])
        seen.update(x=fwd.text_rows(x_TD), parts=router_tensors(hf.spec, module, _router_out(module, out)))

    hooks = [
        moe.router.register_forward_hook(on_router),
        norm.register_forward_pre_hook(lambda m, args: seen.update(final=args[0])),
    ]
    with model_lock(hf.model), torch.inference_mode():
        try:
            for rows_BS in data.batches:
                fwd.logits(ids_all[torch.as_tensor(rows_BS).clamp_min(0)].to(hf.input_device))
                real = rows_BS.reshape(-1) >= 0
                x_TD = seen["x"][torch.as_tensor(real, device=seen["x"].device)]
                parts = {k: fwd.text_rows(v)[torch.as_tensor(real, device=v.device)] for k, v in seen["parts"].items()}
                idx_TK = parts["experts"].to(x_TD.device)
                w_TK = parts["weights"].to(x_TD.device)
                final = seen["final"][:, fwd.P :]
                final_TD = final.reshape(-1, final.shape[-1])[torch.as_tensor(real, device=final.device)]
                token_rows = rows_BS.reshape(-1)[real]
                outputs = [
                    (k, idx_TK[:, k], w_TK[:, k].float().cpu().numpy(), y_TD)
                    for k, y_TD in enumerate(expert_outputs(moe, x_TD, idx_TK, w_TK))
                ]
                if moe.shared is not None:
                    outputs.append((SHARED, torch.full_like(idx_TK[:, 0], SHARED), None, shared_output(moe, x_TD)))
                for rank, expert_T, weight_T, y_TD in outputs:
                    change_TV = lens_change(y_TD, final_TD, norm.weight, eps, W_VD)
                    tables.add(token_rows, rank, expert_T, weight_T, change_TV)
        finally:
            for h in hooks:
                h.remove()
    return tables.result(token_text)


# --- what-if routing -----------------------------------------------------------------------------------------


def _capture(hf: HFMoEModel, data: EvalTokens, overrides: dict[int, RoutingOverride]):
    """`capture_routing` of `hf` under `overrides`: changed layers keep the rule's order (best first, a forced
    expert first), the others are ranked as the recorder ranks them (by biased score)."""
    fwd = _Forward(hf)

    def extract(i: int, router: torch.nn.Module):
        def read(out):
            if i in overrides:
                idx_TK, w_TK = out[2], out[1]
            else:
                parts = router_tensors(hf.spec, router, _router_out(router, out))
                idx_TK, w_TK = parts["experts"], parts["weights"]
            return fwd.text_rows(idx_TK), fwd.text_rows(w_TK)

        return read

    routers = [(layer.router, extract(i, layer.router)) for i, layer in enumerate(hf.layers)]
    return capture_routing(hf.model, data, routers, fwd.logits, hf.input_device, hf_routing_override(hf, overrides))


def hf_what_if(hf: HFMoEModel, data: EvalTokens, overrides: dict[int, RoutingOverride]) -> pd.DataFrame:
    """`analysis.causal.what_if.what_if` for a Hugging Face model: the same table, each changed router following
    its family's rule under the `RoutingOverride`. ValueError where the family's rule is not reproduced."""
    if hf.spec.routing_rule is None:
        raise ValueError(f"{hf.spec.name} cannot re-route: {NO_RULE} (what-if routing needs it)")
    for layer in overrides:
        _check_layer(hf, layer)
    return what_if_frame(data.tokens, _capture(hf, data, {}), _capture(hf, data, overrides))


# --- the target the app and the CLI use --------------------------------------------------------------------------


@dataclass(frozen=True)
class HFCausalTarget:
    """What `CausalTarget` gives for our model, for a loaded Hugging Face model (`HFSource.causal_model`)."""

    hf: HFMoEModel
    name: str
    window: int = 512  # text tokens per window (as `record_hf`)
    step: None = None  # one set of weights

    @property
    def model(self) -> torch.nn.Module:
        return self.hf.model

    @property
    def tokenizer(self):
        return self.hf.tokenizer

    @property
    def n_layers(self) -> int:
        return self.hf.n_layers

    @property
    def n_experts(self) -> int:
        return self.hf.n_experts

    @property
    def top_k(self) -> int:
        return self.hf.top_k

    @property
    def block_size(self) -> int:
        """Text tokens per window: `window`, less the prefix, within the model's positions."""
        P = len(prefix_tokens(self.hf.tokenizer))
        max_pos = getattr(self.hf.model.config, "max_position_embeddings", None) or self.window + P
        return max(1, min(self.window, max_pos - P))

    @property
    def modes(self) -> tuple[str, ...]:
        return self.hf.spec.causal_modes

    @property
    def what_if_reason(self) -> str | None:
        """Why what-if routing is unavailable, or None."""
        return None if self.hf.spec.routing_rule is not None else f"{self.hf.spec.name} cannot re-route: {NO_RULE}."

    @property
    def lens_reason(self) -> str | None:
        return None if self.hf.spec.lens else f"{self.hf.spec.name} has no expert logit lens: {NO_LENS}."

    def token_text(self, token_id: int) -> str:
        return self.hf.tokenizer.decode([int(token_id)])

    def tokens(self, docs: Sequence[Any], batch_tokens: int | None = None) -> EvalTokens:
        """Documents as tokens and padded windows (routing is per token); by default as many tokens per forward
        as keep the logits under LOGITS_BYTES."""
        if batch_tokens is None:
            batch_tokens = min(BATCH_TOKENS, LOGITS_BYTES // (4 * self.hf.model.config.vocab_size))
        tok = self.hf.tokenizer
        return tokenize_docs(
            tok, list(docs), self.block_size, batch_tokens, pad=True, encode=lambda t: tokenize(tok, t)
        )

    def runner(
        self, docs: Sequence[Any], progress: Callable[[int, int], None] | None = None, batch_tokens: int | None = None
    ) -> HFAblationRunner:
        return HFAblationRunner(self.hf, self.tokens(docs, batch_tokens), progress)

    def logit_lens(self, data: EvalTokens, layer: int, **kwargs) -> LensResult:
        return hf_logit_lens(self.hf, data, layer, token_text=self.token_text, **kwargs)

    def what_if(self, data: EvalTokens, overrides: dict[int, RoutingOverride]):
        return hf_what_if(self.hf, data, overrides)
