"""How fast the app's pages render on a big routing dataset, in chromium (`moe-explorer app --dataset DIR`).

Synthesises a dataset of --tokens tokens (bench/dataset_queries.py's generator; the shipped model's shape by
default: 4 MoE layers, 16 experts, top-2, one step), serves the app on it and times, for Expert heatmaps and
Expert profile: the first open (cold: DuckDB counts every token) and --repeats reloads (warm: the aggregates
are kept), from navigation until the page's last chart or table is drawn and Streamlit is idle (that wait
starts 0.3 s after the page is drawn, so a reload's figure includes 0.3 s). Then --repeats rounds of warm
switches: every page opened from the one before it by its sidebar link, as a user moves through the app (no
browser reload), until the script is idle and the page's charts are drawn (bench/page_timings.py's test).

    python bench/dataset_app.py [--tokens 5000000] [--repeats 3] [--tmp DIR | --data DIR]

The data is written under --tmp (default: the system temp folder) and deleted afterwards; with --data DIR it
is written there once and kept, and a later run with the same --data reuses it.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.dataset_queries import synthesize  # noqa: E402
from bench.page_timings import go  # noqa: E402
from moe_core.paths import default_run_path  # noqa: E402
from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS, serve, settle  # noqa: E402

PAGES = {  # page -> what is drawn last
    "heatmaps": "Top-1 expert flow between consecutive layers",
    "expert?layer=1&expert=3": "Across layers (top-1)",
}
SWITCHES = [  # sidebar label, page title, a selector that must be drawn, plotly charts drawn at least
    ("Overview", None, "[data-testid='stTable']", 0),
    ("Token routing", "Token routing", None, 1),
    ("Expert heatmaps", "Expert heatmaps", None, 3),
    ("Expert profile", "Expert profile", None, 1),
    ("Router geometry", "Router geometry", None, 0),
    ("Training dynamics", "Training dynamics", None, 0),
]


def timed_open(page, url: str, last: str) -> float:
    start = time.perf_counter()
    page.goto(url)
    page.get_by_text(last).first.wait_for(timeout=600_000)
    settle(page, timeout=600_000)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=5_000_000)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--experts", type=int, default=16)
    p.add_argument("--top-k", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--tmp", default=None)
    p.add_argument("--data", default=None, help="keep the dataset in DIR (reused when DIR has one)")
    args = p.parse_args()
    from playwright import sync_api

    work = Path(tempfile.mkdtemp(prefix="moe-dataset-app-", dir=args.tmp))
    try:
        t0 = time.perf_counter()
        root = Path(args.data) if args.data else work / "big"
        if not (root / "manifest.json").exists():
            synthesize(root, args.tokens, args.layers, args.experts, args.top_k, steps=(1000,))
        rows = args.tokens * args.layers * args.top_k
        print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
              f"dataset: {args.tokens:,} tokens, {rows:,} routing rows, L={args.layers} E={args.experts} "
              f"K={args.top_k} (ready in {time.perf_counter() - t0:.0f} s)")  # fmt: skip
        os.environ["MOE_EXPLORER_DATASET"] = str(root)
        with serve(default_run_path(), work) as url, sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            print("| page | first open (cold) | warm reload, median of", args.repeats, "| warm runs |")
            print("|---|---:|---:|---|")
            for path, last in PAGES.items():
                cold = timed_open(page, f"{url}/{path}", last)
                warm = [timed_open(page, f"{url}/{path}", last) for _ in range(args.repeats)]
                runs = ", ".join(f"{w:.2f}" for w in warm)
                print(f"| {path} | {cold:.1f} s | {statistics.median(warm):.2f} s | {runs} |")
            switches = {label: [] for label, *_ in SWITCHES}
            for _ in range(args.repeats):
                for label, *ready in SWITCHES[1:] + SWITCHES[:1]:  # each from the page before it
                    switches[label].append(go(page, label, *ready))
            print(f"\nWarm switches (load average {os.getloadavg()[0]:.1f}):\n")
            print("| page | warm switch, median of", args.repeats, "| runs |")
            print("|---|---:|---|")
            for label, times in switches.items():
                runs = ", ".join(f"{t:.2f}" for t in times)
                print(f"| {label} | {statistics.median(times):.2f} s | {runs} |")
            browser.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
