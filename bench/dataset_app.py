"""How fast the app's pages render on a big routing dataset, in chromium (`moe-explorer app --dataset DIR`).

Synthesises a dataset of --tokens tokens (bench/dataset_queries.py's generator; the shipped model's shape by
default: 4 MoE layers, 16 experts, top-2, one step), serves the app on it and times, for Expert heatmaps and
Expert profile: the first open (cold: DuckDB counts every token) and --repeats reloads (warm: the aggregates
are kept), from navigation until the page's last chart or table is drawn and Streamlit is idle.

    python bench/dataset_app.py [--tokens 5000000] [--repeats 3] [--tmp DIR]

The data is written under --tmp (default: the system temp folder) and deleted afterwards.
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
from moe_core.paths import default_run_path  # noqa: E402
from tests.e2e.conftest import CHROMIUM, serve, settle  # noqa: E402

PAGES = {  # page -> what is drawn last
    "heatmaps": "Top-1 expert flow between consecutive layers",
    "expert?layer=1&expert=3": "Across layers (top-1)",
}


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
    args = p.parse_args()
    from playwright import sync_api

    work = Path(tempfile.mkdtemp(prefix="moe-dataset-app-", dir=args.tmp))
    try:
        t0 = time.perf_counter()
        root = work / "big"
        synthesize(root, args.tokens, args.layers, args.experts, args.top_k, steps=(1000,))
        rows = args.tokens * args.layers * args.top_k
        print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs; dataset: {args.tokens:,} tokens, {rows:,} "
              f"routing rows, L={args.layers} E={args.experts} K={args.top_k} (written in "
              f"{time.perf_counter() - t0:.0f} s)")  # fmt: skip
        os.environ["MOE_EXPLORER_DATASET"] = str(root)
        with serve(default_run_path(), work) as url, sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            print("| page | first open (cold) | warm reload, median of", args.repeats, "| warm runs |")
            print("|---|---:|---:|---|")
            for path, last in PAGES.items():
                cold = timed_open(page, f"{url}/{path}", last)
                warm = [timed_open(page, f"{url}/{path}", last) for _ in range(args.repeats)]
                runs = ", ".join(f"{w:.2f}" for w in warm)
                print(f"| {path} | {cold:.1f} s | {statistics.median(warm):.2f} s | {runs} |")
            browser.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
