"""Training throughput of the `default` preset: our MoE layer vs the seed-style loop, in the same model, one run.

    python bench/train_throughput.py                       # CPU fp32 (+ CUDA bf16 when there is a GPU)
    python bench/train_throughput.py --device cpu --steps 5 --batch-size 16
    python bench/train_throughput.py --device cuda --batch-size 256 --compile

Each measured step is a full optimizer step, `moe_core.training.train_step` (forward, loss, backward, grad clip,
AdamW, `pop_expert_loads` + bias update, the history row's statistics), on random tokens. The two models
("grouped": sorted tokens + grouped GEMM; "loop": the reference per-expert loop with host syncs, as in the
seed tutorial) take turns step by step, so machine noise hits both alike. Prints tokens/s (median step).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from contextlib import nullcontext

import torch

from moe_core import build_model, count_parameters, preset
from moe_core.training import Dist, RouterStats, StepContext, TrainConfig, train_step


def make_trainer(
    dispatch: str, device: torch.device, compile_: bool, tokens: torch.Tensor, train_cfg: TrainConfig
) -> StepContext:
    """A single-process step context of the `default` preset with `dispatch` (all sequences in one micro-batch)."""
    cfg = preset("default")
    cfg.moe.dispatch = dispatch
    torch.manual_seed(0)
    model = build_model(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, **({"fused": True} if device.type == "cuda" else {}))
    fwd = torch.compile(model) if compile_ else model
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if device.type == "cuda" else nullcontext
    seq, batch = train_cfg.seq_len, train_cfg.batch_size
    return StepContext(fwd, model, opt, RouterStats(model), tokens, train_cfg, seq, batch, Dist(), device, autocast)


def bench_device(device: torch.device, steps: int, batch_size: int, compile_: bool) -> dict[str, float]:
    cfg = preset("default")
    seq = cfg.block_size
    tokens = torch.randint(0, cfg.vocab_size, (2_000_000,), dtype=torch.int32)
    train_cfg = TrainConfig(steps=steps + 2, batch_size=batch_size, seq_len=seq, warmup_steps=1)
    contexts = {name: make_trainer(name, device, compile_, tokens, train_cfg) for name in ("grouped", "loop")}
    times: dict[str, list[float]] = {name: [] for name in contexts}
    for step in range(1, steps + 3):  # the first two steps are warm-up (allocator, compile)
        for name, ctx in contexts.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            train_step(ctx, step)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if step > 2:
                times[name].append(time.perf_counter() - t0)
    return {name: batch_size * seq / statistics.median(ts) for name, ts in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", nargs="+", default=["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    p.add_argument("--steps", type=int, default=5, help="measured steps per model (after 2 warm-up steps)")
    p.add_argument("--batch-size", type=int, help="sequences per step (default 32 on CPU, 256 on CUDA)")
    p.add_argument("--compile", action="store_true", help="torch.compile both models (CUDA)")
    args = p.parse_args()
    cfg = preset("default")
    params = count_parameters(cfg)
    print(
        f"# default preset: {params['total'] / 1e6:.2f} M params ({params['active'] / 1e6:.2f} M active), "
        f"E={cfg.moe.n_experts} K={cfg.moe.top_k}, seq {cfg.block_size}"
    )
    print(
        f"# torch {torch.__version__}, python {platform.python_version()}, {platform.machine()}, "
        f"threads {torch.get_num_threads()}"
        + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "")
    )
    print(f"{'device':<8}{'dtype':<7}{'batch':>6}{'grouped tok/s':>16}{'loop tok/s':>14}{'ratio':>8}")
    for name in args.device:
        device = torch.device(name)
        batch = args.batch_size or (256 if device.type == "cuda" else 32)
        tps = bench_device(device, args.steps, batch, args.compile)
        dtype = "bf16" if device.type == "cuda" else "fp32"
        print(
            f"{name:<8}{dtype:<7}{batch:>6}{tps['grouped']:>16,.0f}{tps['loop']:>14,.0f}"
            f"{tps['grouped'] / tps['loop']:>7.2f}x",
            flush=True,
        )


if __name__ == "__main__":
    main()
