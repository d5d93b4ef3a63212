"""MoE layer speed: the seed tutorial's loop layer vs ours, forward + backward, measured in one run.

    python bench/moe_layer.py                      # CPU fp32, 2k and 32k tokens
    python bench/moe_layer.py --tokens 2048 32768 131072 --device cuda   # bf16 on a GPU

Prints ms per forward+backward (median over repeats) and the speed-up over the seed layer.
Ours: the `seed` preset's MoE layer (same shapes) with the grouped-GEMM dispatch, and the
reference loop dispatch for comparison.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from seed_layer import SeedMoE  # noqa: E402

from moe_core import preset  # noqa: E402
from moe_core.moe import MoELayer  # noqa: E402


def fwd_bwd(layer, x) -> None:
    out = layer(x)
    out = out[0] if isinstance(out, tuple) else out
    out.float().square().mean().backward()


def time_interleaved(layers: dict, x, repeats: int, device: str) -> dict[str, float]:
    """Median ms per forward+backward; layers take turns each round so machine noise hits all alike."""
    times: dict[str, list[float]] = {name: [] for name in layers}
    for round_ in range(repeats + 2):
        for name, layer in layers.items():
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fwd_bwd(layer, x)
            if device == "cuda":
                torch.cuda.synchronize()
            if round_ >= 2:  # the first two rounds are warm-up
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) * 1e3 for name, ts in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, nargs="+", default=[2048, 32768])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    torch.manual_seed(0)
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    cfg = preset("seed").moe
    cfg.dropout = 0.0
    D = preset("seed").n_embd
    layers = {
        "seed (tutorial loop)": SeedMoE(D, cfg.n_experts, cfg.top_k, cfg.expert_hidden, cfg.shared_hidden),
        "ours, loop dispatch": MoELayer(D, _with(cfg, dispatch="loop")),
        "ours, grouped GEMM": MoELayer(D, cfg),
    }
    for layer in layers.values():
        layer.to(args.device, dtype).train()
    name = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or platform.machine()
    threads = torch.get_num_threads()
    print(f"# device={args.device} ({name}), dtype={dtype}, torch {torch.__version__}, threads={threads}")
    print(f"{'tokens':>8} | " + " | ".join(f"{n:>22}" for n in layers) + " | speed-up vs seed")
    for T in args.tokens:
        x = torch.randn(T // 256, 256, D, device=args.device, dtype=dtype, requires_grad=True)
        ms = time_interleaved(layers, x, args.repeats, args.device)
        base = ms["seed (tutorial loop)"]
        cells = " | ".join(f"{v:19.2f} ms" for v in ms.values())
        print(f"{T:>8} | {cells} | {base / ms['ours, grouped GEMM']:.2f}x")


def _with(cfg, **changes):
    import dataclasses

    return dataclasses.replace(cfg, **changes)


if __name__ == "__main__":
    main()
