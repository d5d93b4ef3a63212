"""The toy router of the Learn pages: a linear router on 2-D inputs, small enough to compute by hand.

Shape legend: T tokens, E experts, K experts per token, S steps, B tokens per batch, G grid points.

The routing follows the real model (DeepSeek-V3, `moe_core.moe.Router`), in numpy:
    logits = W x                      (E,)   W is (E, 2), no intercept, like the real router
    scores = sigmoid(logits) or softmax(logits)
    chosen = top-k of (scores + bias)  the bias only chooses experts
    gates  = scores[chosen]            from the unbiased scores; renormalised to sum 1 for sigmoid
    y      = sum_k gates_k * expert_{chosen_k}(x) + shared(x)
Toy experts are 2x2 linear maps so every number can be checked by hand.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

import numpy as np
import torch

from moe_core import routing_stats

SCORE_FUNCS = ("sigmoid", "softmax")


# --- the router ------------------------------------------------------------------------------------


def default_weights(n_experts: int = 4, scale: float = 2.0) -> np.ndarray:
    """(E, 2) router weights: one unit direction per expert, evenly spread around the circle, times `scale`."""
    angles = 2 * np.pi * np.arange(n_experts) / n_experts
    return scale * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def scores_from_logits(logits_TE: np.ndarray, score_func: str) -> np.ndarray:
    """sigmoid(logits) element-wise, or softmax over the experts (last axis)."""
    if score_func == "sigmoid":
        return 1.0 / (1.0 + np.exp(-logits_TE))
    if score_func == "softmax":
        z = np.exp(logits_TE - logits_TE.max(axis=-1, keepdims=True))
        return z / z.sum(axis=-1, keepdims=True)
    raise ValueError(f"score_func must be one of {SCORE_FUNCS}, got {score_func!r}")


def route(
    x_T2: np.ndarray, W_E2: np.ndarray, bias_E: np.ndarray, top_k: int, score_func: str = "sigmoid"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Route T points: returns (topk_TK chosen experts, best first; gates_TK; scores_TE).

    Experts are chosen on scores + bias (ties go to the lower expert id); gates come from the
    unbiased scores and are renormalised to sum 1 when score_func is sigmoid (DeepSeek-V3).
    """
    x_T2 = np.atleast_2d(np.asarray(x_T2, dtype=float))
    scores_TE = scores_from_logits(x_T2 @ np.asarray(W_E2, dtype=float).T, score_func)
    biased_TE = scores_TE + np.asarray(bias_E, dtype=float)
    topk_TK = np.argsort(-biased_TE, axis=-1, kind="stable")[:, :top_k]
    gates_TK = np.take_along_axis(scores_TE, topk_TK, axis=-1)
    if score_func == "sigmoid":
        gates_TK = gates_TK / gates_TK.sum(axis=-1, keepdims=True)
    return topk_TK, gates_TK, scores_TE


def pair_list(n_experts: int) -> list[tuple[int, int]]:
    """All unordered expert pairs (i < j) in a fixed order; a top-2 region id indexes this list."""
    return list(combinations(range(n_experts), 2))


@dataclass
class Regions:
    """Decision regions of the router on a square grid (rows = y, columns = x)."""

    xs: np.ndarray  # (n,) grid x coordinates
    ys: np.ndarray  # (n,) grid y coordinates
    top1: np.ndarray  # (n, n) int: the expert ranked first at each grid point
    pair: np.ndarray  # (n, n) int: index into `pairs` of the unordered top-2 set
    pairs: list[tuple[int, int]] = field(default_factory=list)


def decision_regions(
    W_E2: np.ndarray, bias_E: np.ndarray, score_func: str = "sigmoid", lim: float = 3.0, n: int = 101
) -> Regions:
    """Top-1 and top-2 regions of the router on an n x n grid over [-lim, lim]^2."""
    xs = np.linspace(-lim, lim, n)
    ys = np.linspace(-lim, lim, n)
    gx, gy = np.meshgrid(xs, ys)  # (n, n): row i is y = ys[i]
    points_G2 = np.stack([gx.ravel(), gy.ravel()], axis=1)
    E = len(W_E2)
    topk_GK, _, _ = route(points_G2, W_E2, bias_E, min(2, E), score_func)
    top1 = topk_GK[:, 0].reshape(n, n)
    pairs = pair_list(E)
    pair = np.zeros(n * n, dtype=int)
    if E >= 2:
        pair_id = {p: i for i, p in enumerate(pairs)}
        lo, hi = np.minimum(topk_GK[:, 0], topk_GK[:, 1]), np.maximum(topk_GK[:, 0], topk_GK[:, 1])
        pair = np.array([pair_id[(int(a), int(b))] for a, b in zip(lo, hi)])
    return Regions(xs=xs, ys=ys, top1=top1, pair=pair.reshape(n, n), pairs=pairs)


# --- one token, step by step -----------------------------------------------------------------------


def default_experts(n_experts: int = 4) -> np.ndarray:
    """(E, 2, 2) toy experts: expert e rotates its input by (e+1)*45 degrees (a different map each)."""
    mats = []
    for e in range(n_experts):
        a = np.pi / 4 * (e + 1)
        mats.append([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return np.array(mats)


DEFAULT_SHARED = 0.5 * np.eye(2)  # the toy shared expert: halves its input (applied to every token)


@dataclass
class GateSteps:
    """Every intermediate number of one token's routing (E experts, K chosen)."""

    x: np.ndarray  # (2,) the input point
    logits: np.ndarray  # (E,) W x
    scores: np.ndarray  # (E,) sigmoid or softmax of the logits
    biased: np.ndarray  # (E,) scores + bias: used only to choose
    chosen: np.ndarray  # (K,) chosen experts, best first
    raw_gates: np.ndarray  # (K,) unbiased scores of the chosen experts
    gates: np.ndarray  # (K,) gate weights (raw_gates renormalised for sigmoid)
    expert_out: np.ndarray  # (K, 2) output of each chosen expert
    routed: np.ndarray  # (2,) sum_k gates_k * expert_out_k
    shared: np.ndarray  # (2,) shared-expert output
    output: np.ndarray  # (2,) routed + shared
    bias_flip: bool  # True when the bias changed the chosen set


def explain_token(
    x: np.ndarray,
    W_E2: np.ndarray,
    bias_E: np.ndarray,
    top_k: int = 2,
    score_func: str = "sigmoid",
    experts_E22: np.ndarray | None = None,
    shared_22: np.ndarray | None = DEFAULT_SHARED,
) -> GateSteps:
    """Route one point and keep every step; `shared_22=None` means no shared expert."""
    x = np.asarray(x, dtype=float).reshape(2)
    W_E2 = np.asarray(W_E2, dtype=float)
    bias_E = np.asarray(bias_E, dtype=float)
    experts = default_experts(len(W_E2)) if experts_E22 is None else np.asarray(experts_E22, dtype=float)
    logits = W_E2 @ x
    scores = scores_from_logits(logits[None], score_func)[0]
    biased = scores + bias_E
    chosen = np.argsort(-biased, kind="stable")[:top_k]
    raw = scores[chosen]
    gates = raw / raw.sum() if score_func == "sigmoid" else raw
    expert_out = np.stack([experts[e] @ x for e in chosen])  # (K, 2)
    routed = (gates[:, None] * expert_out).sum(axis=0)
    shared = np.zeros(2) if shared_22 is None else np.asarray(shared_22, dtype=float) @ x
    unbiased_choice = set(np.argsort(-scores, kind="stable")[:top_k].tolist())
    return GateSteps(
        x=x,
        logits=logits,
        scores=scores,
        biased=biased,
        chosen=chosen,
        raw_gates=raw,
        gates=gates,
        expert_out=expert_out,
        routed=routed,
        shared=shared,
        output=routed + shared,
        bias_flip=unbiased_choice != set(chosen.tolist()),
    )


# --- a skewed token stream and the balancing metrics ---------------------------------------------

DEFAULT_CENTRE = (0.5, 0.2)  # the stream's mean: off-centre, so expert 0 (pointing at +x) is favoured
DEFAULT_SPREAD = 0.1  # std of the stream around its mean


def token_batches(
    seed: int, n_steps: int, batch_size: int = 512, centre=DEFAULT_CENTRE, spread: float = DEFAULT_SPREAD
) -> np.ndarray:
    """(S, B, 2) seeded stream of 2-D tokens from a Gaussian off the origin (a skewed input distribution)."""
    rng = np.random.default_rng(seed)
    return np.asarray(centre, dtype=float) + spread * rng.standard_normal((n_steps, batch_size, 2))


def expert_load(topk_TK: np.ndarray, n_experts: int) -> np.ndarray:
    """(E,) load_i = number of tokens whose top-k contains expert i (`routing_stats.expert_counts`)."""
    topk_TK = torch.as_tensor(np.asarray(topk_TK, dtype=np.int64))
    return routing_stats.expert_counts(topk_TK, n_experts).numpy().astype(float)


def maxvio(load_E: np.ndarray) -> float:
    """MaxVio = (max_i load_i - mean load) / mean load; 0 is perfectly balanced (and nothing routed).
    Computed by `routing_stats.max_violation`."""
    return float(routing_stats.max_violation(torch.as_tensor(np.asarray(load_E, dtype=float))))


@dataclass
class BiasRun:
    """The aux-loss-free rule over S steps."""

    loads: np.ndarray  # (S, E) load of each batch, routed with biases[s]
    biases: np.ndarray  # (S+1, E) bias before each step (biases[0] = the start), and after the last
    maxvio: np.ndarray  # (S,) MaxVio of each batch


def simulate_bias_rule(
    batches_SB2: np.ndarray,
    W_E2: np.ndarray,
    bias0_E: np.ndarray,
    rate: float,
    top_k: int = 2,
    score_func: str = "sigmoid",
    zero_center: bool = False,
) -> BiasRun:
    """Route each batch, count loads, then b_i <- b_i + u * sign(mean_load - load_i) (Wang et al. 2024).

    `zero_center` subtracts the mean update (torchtitan's variant)."""
    E = len(W_E2)
    bias = np.asarray(bias0_E, dtype=float).copy()
    loads, biases, vios = [], [bias.copy()], []
    for batch_B2 in batches_SB2:
        topk_BK, _, _ = route(batch_B2, W_E2, bias, top_k, score_func)
        load = expert_load(topk_BK, E)
        delta = rate * np.sign(load.mean() - load)
        if zero_center:
            delta = delta - delta.mean()
        bias = bias + delta
        loads.append(load)
        biases.append(bias.copy())
        vios.append(maxvio(load))
    return BiasRun(loads=np.array(loads), biases=np.array(biases), maxvio=np.array(vios))


def steps_to_balance(maxvio_S: np.ndarray, threshold: float = 0.05, window: int = 20) -> int | None:
    """First step s where the mean MaxVio over steps [s, s + window) is below `threshold` (None if never).

    A window, because the sign rule never stands still: it jitters by +-u every step."""
    v = np.asarray(maxvio_S, dtype=float)
    for s in range(len(v) - window + 1):
        if v[s : s + window].mean() < threshold:
            return s
    return None


def sign_flip_rate(biases_SE: np.ndarray) -> float:
    """Share of consecutive bias updates whose sign flips, averaged over experts (1 = flips every step).

    A rule that has converged to a jitter of +-u flips often; one still travelling flips rarely."""
    delta = np.sign(np.diff(np.asarray(biases_SE), axis=0))  # (S, E)
    if len(delta) < 2:
        return 0.0
    return float((delta[1:] * delta[:-1] < 0).mean())


# --- aux loss vs aux-loss-free ---------------------------------------------------------------------


@dataclass
class BalanceResult:
    """How balanced the toy ended up and how much its routing had to bend to get there."""

    method: str  # "switch" or "bias"
    maxvio: float  # mean MaxVio over the last quarter of training
    top1_changed: float  # share of eval tokens whose top-1 differs from the original router's
    score_change: float  # mean |score - original score| over eval tokens and experts (0 for the bias rule)
    weight_change: float  # ||W - W0|| (Frobenius); the bias rule never touches W
    maxvio_curve: np.ndarray  # (S,) MaxVio per step
    W: np.ndarray  # (E, 2) final router weights
    bias: np.ndarray  # (E,) final biases


def switch_loss_grad(x_T2: np.ndarray, W_E2: np.ndarray, top_k: int) -> tuple[float, np.ndarray]:
    """Switch/GShard aux loss E * sum_i f_i * P_i (softmax router) and its gradient d/dW (f has none).

    f_i = count_i / (T*K), P_i = mean_t p_ti. dL/dlogit_tj = (E/T) * p_tj * (f_j - sum_i f_i p_ti)."""
    T, E = len(x_T2), len(W_E2)
    p_TE = scores_from_logits(x_T2 @ W_E2.T, "softmax")
    topk_TK = np.argsort(-p_TE, axis=-1, kind="stable")[:, :top_k]
    f_E = expert_load(topk_TK, E) / (T * top_k)
    loss = E * float((f_E * p_TE.mean(axis=0)).sum())
    dlogits_TE = (E / T) * p_TE * (f_E[None, :] - (p_TE * f_E).sum(axis=1, keepdims=True))
    return loss, dlogits_TE.T @ x_T2  # (E, 2)


def _bend(x_T2, W0, b0, W, b, top_k) -> tuple[float, float]:
    """(share of tokens whose top-1 changed, mean |score change|) vs the original router."""
    top0, _, scores0 = route(x_T2, W0, b0, top_k, "softmax")
    top1, _, scores1 = route(x_T2, W, b, top_k, "softmax")
    return float((top0[:, 0] != top1[:, 0]).mean()), float(np.abs(scores1 - scores0).mean())


def train_switch(
    batches_SB2: np.ndarray, W0_E2: np.ndarray, alpha: float, lr: float = 10.0, anchor: float = 0.01, top_k: int = 2
) -> BalanceResult:
    """Gradient descent on W of  anchor/2 * ||W - W0||^2  +  alpha * SwitchLoss  (softmax router).

    The anchor term stands in for the language-modelling loss, which wants the router as it was;
    the aux loss pulls against it, so balance costs a bent router."""
    W0 = np.asarray(W0_E2, dtype=float)
    W = W0.copy()
    vios = []
    zero = np.zeros(len(W0))
    for batch_B2 in batches_SB2:
        topk_BK, _, _ = route(batch_B2, W, zero, top_k, "softmax")
        vios.append(maxvio(expert_load(topk_BK, len(W0))))
        _, grad = switch_loss_grad(batch_B2, W, top_k)
        W = W - lr * (anchor * (W - W0) + alpha * grad)
    return _result("switch", batches_SB2, W0, W, zero, np.array(vios), top_k)


def train_bias(batches_SB2: np.ndarray, W0_E2: np.ndarray, rate: float = 1e-3, top_k: int = 2) -> BalanceResult:
    """The aux-loss-free rule on the same softmax toy: W is never touched, only the selection bias."""
    W0 = np.asarray(W0_E2, dtype=float)
    run = simulate_bias_rule(batches_SB2, W0, np.zeros(len(W0)), rate, top_k, "softmax")
    return _result("bias", batches_SB2, W0, W0, run.biases[-1], run.maxvio, top_k)


def _result(method, batches_SB2, W0, W, bias, vios, top_k) -> BalanceResult:
    eval_T2 = batches_SB2[-1]
    changed, score_change = _bend(eval_T2, W0, np.zeros(len(W0)), W, bias, top_k)
    tail = vios[-max(1, len(vios) // 4) :]
    return BalanceResult(
        method=method,
        maxvio=float(tail.mean()),
        top1_changed=changed,
        score_change=score_change,
        weight_change=float(np.linalg.norm(W - W0)),
        maxvio_curve=vios,
        W=W,
        bias=np.asarray(bias, dtype=float),
    )


# --- capacity -------------------------------------------------------------------------------------


def capacity(n_tokens: int, top_k: int, n_experts: int, capacity_factor: float) -> int:
    """Tokens each expert may take: ceil(C * T * K / E)."""
    return math.ceil(capacity_factor * n_tokens * top_k / n_experts)


def capacity_keep(topk_TK: np.ndarray, n_experts: int, capacity_factor: float) -> np.ndarray:
    """(T, K) bool: False where a (token, expert) pair is dropped because the expert is full.

    Earlier positions win (as in `moe_core.moe.capacity_keep_mask`): each expert takes its first
    `capacity` pairs in token order."""
    topk_TK = np.asarray(topk_TK)
    T, K = topk_TK.shape
    cap = capacity(T, K, n_experts, capacity_factor)
    seen = np.zeros(n_experts, dtype=int)
    keep = np.zeros((T, K), dtype=bool)
    for t in range(T):
        for k in range(K):
            e = topk_TK[t, k]
            keep[t, k] = seen[e] < cap
            seen[e] += 1
    return keep


# --- the bridge to the real model -------------------------------------------------------------------


def last_history_row(run_dir: str | Path) -> dict | None:
    """The last complete row of RUN/history/train.jsonl (None when missing or empty; a torn line is skipped)."""
    path = Path(run_dir) / "history" / "train.jsonl"
    if not path.is_file():
        return None
    last = None
    with path.open(encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict):
                last = row
    return last


@dataclass(frozen=True)
class ModelFacts:
    """The numbers lesson 6 quotes about a real model, read from its config (never typed in)."""

    width: int  # hidden size the router sees
    n_moe_layers: int | None
    n_experts: int
    top_k: int


# Hugging Face config.json spells the same facts in several ways, by family
_HF_KEYS = {
    "width": ("hidden_size", "d_model", "n_embd"),
    "n_experts": ("n_routed_experts", "num_experts", "num_local_experts", "moe_num_experts"),
    "top_k": ("num_experts_per_tok", "moe_top_k", "top_k"),
}


def model_facts(model_dir: str | Path) -> ModelFacts | None:
    """ModelFacts from RUN/run.json (our runs) or a Hugging Face folder's config.json; None when neither says."""
    folder = Path(model_dir)
    try:
        if (folder / "run.json").is_file():
            model = json.loads((folder / "run.json").read_text(encoding="utf-8"))["model"]
            moe = model["moe"]
            n_moe = int(model["n_layer"]) - int(model.get("n_dense_layers", 0))
            return ModelFacts(int(model["n_embd"]), n_moe, int(moe["n_experts"]), int(moe["top_k"]))
        if (folder / "config.json").is_file():
            cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
            found = {
                name: next((cfg[k] for k in keys if isinstance(cfg.get(k), int)), None)
                for name, keys in _HF_KEYS.items()
            }
            if None in found.values():
                return None
            return ModelFacts(found["width"], None, found["n_experts"], found["top_k"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return None


def real_model_sentence(facts: ModelFacts | None) -> str:
    """Lesson 6's opening sentence, with the model's own numbers when they are known."""
    if facts is None:
        return (
            "The real model routes high-dimensional hidden states instead of 2-D points, with one router per MoE "
            "layer, but every step is the same: logits → scores → + bias → top-k → gate weights."
        )
    layers = (
        f"one router in each of its {facts.n_moe_layers} MoE layers"
        if facts.n_moe_layers
        else "one router per MoE layer"
    )
    return (
        f"The real model routes {facts.width}-dimensional hidden states instead of 2-D points, with {layers}, "
        f"each choosing {facts.top_k} of {facts.n_experts} experts per token, but every step is the same: "
        "logits → scores → + bias → top-k → gate weights."
    )
