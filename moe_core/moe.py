"""A DeepSeek-V3-style MoE FFN layer, in small parts: router, experts, dispatch, balancing.

Shape legend: B batch, S sequence, T tokens (= B*S), D model dim, H expert hidden dim,
E routed experts, K experts per token, N = T*K routed (token, expert) pairs.

What the analysis layer needs is visible to forward hooks, so `forward` has no flags:
- `MoELayer.router` returns a `RouterOutput` (chosen experts after the bias, gate weights,
  raw and biased scores, logits); its input is the router's input hidden state;
- `MoELayer.experts` returns the weighted routed output, `MoELayer.shared` the shared one;
- after each forward the layer keeps `aux_losses` (name -> scalar tensor) and `dropped`.

`Router.override` (default None) changes the choice for causal analysis and what-if routing
(`RoutingOverride`: remove or zero experts, add a bias, force an expert, change top-k); training never sets it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from moe_core.config import MoEConfig
from moe_core.routing_stats import expert_counts


class RouterOutput(NamedTuple):
    topk_idx_TK: torch.Tensor  # long: experts chosen on biased scores
    weights_TK: torch.Tensor  # gate weights, from the unbiased scores
    scores_TE: torch.Tensor  # softmax or sigmoid of the logits (fp32)
    biased_TE: torch.Tensor  # scores + bias: used only to choose experts
    logits_TE: torch.Tensor  # raw router logits (fp32)


@dataclass(frozen=True)
class RoutingOverride:
    """A changed routing rule for causal analysis and what-if routing (`Router.override`; None = as trained).

    removed: experts no token may choose: each token re-chooses from the others on the same biased scores
        and the gate weights are renormalised as the router always does (expert ablation).
    zeroed: experts still chosen, with gate weight 0 after the usual renormalisation ("zero its output").
    bias: (E,) added to the scores + balancing bias when choosing (gate weights still come from the scores).
    forced: an expert every token chooses (ranked first); its gate weight is its score, as for any choice.
    top_k: experts per token instead of the config's.
    """

    removed: tuple[int, ...] = ()
    zeroed: tuple[int, ...] = ()
    bias: tuple[float, ...] | None = None
    forced: int | None = None
    top_k: int | None = None

    def validate(self, n_experts: int, top_k: int) -> None:
        named = [*self.removed, *self.zeroed] + ([] if self.forced is None else [self.forced])
        if any(not 0 <= int(e) < n_experts for e in named):
            raise ValueError(f"expert ids must be in 0..{n_experts - 1}, got {sorted(set(named))}")
        if self.forced is not None and self.forced in self.removed:
            raise ValueError(f"expert {self.forced} cannot be both forced and removed")
        if self.bias is not None and len(self.bias) != n_experts:
            raise ValueError(f"bias needs {n_experts} values, got {len(self.bias)}")
        k = top_k if self.top_k is None else self.top_k
        if not 1 <= k <= n_experts - len(set(self.removed)):
            raise ValueError(f"top-k must be in 1..{n_experts - len(set(self.removed))} (experts left), got {k}")


class Router(nn.Module):
    """Linear router; the balancing bias is added only when choosing experts (DeepSeek-V3)."""

    def __init__(self, dim: int, cfg: MoEConfig):
        super().__init__()
        self.cfg = cfg
        self.gate = nn.Linear(dim, cfg.n_experts, bias=False)
        # persistent buffer: saved with the weights, updated outside autograd
        self.register_buffer("expert_bias", torch.zeros(cfg.n_experts))
        self.override: RoutingOverride | None = None  # analysis only (see RoutingOverride)

    def forward(self, x_TD: torch.Tensor) -> RouterOutput:
        cfg = self.cfg
        logits_TE = self.gate(x_TD).float()
        if cfg.score_func == "softmax":
            scores_TE = logits_TE.softmax(dim=-1)
        else:
            scores_TE = logits_TE.sigmoid()
        biased_TE = scores_TE + self.expert_bias
        ov = self.override
        if ov is None:
            topk_idx_TK = choose_experts(biased_TE, cfg.top_k, cfg.n_groups, cfg.topk_groups)
        else:
            biased_TE, topk_idx_TK = self._choose_overridden(biased_TE, ov)
        weights_TK = scores_TE.gather(-1, topk_idx_TK)
        if cfg.renormalize:
            weights_TK = weights_TK / (weights_TK.sum(dim=-1, keepdim=True) + 1e-20)
        weights_TK = weights_TK * cfg.route_scale
        if ov is not None and ov.zeroed:
            zeroed_TK = torch.isin(topk_idx_TK, torch.tensor(ov.zeroed, device=topk_idx_TK.device))
            weights_TK = weights_TK.masked_fill(zeroed_TK, 0.0)
        return RouterOutput(topk_idx_TK, weights_TK, scores_TE, biased_TE, logits_TE)

    def _choose_overridden(self, biased_TE: torch.Tensor, ov: RoutingOverride) -> tuple[torch.Tensor, torch.Tensor]:
        """(biased_TE with the override's bias, topk_idx_TK): the same `choose_experts` on scores where removed
        experts are -inf and the forced one +inf."""
        cfg = self.cfg
        ov.validate(cfg.n_experts, cfg.top_k)
        if ov.bias is not None:
            biased_TE = biased_TE + torch.tensor(ov.bias, dtype=biased_TE.dtype, device=biased_TE.device)
        choice_TE = biased_TE
        if ov.removed:
            choice_TE = choice_TE.index_fill(-1, torch.tensor(ov.removed, device=choice_TE.device), float("-inf"))
        if ov.forced is not None:
            choice_TE = choice_TE.index_fill(-1, torch.tensor([ov.forced], device=choice_TE.device), float("inf"))
        top_k = cfg.top_k if ov.top_k is None else ov.top_k
        return biased_TE, choose_experts(choice_TE, top_k, cfg.n_groups, cfg.topk_groups)


def choose_experts(biased_TE: torch.Tensor, top_k: int, n_groups: int = 1, topk_groups: int = 1) -> torch.Tensor:
    """(T, K) experts chosen on `biased_TE` (scores + bias), DeepSeek-V3 style: with n_groups > 1 only the
    `topk_groups` groups with the best top-2 score sum compete. Also replays the choice on unbiased scores
    (bias flips, in both recorders). Each token's experts come best first."""
    if n_groups > 1:
        biased_TE = mask_groups(biased_TE, n_groups, topk_groups)
    return biased_TE.topk(top_k, dim=-1).indices


def mask_groups(biased_TE: torch.Tensor, n_groups: int, topk_groups: int) -> torch.Tensor:
    """Group-limited routing: keep the `topk_groups` groups with the best top-2 score sum (others -inf)."""
    T, E = biased_TE.shape
    grouped_TGe = biased_TE.view(T, n_groups, E // n_groups)
    top = min(2, E // n_groups)
    group_score_TG = grouped_TGe.topk(top, dim=-1).values.sum(dim=-1)
    keep_TG = torch.zeros_like(group_score_TG, dtype=torch.bool)
    keep_TG.scatter_(1, group_score_TG.topk(topk_groups, dim=-1).indices, True)
    return grouped_TGe.masked_fill(~keep_TG.unsqueeze(-1), float("-inf")).view(T, E)


class SwiGLU(nn.Module):
    """A dense SwiGLU FFN: down(silu(gate(x)) * up(x)). Used for shared experts and dense layers."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w_gate = nn.Linear(dim, hidden, bias=False)
        self.w_up = nn.Linear(dim, hidden, bias=False)
        self.w_down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_down(F.silu(self.w_gate(x)) * self.w_up(x))


def grouped_mm_available() -> bool:
    return hasattr(F, "grouped_mm") or hasattr(torch, "_grouped_mm")


def _grouped_mm(x_ND: torch.Tensor, w_EDH: torch.Tensor, offs_E: torch.Tensor, kernel: bool | None = None):
    """Rows x[offs[e-1]:offs[e]] @ w[e] for every expert e.

    On CUDA one grouped-GEMM kernel (no host sync). On the CPU torch's grouped kernel is slower than one
    BLAS call per expert on the contiguous slices (measured in bench/moe_layer.py), so that is used there.
    """
    if x_ND.is_cuda if kernel is None else kernel:
        fn = getattr(F, "grouped_mm", None) or torch._grouped_mm  # public from torch 2.10
        return fn(x_ND, w_EDH, offs=offs_E)
    sizes = torch.diff(offs_E, prepend=offs_E.new_zeros(1)).tolist()
    return torch.cat([x_nD @ w_DH for x_nD, w_DH in zip(x_ND.split(sizes), w_EDH)])


class RoutedExperts(nn.Module):
    """E SwiGLU experts with stacked weights; two dispatch paths with identical results.

    `forward(x_TD, topk_idx_TK, weights_TK)` returns the weighted sum of each token's experts, (T, D).
    """

    def __init__(self, dim: int, cfg: MoEConfig):
        super().__init__()
        E, H = cfg.n_experts, cfg.expert_hidden
        self.n_experts = E
        self.dispatch = cfg.dispatch
        self.w_gate = nn.Parameter(torch.empty(E, dim, H))  # (E, D, H)
        self.w_up = nn.Parameter(torch.empty(E, dim, H))  # (E, D, H)
        self.w_down = nn.Parameter(torch.empty(E, H, dim))  # (E, H, D)
        for w in (self.w_gate, self.w_up, self.w_down):
            nn.init.normal_(w, std=0.02)

    def forward(self, x_TD: torch.Tensor, topk_idx_TK: torch.Tensor, weights_TK: torch.Tensor) -> torch.Tensor:
        if self.dispatch == "grouped" and grouped_mm_available():
            return self.forward_grouped(x_TD, topk_idx_TK, weights_TK)
        return self.forward_loop(x_TD, topk_idx_TK, weights_TK)

    def forward_loop(self, x_TD, topk_idx_TK, weights_TK) -> torch.Tensor:
        """Reference: a plain loop over experts (host syncs, easy to read)."""
        out_TD = torch.zeros_like(x_TD)
        for e in range(self.n_experts):
            tok, slot = torch.where(topk_idx_TK == e)
            if tok.numel() == 0:
                continue
            x_eD = x_TD[tok]
            h = F.silu(x_eD @ self.w_gate[e].to(x_TD.dtype)) * (x_eD @ self.w_up[e].to(x_TD.dtype))
            y_eD = (h @ self.w_down[e].to(x_TD.dtype)) * weights_TK[tok, slot, None].to(x_TD.dtype)
            out_TD = out_TD.index_add(0, tok, y_eD)
        return out_TD

    def forward_grouped(self, x_TD, topk_idx_TK, weights_TK) -> torch.Tensor:
        """Fast: sort (token, expert) pairs by expert, three grouped GEMMs, un-sort and sum over K.

        No host syncs (offsets stay on device) and no atomics in the combine (a permutation, then a sum).
        """
        T, K = topk_idx_TK.shape
        dtype = x_TD.dtype
        if torch.is_autocast_enabled(x_TD.device.type):  # autocast does not cover grouped_mm: cast as it would
            dtype = torch.get_autocast_dtype(x_TD.device.type)  # (else the GEMMs run in fp32 under bf16 autocast)
            x_TD = x_TD.to(dtype)
        flat_e_N = topk_idx_TK.reshape(-1)  # (N,)
        order_N = torch.argsort(flat_e_N, stable=True)  # pairs sorted by expert, token order kept
        counts_E = torch.zeros(self.n_experts, dtype=torch.int32, device=x_TD.device)
        counts_E.scatter_add_(0, flat_e_N.to(torch.int64), torch.ones_like(flat_e_N, dtype=torch.int32))
        offs_E = torch.cumsum(counts_E, dim=0, dtype=torch.int32)  # end offset of each expert's rows
        x_ND = x_TD[order_N // K]  # (N, D) token rows in expert order
        gate_NH = _grouped_mm(x_ND, self.w_gate.to(dtype), offs_E)
        up_NH = _grouped_mm(x_ND, self.w_up.to(dtype), offs_E)
        y_ND = _grouped_mm(F.silu(gate_NH) * up_NH, self.w_down.to(dtype), offs_E)
        y_ND = y_ND * weights_TK.reshape(-1)[order_N, None].to(dtype)
        inverse_N = torch.argsort(order_N)  # undo the sort: row n of the result is pair n
        return y_ND[inverse_N].view(T, K, -1).sum(dim=1)  # (T, D)


def capacity_keep_mask(topk_idx_TK: torch.Tensor, n_experts: int, capacity: int) -> torch.Tensor:
    """(T, K) bool: False where the pair exceeds its expert's capacity (earlier tokens win)."""
    flat_e_N = topk_idx_TK.reshape(-1)
    order_N = torch.argsort(flat_e_N, stable=True)
    counts_E = torch.zeros(n_experts, dtype=torch.long, device=flat_e_N.device)
    counts_E.scatter_add_(0, flat_e_N, torch.ones_like(flat_e_N))
    starts_E = torch.cumsum(counts_E, 0) - counts_E
    sorted_e_N = flat_e_N[order_N]
    rank_sorted_N = torch.arange(flat_e_N.numel(), device=flat_e_N.device) - starts_E[sorted_e_N]
    keep_N = torch.empty_like(flat_e_N, dtype=torch.bool)
    keep_N[order_N] = rank_sorted_N < capacity
    return keep_N.view_as(topk_idx_TK)


# --- balancing losses (each returns a scalar; multiply by its alpha outside) ---------------------


def _normalised_probs(scores_TE: torch.Tensor) -> torch.Tensor:
    return scores_TE / scores_TE.sum(dim=-1, keepdim=True)


def switch_loss(scores_TE: torch.Tensor, topk_idx_TK: torch.Tensor) -> torch.Tensor:
    """Switch/GShard: E * sum_i f_i * P_i with f_i = count_i/(T*K), P_i = mean normalised prob."""
    E = scores_TE.shape[-1]
    f_E = expert_counts(topk_idx_TK, E) / topk_idx_TK.numel()
    P_E = _normalised_probs(scores_TE).mean(dim=0)
    return E * (f_E * P_E).sum()


def sequence_balance_loss(scores_BSE: torch.Tensor, topk_idx_BSK: torch.Tensor) -> torch.Tensor:
    """DeepSeek-V3 sequence-wise loss, mean over sequences of sum_i f_i P_i where
    f_i = E/(K*S) * sum_t 1[i in topK_t] and P_i = (1/S) sum_t s'_{i,t} (s' normalised over experts)."""
    B, S, E = scores_BSE.shape
    K = topk_idx_BSK.shape[-1]
    hits_BSE = torch.zeros_like(scores_BSE).scatter_(-1, topk_idx_BSK, 1.0)
    f_BE = hits_BSE.sum(dim=1) * E / (K * S)
    P_BE = _normalised_probs(scores_BSE).mean(dim=1)
    return (f_BE * P_BE).sum(dim=-1).mean()


def complementary_loss(logits_BSE: torch.Tensor) -> torch.Tensor:
    """The seed tutorial's loss: mean off-diagonal entry of U U^T, the similarity of per-sequence usage
    vectors U_b = normalise(sum_t softmax(logits_bt)). Zero for a single sequence."""
    B = logits_BSE.shape[0]
    if B < 2:
        return logits_BSE.new_zeros(())
    usage_BE = logits_BSE.softmax(dim=-1).sum(dim=1)
    usage_BE = usage_BE / usage_BE.sum(dim=-1, keepdim=True)
    sim_BB = usage_BE @ usage_BE.T
    off_diag = ~torch.eye(B, dtype=torch.bool, device=sim_BB.device)
    return sim_BB[off_diag].mean()


def z_loss(logits_TE: torch.Tensor) -> torch.Tensor:
    """ST-MoE router z-loss: mean over tokens of logsumexp(logits)^2."""
    return torch.logsumexp(logits_TE, dim=-1).pow(2).mean()


def bias_update(bias_E: torch.Tensor, load_E: torch.Tensor, rate: float, zero_center: bool) -> torch.Tensor:
    """Aux-loss-free rule: b_i <- b_i + u * sign(mean_load - load_i) (optionally centred to mean 0)."""
    delta_E = rate * torch.sign(load_E.mean() - load_E)
    if zero_center:
        delta_E = delta_E - delta_E.mean()
    return bias_E + delta_E


class MoELayer(nn.Module):
    """Routed experts + shared expert(s), with the balancing strategies of `cfg.balance`."""

    def __init__(self, dim: int, cfg: MoEConfig):
        super().__init__()
        self.cfg = cfg
        self.router = Router(dim, cfg)
        self.experts = RoutedExperts(dim, cfg)
        self.shared = SwiGLU(dim, cfg.shared_hidden * cfg.n_shared) if cfg.n_shared > 0 else None
        self.dropout = nn.Dropout(cfg.dropout)
        # loads summed over every forward since the last optimizer step (for the bias update)
        self.register_buffer("load_accum", torch.zeros(cfg.n_experts), persistent=False)
        self.aux_losses: dict[str, torch.Tensor] = {}
        self.dropped = torch.zeros((), dtype=torch.long)

    def forward(self, x_BSD: torch.Tensor) -> torch.Tensor:
        B, S, D = x_BSD.shape
        cfg = self.cfg
        x_TD = x_BSD.reshape(B * S, D)
        r = self.router(x_TD)
        weights_TK = r.weights_TK
        if cfg.capacity_factor > 0:
            capacity = math.ceil(cfg.capacity_factor * B * S * cfg.top_k / cfg.n_experts)
            keep_TK = capacity_keep_mask(r.topk_idx_TK, cfg.n_experts, capacity)
            weights_TK = weights_TK * keep_TK
            self.dropped = (~keep_TK).sum()
        out_TD = self.experts(x_TD, r.topk_idx_TK, weights_TK)
        if self.shared is not None:
            out_TD = out_TD + self.shared(x_TD)
        if self.training:
            with torch.no_grad():
                self.load_accum += expert_counts(r.topk_idx_TK, cfg.n_experts)
        self.aux_losses = self._aux_losses(r, B, S)
        return self.dropout(out_TD).view(B, S, D)

    def _aux_losses(self, r: RouterOutput, B: int, S: int) -> dict[str, torch.Tensor]:
        bal = self.cfg.balance
        losses = {}
        if bal.switch_alpha > 0:
            losses["switch"] = bal.switch_alpha * switch_loss(r.scores_TE, r.topk_idx_TK)
        if bal.seq_alpha > 0:
            losses["seq"] = bal.seq_alpha * sequence_balance_loss(
                r.scores_TE.view(B, S, -1), r.topk_idx_TK.view(B, S, -1)
            )
        if bal.comp_alpha > 0:
            losses["comp"] = bal.comp_alpha * complementary_loss(r.logits_TE.view(B, S, -1))
        if bal.z_alpha > 0:
            losses["zloss"] = bal.z_alpha * z_loss(r.logits_TE)
        return losses

    @torch.no_grad()
    def pop_load(self) -> torch.Tensor:
        """(E,) loads accumulated since the last call, and reset the accumulator."""
        load_E = self.load_accum.clone()
        self.load_accum.zero_()
        return load_E

    @torch.no_grad()
    def update_bias(self, load_E: torch.Tensor) -> None:
        """Apply the sign rule once, from the global load of one optimizer step."""
        bal = self.cfg.balance
        if bal.bias_rate > 0:
            bias = self.router.expert_bias
            bias.copy_(bias_update(bias, load_E.to(bias.device), bal.bias_rate, bal.bias_zero_center))
