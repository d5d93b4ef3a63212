"""What-if routing: change the rule of one or more MoE layers' routers (`moe_core.moe.RoutingOverride`: an
added bias, a forced expert, another top-k, removed experts) and compare, token by token, the experts chosen,
their gate weights and the next-token loss with the model as trained.

`what_if(model, data, overrides)` returns one row per (token, MoE layer): a change at layer l also changes
the inputs of every later layer, so their rows can change too. Loss as in `analysis.causal.ablation`:
-log p(token | the tokens before it in its window), NaN for a window's first token.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager

import numpy as np
import pandas as pd
import torch

from analysis.causal.ablation import EvalTokens, routing_override, token_losses
from analysis.recording.pipeline import model_lock
from moe_core.moe import RoutingOverride


def parse_bias(text: str, n_experts: int) -> tuple[float, ...] | None:
    """'3:+0.1, 5:-0.2' (expert: added bias; others 0) -> (E,) tuple; None for an empty text.
    ValueError naming the bad entry."""
    bias = [0.0] * n_experts
    if not text.strip():
        return None
    for item in text.replace(";", ",").split(","):
        if not item.strip():
            continue
        expert, sep, value = item.partition(":")
        try:
            e, v = int(expert.strip().lstrip("Ee")), float(value)
        except ValueError:
            raise ValueError(f"bias entry {item.strip()!r}: write EXPERT:VALUE, e.g. 3:+0.1") from None
        if not sep or not 0 <= e < n_experts:
            raise ValueError(f"bias entry {item.strip()!r}: the expert must be in 0..{n_experts - 1}")
        if not np.isfinite(v):
            raise ValueError(f"bias entry {item.strip()!r}: the value must be a finite number")
        bias[e] += v
    return tuple(bias)


def capture_routing(
    model: torch.nn.Module,
    data: EvalTokens,
    routers: Sequence[tuple[torch.nn.Module, Callable]],
    logits: Callable[[torch.Tensor], torch.Tensor],
    device: torch.device,
    context: AbstractContextManager,
):
    """(loss (N,), experts [per layer (N, K_l)], weights [per layer (N, K_l)]) of `data`: one forward per batch
    (`logits(ids_BS)` -> (B, S, V)) inside `context` (the changed routing), the experts and weights read by a
    forward hook on each router (`extract(output) -> (experts_TK, weights_TK)`, best first)."""
    n = len(data.tokens)
    loss_N = np.full(n, np.nan)
    experts: list[list] = [[] for _ in routers]
    weights: list[list] = [[] for _ in routers]
    order = []
    seen: dict[int, tuple] = {}
    ids_all = torch.as_tensor(data.tokens["token_id"].to_numpy(np.int64, copy=True))
    with model_lock(model), torch.inference_mode(), context:
        # registered inside `context`: a hook that changes the router's output runs first, so this one sees it
        hooks = [
            router.register_forward_hook(lambda m, a, out, i=i, f=extract: seen.__setitem__(i, f(out)))
            for i, (router, extract) in enumerate(routers)
        ]
        was_training = model.training
        model.eval()
        try:
            for rows_BS in data.batches:
                ids_BS = ids_all[torch.as_tensor(rows_BS).clamp_min(0)].to(device)
                real_BS = rows_BS >= 0
                loss_N[rows_BS[real_BS]] = token_losses(logits(ids_BS), ids_BS).numpy()[real_BS]
                for i in range(len(routers)):
                    real = torch.as_tensor(real_BS.reshape(-1), device=seen[i][0].device)
                    experts[i].append(seen[i][0][real].cpu().numpy())
                    weights[i].append(seen[i][1][real].float().cpu().numpy())
                order.append(rows_BS[real_BS])
        finally:
            model.train(was_training)
            for h in hooks:
                h.remove()
    rows = np.concatenate(order)
    inverse = np.empty(n, dtype=np.int64)
    inverse[rows] = np.arange(n)
    return (
        loss_N,
        [np.concatenate(parts)[inverse] for parts in experts],
        [np.concatenate(parts)[inverse] for parts in weights],
    )


def _capture(model, data: EvalTokens, overrides: dict[int, RoutingOverride]):
    """`capture_routing` of our model under `overrides` (its routers return the experts first)."""
    routers = [(layer.router, lambda out: (out[0], out[1])) for layer in model.moe_layers]
    device = next(model.parameters()).device
    return capture_routing(
        model, data, routers, lambda ids_BS: model(ids_BS).logits, device, routing_override(model, overrides)
    )


def what_if(model, data: EvalTokens, overrides: dict[int, RoutingOverride]) -> pd.DataFrame:
    """One row per (token, MoE layer), token-major: token_row, doc_id, position, token_text, layer,
    experts_before / weights_before (as trained), experts_after / weights_after (with `overrides`: MoE layer
    index -> RoutingOverride), changed (the set of chosen experts differs), loss_before, loss_after,
    delta_loss (nats; NaN for a window's first token). Experts are listed best first, as chosen."""
    for layer in overrides:
        if not 0 <= layer < len(model.moe_layers):
            raise ValueError(f"layer must be in 0..{len(model.moe_layers) - 1}, got {layer}")
    return what_if_frame(data.tokens, _capture(model, data, {}), _capture(model, data, overrides))


def what_if_frame(tokens: pd.DataFrame, before: tuple, after: tuple) -> pd.DataFrame:
    """`what_if`'s table from two `capture_routing` results (as trained, changed)."""
    loss0, exp0, w0 = before
    loss1, exp1, w1 = after
    n, L = len(tokens), len(exp0)
    frame = pd.DataFrame(
        {
            "token_row": np.repeat(np.arange(n), L),
            "layer": np.tile(np.arange(L), n),
        }
    )
    for col in ("doc_id", "position", "token_text"):
        if col in tokens:
            frame[col] = np.repeat(tokens[col].to_numpy(), L)
    # token-major rows: row t * L + l holds layer l of token t
    frame["experts_before"] = [tuple(int(e) for e in exp0[l][t]) for t in range(n) for l in range(L)]
    frame["weights_before"] = [tuple(float(w) for w in w0[l][t]) for t in range(n) for l in range(L)]
    frame["experts_after"] = [tuple(int(e) for e in exp1[l][t]) for t in range(n) for l in range(L)]
    frame["weights_after"] = [tuple(float(w) for w in w1[l][t]) for t in range(n) for l in range(L)]
    frame["changed"] = [set(a) != set(b) for a, b in zip(frame["experts_before"], frame["experts_after"])]
    frame["loss_before"] = np.repeat(loss0, L)
    frame["loss_after"] = np.repeat(loss1, L)
    frame["delta_loss"] = frame["loss_after"] - frame["loss_before"]
    return frame


def what_if_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per layer: n_tokens, n_changed and share_changed (tokens whose set of experts changed ÷ all tokens),
    n_scored and mean delta_loss over scored tokens (nats/token; the same for every layer, repeated)."""
    g = table.groupby("layer")
    out = g.agg(n_tokens=("changed", "size"), n_changed=("changed", "sum")).reset_index()
    out["share_changed"] = out["n_changed"] / out["n_tokens"]
    scored = table.dropna(subset=["delta_loss"]).groupby("layer")["delta_loss"]
    out["n_scored"] = scored.size().reindex(out["layer"]).fillna(0).astype(int).to_numpy()
    out["mean_delta_loss"] = scored.mean().reindex(out["layer"]).to_numpy()
    return out


def display_table(table: pd.DataFrame) -> pd.DataFrame:
    """`what_if` rows for reading: 'E3 0.62 · E5 0.38' before and after, and the loss columns."""

    def fmt(experts, weights) -> str:
        return " · ".join(f"E{e} {w:.2f}" for e, w in zip(experts, weights))

    cols = [c for c in ("token_row", "doc_id", "position", "token_text", "layer") if c in table]
    out = table[cols].copy()
    out["before"] = [fmt(e, w) for e, w in zip(table["experts_before"], table["weights_before"])]
    out["after"] = [fmt(e, w) for e, w in zip(table["experts_after"], table["weights_after"])]
    out["changed"] = table["changed"]
    out[["loss_before", "loss_after", "delta_loss"]] = table[["loss_before", "loss_after", "delta_loss"]]
    return out
