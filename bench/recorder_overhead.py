"""Recorder overhead on the default preset, CPU: a forward over ~2,000 tokens with and without the hooks.

    python bench/recorder_overhead.py [--repeats 15] [--run RUN]

Prints (all measured in this one process, interleaved; median and min of repeats: on a shared machine the
min is the figure least disturbed by other processes):
- plain forward of 16 windows x 128 tokens (2,048 tokens), no hooks;
- the same forward inside `RoutingRecorder` (hooks only), and hooks + `result()` (all post-processing:
  bias flips, entropy, shared share, moving to numpy);
- overhead ratios (target <= 10 %);
- end to end `record(model, tokenizer, text)` of a ~2,000-token text: tokenize with offsets, window, batch,
  forward with hooks, build the RoutingTrace tables (target <= 0.5 s on 2 cores).
Uses the run's tokenizer and weights when --run (or the shipped default run) exists, else a random-init
model of the default preset and a tokenizer trained here on Python stdlib sources (routing cost does not
depend on the weights).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import moe_core  # noqa: E402
from analysis.recorder import RoutingRecorder, record  # noqa: E402
from moe_core.tokenizer import encode_with_offsets, train_tokenizer  # noqa: E402


def stdlib_text(chars: int) -> str:
    import json
    import pathlib

    parts, total = [], 0
    for module in (json, pathlib, argparse, statistics):
        for path in sorted(Path(module.__file__).parent.glob("*.py")) if module is json else [Path(module.__file__)]:
            text = path.read_text(encoding="utf-8")
            parts.append(text)
            total += len(text)
            if total >= chars:
                return "\n".join(parts)
    return "\n".join(parts)


def setup(run_path: str | None):
    from moe_core.run import default_run_path, load_run

    path = Path(run_path) if run_path else default_run_path()
    if (path / "run.json").is_file():
        run = load_run(path)
        return run.load_model(), run.tokenizer(), f"run {run.name}"
    torch.manual_seed(0)
    cfg = moe_core.preset("default")
    model = moe_core.build_model(cfg).eval()
    tok = train_tokenizer([stdlib_text(400_000)], cfg.vocab_size)
    return model, tok, "random-init default preset, tokenizer trained on stdlib sources"


def text_of_tokens(tok, n_tokens: int) -> str:
    text = stdlib_text(200_000)
    ids, spans = encode_with_offsets(tok, text)
    return text[: spans[n_tokens - 1][1]]


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--run", default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model, tok, what = setup(args.run)
    cfg = model.config
    S = cfg.block_size
    B = -(-2000 // S)  # windows for ~2,000 tokens
    idx_BS = torch.randint(0, cfg.vocab_size, (B, S), generator=torch.Generator().manual_seed(0))

    def plain():
        with torch.inference_mode():
            model(idx_BS)

    def hooks_only():
        with torch.inference_mode(), RoutingRecorder(model, keep_hidden=True, max_hidden=2000):
            model(idx_BS)

    def hooks_and_result():
        with torch.inference_mode(), RoutingRecorder(model, keep_hidden=True, max_hidden=2000) as rec:
            model(idx_BS)
            rec.result()

    for fn in (plain, hooks_only, hooks_and_result):  # warm-up (allocator, first-call costs)
        fn()
    # interleave the variants so that drift of a shared machine hits all three alike
    t = {fn.__name__: [] for fn in (plain, hooks_only, hooks_and_result)}
    for _ in range(args.repeats):
        for fn in (plain, hooks_only, hooks_and_result):
            t[fn.__name__].append(median_time(fn, 1))
    med = {name: statistics.median(v) for name, v in t.items()}
    best = {name: min(v) for name, v in t.items()}  # least disturbed by other processes on a shared machine

    text = text_of_tokens(tok, 2000)
    record(model, tok, text, max_hidden=2000)  # warm-up
    e2e_times = [median_time(lambda: record(model, tok, text, max_hidden=2000), 1) for _ in range(args.repeats)]
    n_tokens = len(encode_with_offsets(tok, text)[0])

    print(f"model: {what}; torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    print(f"forward of {B}x{S} = {B * S} tokens, {args.repeats} interleaved repeats:  median | min")
    for name, label in (
        ("plain", "plain forward"),
        ("hooks_only", "with recorder hooks"),
        ("hooks_and_result", "hooks + result()"),
    ):
        line = f"  {label:<22} {med[name] * 1e3:8.1f} ms | {best[name] * 1e3:8.1f} ms"
        if name != "plain":
            line += f"   overhead {med[name] / med['plain'] - 1:+.1%} | {best[name] / best['plain'] - 1:+.1%}"
        print(line)
    print("  (target: overhead <= +10%)")
    print(
        f"end to end record() of {n_tokens} tokens (tokenize, window, forward, tables): "
        f"{statistics.median(e2e_times) * 1e3:.0f} ms | {min(e2e_times) * 1e3:.0f} ms (target <= 500 ms)"
    )


if __name__ == "__main__":
    main()
