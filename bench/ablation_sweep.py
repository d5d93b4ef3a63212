"""The full expert-ablation sweep on the shipped eval set: cached block inputs vs a full forward per ablation.

    python bench/ablation_sweep.py                 # shipped run, every (layer, expert) + references, 1 thread
    python bench/ablation_sweep.py --threads 2 --naive-ablations 6

Ours (`analysis.causal.ablation`): one baseline forward that keeps the residual stream entering each MoE
block, then per ablation only the blocks from the ablated layer up (+ final norm, unembedding, loss).
Baseline: the naive way, a full forward of every batch per ablation. The naive time is measured on
`--naive-ablations` of the ablations (spread over the layers), each timed right after the cached way on the
same ablation (interleaved, so drifting machine load hits both alike); both give the same losses (checked).
Prints the full sweep's seconds and the per-ablation ratio.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from analysis.causal.ablation import (
    AblationRunner,
    EvalTokens,
    intervention,
    sweep,
    sweep_ablations,
    token_losses,
    tokenize_docs,
)
from analysis.sources import RunSource
from moe_core.paths import default_run_path


def naive_losses(runner: AblationRunner, ablation, data: EvalTokens | None = None) -> np.ndarray:
    """The same losses by a full forward of every batch (what the cache saves), of `data`'s batches (default:
    the runner's padded ones)."""
    model, out = runner.model, np.full(runner.n, np.nan)
    data = data or runner.data
    ids = torch.as_tensor(data.tokens["token_id"].to_numpy(np.int64, copy=True))
    with torch.inference_mode(), intervention(model, ablation):
        for rows_BS in data.batches:
            ids_BS = ids[torch.as_tensor(rows_BS).clamp_min(0)]
            real = rows_BS >= 0
            out[rows_BS[real]] = token_losses(model(ids_BS).logits, ids_BS).numpy()[real]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default=str(default_run_path()))
    p.add_argument("--threads", type=int, default=1, help="torch threads (the app's default is 1)")
    p.add_argument("--naive-ablations", type=int, default=6, help="ablations timed the naive way")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    target = RunSource(args.run).causal_model()
    docs = RunSource(args.run).eval_docs()
    ablations = sweep_ablations(target.n_layers, target.n_experts)
    t0 = time.perf_counter()
    runner = target.runner(docs)
    t_base = time.perf_counter() - t0
    table = sweep(runner, ablations, n_boot=1000)
    t_sweep = time.perf_counter() - t0
    picks = [ablations[i] for i in np.linspace(0, len(ablations) - 1, args.naive_ablations).astype(int)]
    unpadded = tokenize_docs(target.tokenizer, docs, target.model.config.block_size, pad=False)
    t_cached = t_naive = t_unpadded = 0.0
    for ab in picks:  # interleaved, so a change of machine load hits all three alike
        t1 = time.perf_counter()
        cached = runner.losses(ab)
        t2 = time.perf_counter()
        naive = naive_losses(runner, ab)
        t3 = time.perf_counter()
        naive_unpadded = naive_losses(runner, ab, unpadded)
        t4 = time.perf_counter()
        np.testing.assert_allclose(naive, cached, rtol=1e-4, atol=1e-5, equal_nan=True)
        np.testing.assert_allclose(naive_unpadded, cached, rtol=1e-4, atol=1e-5, equal_nan=True)
        t_cached, t_naive, t_unpadded = t_cached + t2 - t1, t_naive + t3 - t2, t_unpadded + t4 - t3
    n_tokens = int(table.loc[table["label"] == "all", "n_tokens"].iloc[0])
    print(f"run {target.name} step {target.step}: {len(docs)} eval docs, {n_tokens:,} scored tokens, "
          f"{len(ablations)} ablations ({target.n_layers} layers x {target.n_experts} experts + 2 references "
          "per layer), "
          f"torch threads {args.threads}")  # fmt: skip
    print(f"forwards per pass: {len(runner.data.batches)} padded batches, {len(unpadded.batches)} of the "
          "recorder's equal-length windows")  # fmt: skip
    print(f"baseline forward (caching block inputs): {t_base:.1f} s")
    print(f"full sweep, cached (ours, incl. baseline and bootstrap): {t_sweep:.1f} s")
    n = len(picks)
    print(f"interleaved on {n} ablations, s per ablation: cached {t_cached / n:.2f}, full forward "
          f"{t_naive / n:.2f}, full forward in the recorder's batches {t_unpadded / n:.2f}")  # fmt: skip
    print(f"ratio full forward / ours: {t_naive / t_cached:.2f}x; recorder's batches / ours: "
          f"{t_unpadded / t_cached:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
