"""Expert logit lens: which next tokens an expert's output pushes up or down.

For token t at MoE layer l, expert e's weighted output y = w_{t,e} · expert_e(x_t) (x_t the router input;
computed with `RoutedExperts.forward_loop` on that one (token, expert) pair, so the formula is the model's)
is projected through the final norm and the tied unembedding with the norm's scale frozen at its value
for this token:
    Δlogit_t = W_U (γ ⊙ y) · rsqrt(mean(x_final,t²) + eps)          (V,)
With the scale frozen the logits are linear in the residual stream, so Δlogit is the expert's direct share
of the token's logits (later layers' reactions to y are not included: that is what ablation measures).
Each Δlogit vector is centred over the vocabulary (adding a constant to every logit changes no probability).
"promotes" = the top-n token ids by Δlogit, "suppresses" = the bottom-n. Per expert, the mean Δlogit over the
tokens that chose it at the layer (shared expert: every token, expert id -1).
Shape legend: T tokens, D model dim, V vocabulary, K top-k, E experts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from analysis.causal.ablation import EvalTokens
from analysis.recording.pipeline import model_lock

SHARED = -1  # expert id of the shared expert in the tables


@dataclass(frozen=True)
class LensResult:
    per_token: pd.DataFrame  # token_row, layer, rank, expert, weight, direction, n, token_id, token_text, logit_change
    per_expert: pd.DataFrame  # layer, expert, n_tokens, direction, n, token_id, token_text, logit_change (mean)


def _top_rows(change_NV: torch.Tensor, top_n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per row: (direction, n, token_id, value) of the top-n and bottom-n entries, flattened row-major."""
    up = change_NV.topk(top_n, dim=-1)
    down = change_NV.topk(top_n, dim=-1, largest=False)
    ids = torch.cat([up.indices, down.indices], dim=-1).numpy()  # (N, 2n)
    vals = torch.cat([up.values, down.values], dim=-1).numpy()
    direction = np.array(["promotes"] * top_n + ["suppresses"] * top_n)
    n = np.concatenate([np.arange(1, top_n + 1)] * 2)
    N = len(ids)
    return np.tile(direction, N), np.tile(n, N), ids.reshape(-1), vals.reshape(-1)


def lens_change(y_TD: torch.Tensor, final_TD: torch.Tensor, gamma_D: torch.Tensor, eps: float, W_VD: torch.Tensor):
    """(T, V) float32 on the CPU: Δlogit of outputs `y_TD` through an RMSNorm with scale `gamma_D` frozen at the
    final residual `final_TD` of each token, and the unembedding `W_VD`, centred over the vocabulary (the one
    copy of the formula in the module docstring)."""
    dev = W_VD.device  # a model spread over devices (device_map) may keep its LM head apart from the layer
    final_TD = final_TD.to(dev).float()
    scale_T = torch.rsqrt(final_TD.pow(2).mean(-1) + eps)
    change_TV = ((y_TD.to(dev).float() * gamma_D.to(dev).float()) * scale_T[:, None]) @ W_VD.float().T
    return (change_TV - change_TV.mean(-1, keepdim=True)).cpu()


class LensTables:
    """Accumulates the Δlogit vectors of one MoE layer's experts, batch after batch, into `LensResult`'s tables:
    the sum and count per expert (row E: the shared expert) and the listed token rows one by one."""

    def __init__(self, n_tokens: int, n_experts: int, vocab: int, layer: int, top_n: int, rows: Sequence[int] | None):
        self.E, self.layer, self.top_n = n_experts, layer, min(top_n, vocab)
        self.want = np.zeros(n_tokens, dtype=bool)
        if rows is not None:
            self.want[np.asarray(rows, dtype=np.int64)] = True
        self.sum_EV = torch.zeros(n_experts + 1, vocab, dtype=torch.float64)
        self.count_E = torch.zeros(n_experts + 1, dtype=torch.long)
        self.token_parts: list[pd.DataFrame] = []

    def add(self, token_rows: np.ndarray, rank: int, expert_T: torch.Tensor, weight_T, change_TV: torch.Tensor):
        """One rank's outputs of a batch: token rows (T,), experts (T,) (SHARED for the shared expert), gate
        weights (T,) (None for the shared expert) and their centred Δlogits (T, V)."""
        expert_T = expert_T.cpu().where(expert_T.cpu() != SHARED, torch.tensor(self.E))
        self.sum_EV.index_add_(0, expert_T, change_TV.double())
        self.count_E += torch.bincount(expert_T, minlength=self.E + 1)
        pick = self.want[token_rows]
        if pick.any():
            sel = torch.as_tensor(pick)
            weight = None if weight_T is None else np.asarray(weight_T, dtype=float)[pick]
            self.token_parts.append(
                _token_table(change_TV[sel], token_rows[pick], self.layer, rank, expert_T[sel], weight, self.top_n)
            )

    def result(self, token_text: Callable[[int], str]) -> LensResult:
        per_token = pd.concat(self.token_parts, ignore_index=True) if self.token_parts else _empty_tokens()
        per_token["token_text"] = [token_text(int(t)) for t in per_token["token_id"]]
        per_token = per_token.sort_values(["token_row", "rank", "direction", "n"], key=_shared_last)
        per_expert = _expert_table(self.sum_EV, self.count_E, self.layer, self.top_n, token_text)
        return LensResult(per_token.reset_index(drop=True), per_expert)


def expert_logit_lens(
    model,
    data: EvalTokens,
    layer: int,
    *,
    token_text: Callable[[int], str],
    rows: Sequence[int] | None = None,
    top_n: int = 10,
) -> LensResult:
    """The logit lens of every expert of MoE layer `layer` on `data` (see the module docstring).

    rows: token rows listed one by one in `per_token` (default: none; keep it to a few hundred);
    token_text(id) names a vocabulary entry."""
    moe_layers = model.moe_layers
    if not 0 <= layer < len(moe_layers):
        raise ValueError(f"layer must be in 0..{len(moe_layers) - 1}, got {layer}")
    moe = moe_layers[layer]
    E = moe.cfg.n_experts
    tables = LensTables(len(data.tokens), E, model.config.vocab_size, layer, top_n, rows)
    ids_all = torch.as_tensor(data.tokens["token_id"].to_numpy(np.int64, copy=True))
    device = next(model.parameters()).device
    seen: dict[str, torch.Tensor] = {}
    hooks = [
        moe.router.register_forward_hook(lambda m, args, out: seen.update(x=args[0], topk=out[0], w=out[1])),
        model.norm.register_forward_pre_hook(lambda m, args: seen.update(final=args[0])),
    ]
    with model_lock(model), torch.inference_mode():
        was_training = model.training
        model.eval()
        try:
            for rows_BS in data.batches:
                real = rows_BS.reshape(-1) >= 0
                ids_BS = ids_all[torch.as_tensor(rows_BS).clamp_min(0)].to(device)
                model(ids_BS)
                real_t = torch.as_tensor(real, device=device)
                x_TD, topk_TK, w_TK = seen["x"][real_t], seen["topk"][real_t], seen["w"][real_t]
                final_TD = seen["final"].reshape(-1, seen["final"].shape[-1])[real_t]
                token_rows = rows_BS.reshape(-1)[real]
                outputs = [(k, topk_TK[:, k], w_TK[:, k].float().cpu().numpy(),
                            moe.experts.forward_loop(x_TD, topk_TK[:, k : k + 1], w_TK[:, k : k + 1]))
                           for k in range(topk_TK.shape[1])]  # fmt: skip
                if moe.shared is not None:
                    outputs.append((SHARED, torch.full_like(topk_TK[:, 0], SHARED), None, moe.shared(x_TD)))
                for rank, expert_T, weight_T, y_TD in outputs:
                    change_TV = lens_change(y_TD, final_TD, model.norm.weight, model.norm.eps, model.embed.weight)
                    tables.add(token_rows, rank, expert_T, weight_T, change_TV)
        finally:
            for h in hooks:
                h.remove()
            model.train(was_training)
    return tables.result(token_text)


def _shared_last(col: pd.Series) -> pd.Series:
    return col.where(col != SHARED, 10**9) if col.name == "rank" else col


def _token_table(change_NV, token_rows, layer, rank, expert_N, weight_N, top_n) -> pd.DataFrame:
    direction, n, ids, vals = _top_rows(change_NV, top_n)
    reps = 2 * top_n
    if rank == SHARED:
        expert, weight = np.full(len(token_rows), SHARED), np.full(len(token_rows), np.nan)
    else:
        expert, weight = expert_N.numpy(), weight_N
    return pd.DataFrame(
        {
            "token_row": np.repeat(token_rows, reps),
            "layer": layer,
            "rank": rank,
            "expert": np.repeat(expert, reps),
            "weight": np.repeat(weight, reps),
            "direction": direction,
            "n": n,
            "token_id": ids,
            "logit_change": vals,
        }
    )


def _empty_tokens() -> pd.DataFrame:
    cols = ["token_row", "layer", "rank", "expert", "weight", "direction", "n", "token_id", "logit_change"]
    return pd.DataFrame({c: pd.Series(dtype="int64") for c in cols}).astype(
        {"weight": float, "logit_change": float, "direction": object}
    )


def _expert_table(sum_EV, count_E, layer, top_n, token_text) -> pd.DataFrame:
    E = sum_EV.shape[0] - 1
    used = torch.nonzero(count_E > 0).flatten()
    if len(used) == 0:
        return pd.DataFrame(columns=["layer", "expert", "n_tokens", "direction", "n", "token_id", "token_text",
                                     "logit_change"])  # fmt: skip
    mean_UV = sum_EV[used] / count_E[used, None]
    direction, n, ids, vals = _top_rows(mean_UV, top_n)
    expert = np.where(used.numpy() == E, SHARED, used.numpy())
    reps = 2 * top_n
    return pd.DataFrame(
        {
            "layer": layer,
            "expert": np.repeat(expert, reps),
            "n_tokens": np.repeat(count_E[used].numpy(), reps),
            "direction": direction,
            "n": n,
            "token_id": ids,
            "token_text": [token_text(int(t)) for t in ids],
            "logit_change": vals,
        }
    )
