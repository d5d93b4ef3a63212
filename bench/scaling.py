"""How cost grows, on this machine, in one run: layer time vs tokens and vs experts, recorder memory per 1k
tokens, UMAP time vs points.

    python bench/scaling.py                          # everything (CPU: several minutes)
    python bench/scaling.py --parts tokens experts   # a subset: tokens experts recorder umap
    python bench/scaling.py --device cuda            # layer parts on a GPU (bf16)

- tokens: the `default` preset's MoE layer (D 128, E 16 of hidden 128, K 2, one shared expert), grouped
  dispatch, forward (inference, as the app runs it) and forward+backward, at 2k → 131k tokens; 3 repeats
  (1 at 131k), median. Time per 1k tokens shows whether it stays linear.
- experts: fine-grained experts at constant active compute: E = 4 → 64 with E·H = 2048 and K/E = 1/4 (so
  K·H = 512 per token), D 128, 8k tokens, forward+backward; grouped vs loop dispatch interleaved.
- recorder: bytes of a recorded trace per 1k tokens in memory (DataFrames deep + arrays) and on disk
  (`RoutingTrace.save`), without router inputs (max_hidden 0) and with all of them (the shipped run, else
  the default preset untrained).
- umap: `analysis.projections.project(method="umap")` at 1k, 5k, 20k points, warm (after
  `warm_up_umap()` in the same process), PCA to 32 dims first.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from moe_core import preset
from moe_core.moe import MoELayer

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "sample_data" / "default_run"


def timed(fn, device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def fwd(layer, x):
    with torch.no_grad():
        layer(x)


def fwd_bwd(layer, x):
    layer(x).float().square().mean().backward()


def part_tokens(device: str, dtype) -> None:
    cfg = dataclasses.replace(preset("default").moe, dropout=0.0)
    D = preset("default").n_embd
    torch.manual_seed(0)
    layer = MoELayer(D, cfg).to(device, dtype)
    print(f"\n## layer time vs tokens (default preset's MoE layer, D {D}, E {cfg.n_experts}, H {cfg.expert_hidden}, "
          f"K {cfg.top_k}, grouped, {device} {str(dtype).split('.')[-1]})")  # fmt: skip
    print(f"{'tokens':>8} {'forward ms':>11} {'per 1k':>8} {'fwd+bwd ms':>11} {'per 1k':>8}")
    for T in (2048, 8192, 32768, 131072):
        x = torch.randn(T // 128, 128, D, device=device, dtype=dtype, requires_grad=True)
        repeats = 1 if T >= 131072 else 3
        fwd(layer, x), fwd_bwd(layer, x)  # warm-up
        f = statistics.median(timed(lambda x=x: fwd(layer, x), device) for _ in range(repeats)) * 1e3
        fb = statistics.median(timed(lambda x=x: fwd_bwd(layer, x), device) for _ in range(repeats)) * 1e3
        print(f"{T:>8,} {f:>11.1f} {f / T * 1e3:>8.2f} {fb:>11.1f} {fb / T * 1e3:>8.2f}", flush=True)


def part_experts(device: str, dtype, tokens: int = 8192) -> None:
    D = preset("default").n_embd
    print(f"\n## layer time vs experts (fine-grained: E·H = 2048, K = E/4, D {D}, {tokens:,} tokens, fwd+bwd, "
          f"{device})")  # fmt: skip
    print(f"{'E':>4} {'H':>5} {'K':>3} {'grouped ms':>11} {'loop ms':>9} {'loop/grouped':>13}")
    for E in (4, 8, 16, 32, 64):
        base = preset("default").moe
        cfg = dataclasses.replace(base, n_experts=E, expert_hidden=2048 // E, top_k=E // 4, dropout=0.0, n_shared=0)
        torch.manual_seed(0)
        layers = {
            "grouped": MoELayer(D, cfg).to(device, dtype),
            "loop": MoELayer(D, dataclasses.replace(cfg, dispatch="loop")).to(device, dtype),
        }
        x = torch.randn(tokens // 128, 128, D, device=device, dtype=dtype, requires_grad=True)
        times: dict[str, list[float]] = {k: [] for k in layers}
        for round_ in range(4):  # interleaved; round 0 is warm-up
            for name, layer in layers.items():
                t = timed(lambda layer=layer, x=x: fwd_bwd(layer, x), device)
                if round_:
                    times[name].append(t)
        g, lo = (statistics.median(times[k]) * 1e3 for k in ("grouped", "loop"))
        print(f"{E:>4} {2048 // E:>5} {E // 4:>3} {g:>11.1f} {lo:>9.1f} {lo / g:>12.2f}x", flush=True)


def part_recorder(tokens: int = 4000) -> None:
    from analysis.recording import record
    from moe_core import build_model
    from moe_core.corpus import Doc

    if SHIPPED.is_dir():
        from moe_core.run import load_run

        run = load_run(SHIPPED)
        model, tok, what = run.load_model().eval(), run.tokenizer(), "shipped run"
        text = "\n\n".join(d.text for d in run.eval_docs())
    else:
        from moe_core.tokenizer import train_tokenizer

        cfg = preset("default")
        text = (ROOT / "sample_data" / "seed_sentences.txt").read_text() * 20
        model, tok, what = build_model(cfg).eval(), train_tokenizer([text], cfg.vocab_size), "default preset"
    from moe_core.tokenizer import encode_with_offsets

    while len(text) < 20 * tokens:
        text += "\n\n" + text
    ids, offsets = encode_with_offsets(tok, text[: 20 * tokens])
    text = text[: offsets[tokens - 10][1]]  # a little under `tokens` (the recorder refuses more)
    docs = [Doc(text=text, label="x", source="bench", doc_id="d")]
    print(f"\n## recorder memory per 1k tokens ({what}, {tokens:,} tokens recorded)")
    print(f"{'router inputs':>14} {'memory KB/1k':>13} {'disk KB/1k':>11}  breakdown in memory (KB/1k)")
    for max_hidden in (0, tokens):
        trace = record(model, tok, docs, max_hidden=max_hidden)
        n = trace.n_tokens
        parts = {
            "tokens": trace.tokens.memory_usage(deep=True).sum(),
            "routing": trace.routing.memory_usage(deep=True).sum(),
            "token_layer": trace.token_layer.memory_usage(deep=True).sum(),
            "scores": 0 if trace.scores is None else trace.scores.nbytes,
            "hidden": 0 if trace.hidden is None else trace.hidden.nbytes,
        }
        with tempfile.TemporaryDirectory() as tmp:
            path = trace.save(Path(tmp) / "t.parquet")
            disk = sum(f.stat().st_size for f in Path(tmp).iterdir())
        del path
        mem = sum(parts.values())
        detail = ", ".join(f"{k} {v / n:.1f}" for k, v in parts.items())
        label = f"{len(trace.hidden_rows) if trace.hidden_rows is not None else 0:,}"
        print(f"{label:>14} {mem / n:>13.1f} {disk / n:>11.1f}  {detail}", flush=True)


def part_umap() -> None:
    import numpy as np

    from analysis import projections as P
    from analysis.trace import load

    t = P.warm_up_umap()
    print(f"\n## UMAP time vs points (warm: warm_up_umap() took {t:.1f} s first; PCA 32 dims, n_neighbors 15)")
    if SHIPPED.is_dir():
        from moe_core.run import load_run

        r = load_run(SHIPPED)
        trace = load(r.trace_path(r.latest_step()))
        base = trace.hidden[:, 0].astype(np.float32)
    else:
        base = np.random.default_rng(0).standard_normal((5000, 128)).astype(np.float32)
    rng = np.random.default_rng(0)
    print(f"{'points':>8} {'seconds':>8} {'ms / point':>11}")
    for n in (1000, 5000, 20000):
        # the shipped eval trace keeps 5,000 router inputs: above that, jittered copies stand in for more tokens
        X = base[rng.integers(0, len(base), n)] + rng.normal(0, 0.05, (n, base.shape[1])).astype(np.float32)
        t0 = time.perf_counter()
        P._fit(X, P.ProjectionParams(method="umap", max_points=n))
        dt = time.perf_counter() - t0
        print(f"{n:>8,} {dt:>8.2f} {dt / n * 1e3:>11.3f}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", nargs="+", default=["tokens", "experts", "recorder", "umap"])
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, {args.device}, "
          f"load average {os.getloadavg()[0]:.2f}")  # fmt: skip
    if "tokens" in args.parts:
        part_tokens(args.device, dtype)
    if "experts" in args.parts:
        part_experts(args.device, dtype)
    if "recorder" in args.parts:
        part_recorder()
    if "umap" in args.parts:
        part_umap()
    print(f"# load average after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
