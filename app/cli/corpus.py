"""`moe-explorer corpus`: build the built-in multi-domain corpus into a folder (moe_core.corpus.build_corpus)."""

from __future__ import annotations

import argparse
import time

from moe_core.corpus import SIZES, build_corpus


def add_corpus_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output directory (train.jsonl, val.jsonl, manifest.json)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--size", choices=sorted(SIZES), default="default", help="~2.5 MB or ~300 kB per domain")


def run_corpus(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    manifest = build_corpus(args.out, seed=args.seed, size=args.size)
    seconds = time.perf_counter() - start
    for label in manifest["labels"]:
        tr, va = manifest["train"].get(label, {}), manifest["val"].get(label, {})
        print(
            f"{label:>6}: {tr.get('docs', 0):5d} train docs ({tr.get('chars', 0) / 1e6:.2f} MB), "
            f"{va.get('docs', 0):4d} val docs ({va.get('chars', 0) / 1e6:.2f} MB)"
        )
    total = manifest["total"]
    print(f"wrote {total['docs']} docs, {total['chars'] / 1e6:.2f} M chars to {args.out} in {seconds:.1f} s")
    return 0
