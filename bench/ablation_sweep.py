"""The full expert-ablation sweep on the shipped eval set: cached block inputs vs a full forward per ablation.

    python bench/ablation_sweep.py                 # shipped run, every (layer, expert) + references, 1 thread
    python bench/ablation_sweep.py --threads 2 --naive-ablations 6

Ours (`analysis.causal.ablation`): one baseline forward that keeps the residual stream entering each MoE
block, then per ablation only the blocks from the ablated layer up (+ final norm, unembedding, loss).
Baseline: the naive way, a full forward of every batch per ablation. The naive time is measured on
`--naive-ablations` of the ablations (spread over the layers) and scaled to the whole sweep, both measured
in this one run; both compute the same losses (checked on those ablations). Prints seconds and the ratio.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from analysis.causal.ablation import AblationRunner, intervention, sweep, sweep_ablations, token_losses
from analysis.recording.pipeline import window_batches
from analysis.sources import RunSource
from moe_core.paths import default_run_path


def naive_losses(runner: AblationRunner, ablation) -> np.ndarray:
    """The same losses by a full forward of every batch (what the cache saves)."""
    model, out = runner.model, np.full(runner.n, np.nan)
    with torch.inference_mode(), intervention(model, ablation):
        for rows_BS, ids_BS in zip(runner.data.batches, runner.ids):
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
    t1 = time.perf_counter()
    for ab in picks:
        naive = naive_losses(runner, ab)
        np.testing.assert_allclose(naive, runner.losses(ab), rtol=1e-4, atol=1e-5, equal_nan=True)
    t_naive_each = (time.perf_counter() - t1) / len(picks)
    t_cached_each = (t_sweep - t_base) / len(ablations)
    # (the check above also re-ran each pick the cached way: subtract that share)
    t_naive_each -= t_cached_each
    n_tokens = int(table.loc[table["label"] == "all", "n_tokens"].iloc[0])
    naive_total = t_base + len(ablations) * t_naive_each
    print(f"run {target.name} step {target.step}: {len(docs)} eval docs, {n_tokens:,} scored tokens, "
          f"{len(ablations)} ablations ({target.n_layers} layers x {target.n_experts} experts + 2 references "
          "per layer), "
          f"torch threads {args.threads}")  # fmt: skip
    lengths = runner.data.tokens.groupby("doc_id", sort=False).size().tolist()
    unpadded = len(window_batches(lengths, target.model.config.block_size, runner.data.batches[0].shape[0]))
    print(
        f"forwards per pass: {len(runner.data.batches)} padded batches "
        f"(the recorder's equal-length batches: {unpadded})"
    )
    print(f"baseline forward (caching block inputs): {t_base:.1f} s")
    print(f"sweep, cached (ours, incl. baseline):    {t_sweep:.1f} s  ({t_cached_each:.2f} s per ablation)")
    each = f"{t_naive_each:.2f} s per ablation"
    print(f"sweep, naive full forwards (estimated from {len(picks)}): {naive_total:.1f} s  ({each})")
    print(f"ratio naive / ours: {naive_total / t_sweep:.2f}x")


if __name__ == "__main__":
    main()
