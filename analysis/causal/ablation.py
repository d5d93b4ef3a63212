"""Expert ablation: what the next-token loss does when an expert (or a layer's routed experts, or the shared
expert) is taken out of our `MoETransformer`.

Ablations (`Ablation.mode`):
- "reroute": expert e of MoE layer l can no longer be chosen; every token re-chooses among the others on the
  same biased scores and the gate weights are renormalised as the router does (`moe_core.moe.RoutingOverride
  (removed=...)`, which calls `choose_experts`). The causal question "what if this expert did not exist".
- "zero": the choice is kept but expert e's gate weight is 0 ("zero its output"; the other expert of a token
  keeps its weight, no renormalisation).
- "layer": every routed expert of layer l zeroed (only the shared expert and the residual stream remain).
- "shared": the shared expert of layer l outputs zeros (a forward hook).

Loss: `loss[t]` = -log p(token t | the tokens before it in its window), in nats; a window's first token has
none (NaN). Windows are those of the recording pipeline (non-overlapping, `block_size` tokens).
Δ loss = loss(ablated) - loss(baseline), per token; per document the mean over its scored tokens; per domain
the mean over the domain's scored tokens (nats/token) with a bootstrap CI over documents (`domain_deltas`).

Batching: one baseline forward caches the residual stream entering each MoE block; an ablation of layer l
re-runs only blocks from l's block upward (`MoETransformer.forward_from`). Shape legend: B windows,
S positions, D model dim, V vocabulary, N tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from analysis.recording.pipeline import model_lock, normalise_docs, token_table, window_batches
from moe_core.moe import RoutingOverride

MODES = ("reroute", "zero", "layer", "shared")
BATCH_TOKENS = 4096  # tokens per forward: logits of B*S*V float32 stay ~64 MB at V = 4096


@dataclass(frozen=True)
class Ablation:
    """One intervention on MoE layer `layer` (index among the MoE layers); `expert` for reroute/zero."""

    layer: int
    mode: str = "reroute"  # one of MODES
    expert: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"ablation mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if (self.expert is None) != (self.mode in ("layer", "shared")):
            raise ValueError(f"ablation mode {self.mode!r} {'needs' if self.expert is None else 'takes no'} expert")

    @property
    def name(self) -> str:
        what = {"layer": "all routed experts", "shared": "shared expert"}.get(self.mode, f"expert {self.expert}")
        how = {"reroute": " (re-routed)", "zero": " (output zeroed)"}.get(self.mode, "")
        return f"layer {self.layer}: {what}{how}"


def sweep_ablations(n_layers: int, n_experts: int, mode: str = "reroute", references: bool = True) -> list[Ablation]:
    """Every (layer, expert) ablation in `mode`, then per layer the references: whole layer, shared expert."""
    out = [Ablation(layer, mode, e) for layer in range(n_layers) for e in range(n_experts)]
    if references:
        out += [Ablation(layer, ref) for layer in range(n_layers) for ref in ("layer", "shared")]
    return out


# --- tokens and windows -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalTokens:
    """Documents as tokens and the windows they are run in."""

    tokens: pd.DataFrame  # one row per token (index token_row): doc_id, position, token_id, token_text, label
    batches: list[np.ndarray]  # token rows of each forward, (B, S); -1 = right padding


def padded_batches(doc_lengths: Sequence[int], block_size: int, batch_size: int) -> list[np.ndarray]:
    """The recorder's windows (`window_batches`: non-overlapping, `block_size` tokens) stacked `batch_size` at a
    time, short windows right-padded with -1. Exact for a causal model whose routing is per token (no
    capacity limit): a padded position comes after every real one, so no real token sees it; it only saves
    the many small forwards of one-window batches."""
    windows = [w for batch in window_batches(doc_lengths, block_size, 1) for w in batch]
    out = []
    for i in range(0, len(windows), batch_size):
        group = windows[i : i + batch_size]
        rows_BS = np.full((len(group), max(len(w) for w in group)), -1, dtype=np.int64)
        for b, w in enumerate(group):
            rows_BS[b, : len(w)] = w
        out.append(rows_BS)
    return out


def tokenize_docs(
    tokenizer,
    docs,
    block_size: int,
    batch_tokens: int = BATCH_TOKENS,
    pad: bool = True,
    encode: Callable[[str], tuple[list[int], list[tuple[int, int]], list[str]]] | None = None,
) -> EvalTokens:
    """Documents (texts, `Doc`s or (doc_id, label, text) tuples) -> tokens and windows, as the recorder cuts
    them; `pad` batches them with right padding (`padded_batches`; only for routing without a capacity limit).
    encode(text) -> (ids, spans, texts): default our tokenizer's (a Hugging Face model passes its own)."""
    from moe_core.corpus import Doc
    from moe_core.tokenizer import encode_with_offsets

    if docs and isinstance(docs[0], tuple):
        docs = [Doc(text=text, label=label, source="causal", doc_id=doc_id) for doc_id, label, text in docs]

    def encode_ours(text: str):
        ids, spans = encode_with_offsets(tokenizer, text)
        return ids, spans, [text[s:e] for s, e in spans]

    encode = encode or encode_ours

    columns, lengths = token_table(normalise_docs(docs, None), encode)
    batch_size = max(1, batch_tokens // block_size)
    batches = (padded_batches if pad else window_batches)(lengths, block_size, batch_size)
    return EvalTokens(pd.DataFrame(columns), batches)


# --- the model under intervention ---------------------------------------------------------------------------


@contextmanager
def intervention(model, ablation: Ablation | None) -> Iterator[None]:
    """`model` with `ablation` applied for the duration (None: unchanged); always restored."""
    if ablation is None:
        yield
        return
    layers = model.moe_layers
    if not 0 <= ablation.layer < len(layers):
        raise ValueError(f"layer must be in 0..{len(layers) - 1}, got {ablation.layer}")
    moe = layers[ablation.layer]
    E = moe.cfg.n_experts
    if ablation.expert is not None and not 0 <= ablation.expert < E:
        raise ValueError(f"expert must be in 0..{E - 1}, got {ablation.expert}")
    if ablation.mode == "shared":
        if moe.shared is None:
            raise ValueError(f"MoE layer {ablation.layer} has no shared expert")
        handle = moe.shared.register_forward_hook(lambda module, args, out: torch.zeros_like(out))
        try:
            yield
        finally:
            handle.remove()
        return
    override = {
        "reroute": lambda: RoutingOverride(removed=(ablation.expert,)),
        "zero": lambda: RoutingOverride(zeroed=(ablation.expert,)),
        "layer": lambda: RoutingOverride(zeroed=tuple(range(E))),
    }[ablation.mode]()
    with routing_override(model, {ablation.layer: override}):
        yield


@contextmanager
def routing_override(model, overrides: dict[int, RoutingOverride]) -> Iterator[None]:
    """Set `Router.override` of the given MoE layers for the duration; always restored."""
    routers = [model.moe_layers[layer].router for layer in overrides]
    before = [r.override for r in routers]
    try:
        for router, ov in zip(routers, overrides.values()):
            router.override = ov
        yield
    finally:
        for router, ov in zip(routers, before):
            router.override = ov


def token_losses(logits_BSV: torch.Tensor, ids_BS: torch.Tensor) -> torch.Tensor:
    """(B, S) float64 nats: -log p(ids[b, s] | ids[b, :s]); NaN at s = 0 (no context to predict from).
    (Padding positions get a number too; callers keep only real rows.)"""
    B, S, V = logits_BSV.shape
    out_BS = torch.full((B, S), float("nan"), dtype=torch.float64)
    if S > 1:
        nll = F.cross_entropy(logits_BSV[:, :-1].reshape(-1, V).float(), ids_BS[:, 1:].reshape(-1), reduction="none")
        out_BS[:, 1:] = nll.view(B, S - 1).double().cpu()
    return out_BS


class AblationRunner:
    """Baseline losses and the residual stream entering each MoE block, cached once; then `losses(ablation)`
    re-runs only the blocks from the ablated layer up. Holds the model's lock for each call (a shared model
    must not be intervened on while another session records with it).

    The loop, the loss and the tables are shared with other models (a Hugging Face model:
    `analysis.causal.hf_interventions.HFAblationRunner`), which override the three model-specific steps:
    `_check_batches`, `_intervention` and `_logits`."""

    def __init__(self, model, data: EvalTokens, progress: Callable[[int, int], None] | None = None):
        self.model, self.data = model, data
        self.n = len(data.tokens)
        self.device = self._input_device()
        ids = torch.as_tensor(data.tokens["token_id"].to_numpy(np.int64, copy=True))
        if len(ids) and int(ids.max()) >= model.config.vocab_size:
            raise ValueError(f"the tokenizer does not match the model: token id {int(ids.max())} >= vocab size")
        self._check_batches()
        # per batch (B, S) ids; padding gets token 0 (it is never scored, and comes after every real token)
        self.ids = [ids[torch.as_tensor(rows).clamp_min(0)].to(self.device) for rows in data.batches]
        self._cache: list[dict[int, torch.Tensor]] = []  # per batch: block -> (B, S, D) residual input
        self.base = self._run(None, progress)  # (N,) baseline nats

    # --- the model-specific steps (our MoETransformer) ---

    def _input_device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _check_batches(self) -> None:
        if self.model.config.moe.capacity_factor > 0 and any((rows < 0).any() for rows in self.data.batches):
            raise ValueError("padded batches need per-token routing: tokenize with pad=False under a capacity limit")

    def _intervention(self, ablation: Ablation | None):
        return intervention(self.model, ablation)

    def _logits(self, i: int, ids_BS: torch.Tensor, ablation: Ablation | None) -> torch.Tensor:
        """(B, S, V) logits of batch i (ids (B, S)) with `ablation` applied (inside `_intervention`)."""
        if ablation is None:
            return self._capture(ids_BS)
        block = self.model.config.moe_layers[ablation.layer]
        return self.model.forward_from(self._cache[i][block], block)

    # --- shared ---

    def _run(self, ablation: Ablation | None, progress=None) -> np.ndarray:
        model = self.model
        out_N = np.full(self.n, np.nan)
        with model_lock(model), torch.inference_mode(), self._intervention(ablation):
            was_training = model.training
            model.eval()
            try:
                done = 0
                for i, (rows_BS, ids_BS) in enumerate(zip(self.data.batches, self.ids)):
                    logits_BSV = self._logits(i, ids_BS, ablation)
                    real = rows_BS >= 0
                    out_N[rows_BS[real]] = token_losses(logits_BSV, ids_BS).numpy()[real]
                    done += int(real.sum())
                    if progress is not None:
                        progress(done, self.n)
            finally:
                model.train(was_training)
        return out_N

    def _capture(self, ids_BS: torch.Tensor) -> torch.Tensor:
        """Baseline forward of one batch, keeping the input of every MoE block."""
        model, kept = self.model, {}
        handles = [
            model.blocks[b].register_forward_pre_hook(lambda m, args, b=b: kept.__setitem__(b, args[0]))
            for b in model.config.moe_layers
        ]
        try:
            logits_BSV = model(ids_BS).logits
        finally:
            for h in handles:
                h.remove()
        self._cache.append(kept)
        return logits_BSV

    def losses(self, ablation: Ablation) -> np.ndarray:
        """(N,) nats per token with `ablation` applied (NaN where unscored)."""
        return self._run(ablation)


# --- tables ------------------------------------------------------------------------------------------------


def token_deltas(tokens: pd.DataFrame, base_N: np.ndarray, ablated_N: np.ndarray) -> pd.DataFrame:
    """One row per scored token: doc_id, label, position, token_text, base_loss, loss, delta (nats)."""
    keep = ~np.isnan(base_N)
    cols = [c for c in ("doc_id", "label", "position", "token_text") if c in tokens]
    out = tokens.loc[keep, cols].copy()
    out["base_loss"], out["loss"] = base_N[keep], ablated_N[keep]
    out["delta"] = out["loss"] - out["base_loss"]
    return out


def doc_deltas(per_token: pd.DataFrame) -> pd.DataFrame:
    """One row per document: doc_id, label, n_tokens (scored), delta_sum, delta (mean nats/token)."""
    g = per_token.groupby("doc_id", sort=False)
    out = g.agg(label=("label", "first"), n_tokens=("delta", "size"), delta_sum=("delta", "sum")).reset_index()
    out["delta"] = out["delta_sum"] / out["n_tokens"]
    return out


def domain_deltas(per_doc: pd.DataFrame, *, n_boot: int = 1000, ci: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Per domain (label) and over all documents ("all"): delta = Σ Δ / Σ scored tokens (nats/token, each token
    counts once), and a percentile bootstrap CI resampling the domain's documents with replacement (a token's
    Δ stays with its document). A domain of one document gets lo == hi == delta.
    Columns: label, n_docs, n_tokens, delta, lo, hi."""
    rng = np.random.default_rng(seed)
    rows = []
    groups = [(str(label), g) for label, g in per_doc.groupby("label", sort=True)] + [("all", per_doc)]
    for label, g in groups:
        sums, counts = g["delta_sum"].to_numpy(float), g["n_tokens"].to_numpy(float)
        delta = sums.sum() / counts.sum() if counts.sum() else np.nan
        if len(g) > 1:
            draw_BN = rng.integers(0, len(g), size=(n_boot, len(g)))
            boot_B = sums[draw_BN].sum(axis=1) / np.maximum(counts[draw_BN].sum(axis=1), 1)
            lo, hi = np.quantile(boot_B, [(1 - ci) / 2, (1 + ci) / 2])
        else:
            lo = hi = delta
        rows.append(
            {"label": label, "n_docs": len(g), "n_tokens": int(counts.sum()), "delta": delta, "lo": lo, "hi": hi}
        )
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class AblationResult:
    """One ablation's tables (see the module docstring for the definitions)."""

    ablation: Ablation
    per_token: pd.DataFrame
    per_doc: pd.DataFrame
    per_domain: pd.DataFrame


def ablation_result(runner: AblationRunner, ablation: Ablation, n_boot: int = 1000) -> AblationResult:
    per_token = token_deltas(runner.data.tokens, runner.base, runner.losses(ablation))
    per_doc = doc_deltas(per_token)
    return AblationResult(ablation, per_token, per_doc, domain_deltas(per_doc, n_boot=n_boot))


def labelled(frame: pd.DataFrame, ablation: Ablation) -> pd.DataFrame:
    """`frame` with the ablation's columns in front: ablation (its name), layer, mode, expert (-1: none)."""
    frame = frame.copy()
    for col, value in reversed(
        [("ablation", ablation.name), ("layer", ablation.layer), ("mode", ablation.mode),
         ("expert", -1 if ablation.expert is None else ablation.expert)]
    ):  # fmt: skip
        frame.insert(0, col, value)
    return frame


LEVELS = {"domain": "per_domain", "doc": "per_doc", "token": "per_token"}


def stack(results: Sequence[AblationResult], level: str = "domain") -> pd.DataFrame:
    """One table of many ablations' results at `level` ("domain", "doc" or "token"), `labelled`."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}, got {level!r}")
    return pd.concat([labelled(getattr(r, LEVELS[level]), r.ablation) for r in results], ignore_index=True)


def sweep_results(
    runner: AblationRunner,
    ablations: Sequence[Ablation],
    *,
    n_boot: int = 1000,
    progress: Callable[[int, int], None] | None = None,
) -> list[AblationResult]:
    """`ablation_result` of every ablation; progress(done, total) after each."""
    results = []
    for i, ab in enumerate(ablations):
        results.append(ablation_result(runner, ab, n_boot))
        if progress is not None:
            progress(i + 1, len(ablations))
    return results


def sweep(
    runner: AblationRunner,
    ablations: Sequence[Ablation],
    *,
    n_boot: int = 1000,
    progress: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """Δ loss per domain of every ablation, one table: ablation, layer, mode, expert, label, n_docs, n_tokens,
    delta, lo, hi (nats/token). progress(done, total) after each ablation."""
    return stack(sweep_results(runner, ablations, n_boot=n_boot, progress=progress), "domain")
