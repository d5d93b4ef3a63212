"""Recorder overhead on the default preset, CPU: a forward over ~2,000 tokens with and without the hooks.

    python bench/recorder_overhead.py [--repeats 15] [--run RUN]

Prints (all measured in this one process, interleaved): wall-clock median and min and process CPU-time
median of the repeats. On a busy shared machine the wall median is noise; wall min and CPU time (run with
--threads 1) are the figures least disturbed by other processes.
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
from analysis.recording import RoutingRecorder, record  # noqa: E402
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
    from moe_core.paths import default_run_path
    from moe_core.run import load_run

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


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call. CPU time is what the work cost, whatever
    else runs on the machine (with --threads 1; more threads add their spin-waiting to it)."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


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
    names = ("plain", "hooks_only", "hooks_and_result")
    wall = {name: [] for name in names}
    cpu = {name: [] for name in names}
    for _ in range(args.repeats):
        for fn in (plain, hooks_only, hooks_and_result):
            w, c = timed(fn)
            wall[fn.__name__].append(w)
            cpu[fn.__name__].append(c)
    stats = {
        "wall median": {n: statistics.median(v) for n, v in wall.items()},
        "wall min": {n: min(v) for n, v in wall.items()},  # least disturbed by other processes
        "CPU median": {n: statistics.median(v) for n, v in cpu.items()},
    }

    text = text_of_tokens(tok, 2000)
    record(model, tok, text, max_hidden=2000)  # warm-up
    e2e = [timed(lambda: record(model, tok, text, max_hidden=2000)) for _ in range(args.repeats)]
    n_tokens = len(encode_with_offsets(tok, text)[0])

    print(f"model: {what}; torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    print(f"forward of {B}x{S} = {B * S} tokens, {args.repeats} interleaved repeats (ms):")
    print(f"  {'':<22}" + "".join(f"{k:>14}" for k in stats))
    for name, label in zip(names, ("plain forward", "with recorder hooks", "hooks + result()")):
        print(f"  {label:<22}" + "".join(f"{v[name] * 1e3:14.1f}" for v in stats.values()))
    for name, label in zip(names[1:], ("overhead: hooks", "overhead: + result()")):
        print(f"  {label:<22}" + "".join(f"{v[name] / v['plain'] - 1:+14.1%}" for v in stats.values()))
    print("  (target: overhead <= +10%)")
    e2e_wall, e2e_cpu = [w for w, _ in e2e], [c for _, c in e2e]
    print(
        f"end to end record() of {n_tokens} tokens (tokenize, window, forward, tables): wall median "
        f"{statistics.median(e2e_wall) * 1e3:.0f} ms, wall min {min(e2e_wall) * 1e3:.0f} ms, CPU median "
        f"{statistics.median(e2e_cpu) * 1e3:.0f} ms (target <= 500 ms)"
    )


if __name__ == "__main__":
    main()
