"""Check the code paths that run on CUDA, on whatever device there is (the CPU when no GPU is lent).

    python bench/cuda_paths_check.py                 # CPU: runs the CUDA dispatch (torch._grouped_mm) on the CPU
    python bench/cuda_paths_check.py --device cuda   # GPU: also fails on any host sync in the MoE layer

1. the grouped dispatch through the grouped-GEMM kernel (what CUDA runs) against the reference loop, forward
   and gradients, fp32 and under bf16 autocast (relative error printed; bf16 bound 2e-2);
2. under bf16 autocast the routed experts' GEMMs run in bf16 (autocast does not cover grouped_mm);
3. on CUDA: one forward+backward of the layer under `torch.cuda.set_sync_debug_mode("error")` (no host sync);
4. `torch.compile` of the tiny model: the same loss as eager, and the number of graph breaks.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
from contextlib import nullcontext

import torch

from moe_core import build_model, preset
from moe_core import moe as M


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12))


def layer_pair(device: str):
    cfg = dataclasses.replace(preset("seed").moe, dropout=0.0)
    torch.manual_seed(0)
    fast = M.MoELayer(256, cfg).to(device)
    ref = M.MoELayer(256, dataclasses.replace(cfg, dispatch="loop")).to(device)
    ref.load_state_dict(fast.state_dict())
    return fast, ref


def fwd_bwd(layer, x, autocast):
    x = x.detach().clone().requires_grad_(True)
    with autocast():
        out = layer(x)
    out.float().square().mean().backward()
    grads = [p.grad.detach().clone() for p in layer.experts.parameters()]
    layer.zero_grad()
    return out.detach(), x.grad, grads


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--no-compile", action="store_true")
    args = p.parse_args()
    dev = args.device
    plain = M._grouped_mm
    if dev == "cpu":  # run the CUDA dispatch (one grouped-GEMM kernel per projection) on the CPU
        M._grouped_mm = functools.partial(plain, kernel=True)
    fast, ref = layer_pair(dev)
    x = torch.randn(4, 256, 256, device=dev)
    for name, autocast, bound in (
        ("fp32", nullcontext, 1e-5),
        ("bf16 autocast", lambda: torch.autocast(dev, dtype=torch.bfloat16), 2e-2),
    ):
        (o1, g1, w1), (o2, g2, w2) = fwd_bwd(fast, x, autocast), fwd_bwd(ref, x, autocast)
        errs = [rel_err(o1, o2), rel_err(g1, g2)] + [rel_err(a, b) for a, b in zip(w1, w2)]
        ok = max(errs) <= bound
        print(f"1. grouped kernel vs loop, {name:13s}: max rel. error {max(errs):.2e} (bound {bound:g}): "
              f"{'ok' if ok else 'FAILED'}")  # fmt: skip

    seen = []
    hook = fast.experts.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    with torch.autocast(dev, dtype=torch.bfloat16):
        fast(x)
    hook.remove()
    ok = seen[0] == torch.bfloat16
    print(f"2. experts' output dtype under bf16 autocast: {seen[0]} ({'ok' if ok else 'FAILED'})")

    if dev.startswith("cuda"):
        fast.train()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            fwd_bwd(fast, x, nullcontext)  # warm-up (lazy inits may sync)
            torch.cuda.set_sync_debug_mode("error")
            try:
                fwd_bwd(fast, x, nullcontext)
                print("3. no host sync in the grouped MoE layer's forward+backward: ok")
            except RuntimeError as exc:
                print(f"3. host sync in the MoE layer: FAILED ({exc})")
            finally:
                torch.cuda.set_sync_debug_mode("default")
    else:
        print("3. host-sync check: needs CUDA (skipped)")

    if not args.no_compile:
        # (a) the model as it runs on this device, fp32; (b) the CUDA dispatch under bf16 autocast, as compiled
        # for a GPU (the grouped-GEMM kernel only takes bf16: an fp32 input fails at compile time)
        for name, kernel_path, autocast, bound in (
            ("fp32, this device's dispatch", False, nullcontext, 1e-4),
            ("bf16 autocast, grouped-GEMM kernel", True, lambda: torch.autocast(dev, dtype=torch.bfloat16), 3e-2),
        ):
            M._grouped_mm = functools.partial(plain, kernel=True) if kernel_path else plain
            torch._dynamo.reset()
            cfg = preset("tiny")
            torch.manual_seed(0)
            model = build_model(cfg).to(dev)
            idx = torch.randint(0, cfg.vocab_size, (2, 32), device=dev)
            with autocast():
                eager = model(idx)
                explain = torch._dynamo.explain(model)(idx)
                compiled = torch.compile(model)(idx)
            eager = eager[0] if isinstance(eager, tuple) else eager
            compiled = compiled[0] if isinstance(compiled, tuple) else compiled
            err = rel_err(compiled, eager)
            print(f"4. torch.compile of the tiny model, {name}: rel. error {err:.1e} vs eager, "
                  f"{explain.graph_break_count} graph breaks ({'ok' if err < bound else 'FAILED'})")  # fmt: skip
            for reason in sorted({str(b.reason).splitlines()[0] for b in explain.break_reasons}):
                print(f"   break: {reason[:150]}")
        M._grouped_mm = plain


if __name__ == "__main__":
    main()
