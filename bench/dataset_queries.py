"""Time and peak memory of the out-of-core query suite (analysis.dataset.queries) vs routing rows.

Synthesises routing datasets of increasing size (Parquet shards written per the dataset layout with
numpy/pyarrow: skewed routing where each label and token id prefers some experts, two steps of the same tokens),
runs the whole suite on each in a fresh process (DuckDB with a memory limit), and reports seconds and peak RSS
per size. At sizes where it fits, the same numbers are computed in memory (the dataset read into a RoutingTrace,
then analysis.metrics / analysis.specialization) as the baseline, in its own process too.

    python bench/dataset_queries.py [--rows 1e6 1e7 1e8] [--baseline-max 1e7] [--layers 8] [--experts 64]
        [--top-k 8] [--memory-limit 1GB] [--threads 2] [--tmp DIR]

Rows are routing rows over both steps: tokens x layers x top-k x 2. The data is written under --tmp (default:
the system temp folder) and deleted afterwards.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from analysis.dataset import layout
from analysis.dataset.writer import DatasetWriter, ShardData

LABELS = np.array(["prose", "code", "math", "data"])
VOCAB = 5000


def synthesize(
    root: Path, n_tokens: int, L: int, E: int, K: int, steps=(1000, 2000), shard_tokens: int = 200_000, seed: int = 0
) -> dict:
    """Write a dataset of ~n_tokens tokens in documents of 100-1000 tokens (random labels, Zipf token ids),
    routed at every step in `steps` (each step a noisier copy of the last one's router logits)."""
    rng = np.random.default_rng(seed)
    global_LE = rng.normal(0, 0.6, size=(L, E)).astype(np.float32)
    label_DLE = rng.normal(0, 0.4, size=(len(LABELS), L, E)).astype(np.float32)
    token_VLE = rng.normal(0, 1.0, size=(VOCAB, L, E)).astype(np.float32)
    words = np.array([f"w{i} " for i in range(VOCAB)], dtype=object)
    word_len = np.array([len(w) for w in words], np.int32)
    writer = DatasetWriter(root, {"name": "synthetic", "kind": "synthetic", "path": None}, steps=list(steps))
    meta = {"n_layers": L, "n_experts": E, "top_k": K, "layer_blocks": list(range(L)), "config": None}
    doc0, done, shard = 0, 0, 0
    while done < n_tokens:
        lengths = []
        while sum(lengths) < min(shard_tokens, n_tokens - done):
            lengths.append(int(rng.integers(100, 1001)))
        lengths[-1] -= max(0, sum(lengths) - (n_tokens - done))
        lengths = [n for n in lengths if n > 0]
        T, N = sum(lengths), len(lengths)
        doc_index = np.repeat(np.arange(doc0, doc0 + N), lengths)
        position = np.concatenate([np.arange(n) for n in lengths]).astype(np.int32)
        label_N = rng.integers(0, len(LABELS), size=N)
        label_T = np.repeat(label_N, lengths)
        token_T = (np.minimum(rng.zipf(1.2, size=T), VOCAB) - 1).astype(np.int32)
        start = np.cumsum(word_len[token_T]) - word_len[token_T]  # offsets in all the shard's text
        doc_first = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        char_start = start - np.repeat(start[doc_first], lengths)  # offsets in the token's document
        texts = ["".join(words[token_T[a : a + n]]) for a, n in zip(doc_first, lengths)]
        docs = pa.table(
            {
                "doc_index": np.arange(doc0, doc0 + N),
                "doc_id": [f"doc{i}" for i in range(doc0, doc0 + N)],
                "label": LABELS[label_N].tolist(),
                "text": texts,
                "n_tokens": np.array(lengths, np.int32),
            },
            schema=layout.DOCS_SCHEMA,
        )
        tokens = pa.table(
            {
                "doc_index": doc_index,
                "position": position,
                "token_id": token_T,
                "token_text": words[token_T],
                "char_start": char_start.astype(np.int32),
                "char_end": (char_start + word_len[token_T] - 1).astype(np.int32),  # without the trailing space
                "label": LABELS[label_T].tolist(),
            },
            schema=layout.TOKENS_SCHEMA,
        )
        routing, token_layer = {}, {}
        for layer in range(L):
            logits = global_LE[layer] + label_DLE[label_T, layer] + token_VLE[token_T, layer]  # (T, E)
            logits = logits + rng.gumbel(size=logits.shape).astype(np.float32)
            for step in steps:
                top = np.argpartition(-logits, K - 1, axis=1)[:, :K]
                top = np.take_along_axis(top, np.argsort(-np.take_along_axis(logits, top, 1), axis=1), 1)  # by rank
                p = np.exp(logits - logits.max(axis=1, keepdims=True))
                p /= p.sum(axis=1, keepdims=True)
                w = np.take_along_axis(p, top, 1).astype(np.float32)
                routing[(step, layer)] = pa.table(
                    {
                        "doc_index": np.repeat(doc_index, K),
                        "position": np.repeat(position, K),
                        "rank": np.tile(np.arange(K, dtype=np.int8), T),
                        "expert": top.astype(np.int16).ravel(),
                        "weight": w.ravel(),
                        "score": w.ravel(),
                        "biased_score": w.ravel(),
                        "bias_flip": rng.random(T * K) < 0.03,
                    },
                    schema=layout.ROUTING_SCHEMA,
                )
                entropy = -(p * np.log(np.maximum(p, 1e-30))).sum(axis=1).astype(np.float32)
                token_layer[(step, layer)] = pa.table(
                    {
                        "doc_index": doc_index,
                        "position": position,
                        "shared_share": np.zeros(T, np.float32),
                        "entropy": entropy,
                    },
                    schema=layout.TOKEN_LAYER_SCHEMA,
                )
                logits = logits + 0.5 * rng.gumbel(size=logits.shape).astype(np.float32)  # the next step
        data = ShardData(docs, tokens, routing, token_layer, {}, doc0, doc0 + N)
        writer.write_shard(layout.shard_id(0, shard), data, meta)
        doc0, done, shard = doc0 + N, done + T, shard + 1
    return writer.finalize(complete=True)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def run_suite(root: str, memory_limit: str, threads: int, temp: str) -> dict:
    """The whole query suite on one dataset; {query: seconds} plus the peak RSS of this process."""
    from analysis.dataset.queries import DatasetQueries, QueryConfig

    q = DatasetQueries(root, QueryConfig(memory_limit=memory_limit, threads=threads, temp_directory=temp))
    step = q.steps()[-1]
    times, peaks = {}, {}
    suite = [
        ("load + summary (incl. consecutive top-1)", lambda: q.summary(step)),
        ("coactivation (all pairs, lift)", lambda: q.coactivation(step)),
        ("domain specialization", lambda: q.domain_specialization(step)),
        ("mutual information (domain, token id)", lambda: q.mutual_information(step)),
        ("token specialization", lambda: q.token_specialization(step)),
        ("consecutive (any top-k)", lambda: q.consecutive(step, "any")),
        ("saturation (2 steps)", lambda: q.saturation()),
    ]
    start = time.perf_counter()
    for name, fn in suite:
        t0 = time.perf_counter()
        fn()
        times[name] = time.perf_counter() - t0
        peaks[name] = peak_rss_mb()  # the peak so far: the query that raises it is the one that needs it
    times["whole suite"] = time.perf_counter() - start
    q.close()
    return {"times": times, "peak_rss_mb": peak_rss_mb(), "peaks": peaks}


def run_baseline(root: str) -> dict:
    """The same numbers in memory: every step read into a RoutingTrace, then the in-memory functions."""
    from analysis import metrics, specialization, tables
    from analysis.dataset.reader import open_dataset

    start = time.perf_counter()
    ds = open_dataset(root)
    traces = {s: ds.to_trace(None, s) for s in ds.steps}
    trace = traces[ds.steps[-1]]
    e, tok, E = trace.experts_array(), trace.tokens, trace.n_experts
    metrics.summary(trace.routing, E, tok)
    metrics.coactivation(e, E)
    specialization.domain_specialization(e, tok, E)
    specialization.mi_expert_domain(e, tok, E), specialization.mi_expert_token(e, tok, E)
    specialization.token_specialization(e, tok, E)
    metrics.consecutive_same_expert(e, tok, mode="any", n_shuffles=0)
    tables.saturation_table({s: t.experts_array() for s, t in traces.items()})
    return {"times": {"whole suite": time.perf_counter() - start}, "peak_rss_mb": peak_rss_mb()}


def child(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=float, nargs="+", default=[1e6, 1e7, 1e8])
    p.add_argument("--baseline-max", type=float, default=1e7, help="largest size also run in memory")
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--experts", type=int, default=64)
    p.add_argument("--top-k", type=int, default=8)
    p.add_argument("--memory-limit", default="1GB")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tmp", default=None, help="folder for the synthetic data (deleted afterwards)")
    p.add_argument("--suite", default=None, help=argparse.SUPPRESS)  # child process: run the suite on DIR
    p.add_argument("--baseline", default=None, help=argparse.SUPPRESS)  # child process: the in-memory baseline
    args = p.parse_args()
    if args.suite:
        print(json.dumps(run_suite(args.suite, args.memory_limit, args.threads, args.suite + ".spill")))
        return
    if args.baseline:
        print(json.dumps(run_baseline(args.baseline)))
        return
    L, E, K = args.layers, args.experts, args.top_k
    work = Path(tempfile.mkdtemp(prefix="moe-dataset-bench-", dir=args.tmp))
    print(f"machine: {platform.processor() or platform.machine()}, {platform.system()}; L={L} E={E} K={K}, 2 steps; "
          f"DuckDB memory_limit={args.memory_limit}, threads={args.threads}")  # fmt: skip
    rows_out = []
    try:
        for rows in args.rows:
            n_tokens = int(rows // (L * K * 2))
            root = work / f"ds{int(rows)}"
            t0 = time.perf_counter()
            synthesize(root, n_tokens, L, E, K)
            size_mb = sum(f.stat().st_size for f in root.rglob("*") if f.is_file()) / 1e6
            made = time.perf_counter() - t0
            common = ["--memory-limit", args.memory_limit, "--threads", str(args.threads)]
            ours = child(["--suite", str(root), *common])
            base = child(["--baseline", str(root)]) if rows <= args.baseline_max else None
            row = {"rows": n_tokens * L * K * 2, "tokens": n_tokens, "disk_mb": size_mb, "ours": ours, "base": base}
            rows_out.append(row)
            print(f"\n{row['rows']:,} routing rows ({n_tokens:,} tokens, {size_mb:,.0f} MB on disk, written in "
                  f"{made:.0f} s)")  # fmt: skip
            for name, sec in ours["times"].items():
                peak = ours["peaks"].get(name)
                print(f"  {name:<45} {sec:8.2f} s" + (f"   peak RSS so far {peak:,.0f} MB" if peak else ""))
            print(f"  peak RSS {ours['peak_rss_mb']:,.0f} MB")
            if base:
                print(f"  in memory: {base['times']['whole suite']:.2f} s, peak RSS {base['peak_rss_mb']:,.0f} MB")
            shutil.rmtree(root, ignore_errors=True)
            shutil.rmtree(str(root) + ".spill", ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(
        "\n| routing rows | tokens | on disk | DuckDB suite | peak RSS | in memory | in-memory peak RSS | time ratio |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows_out:
        o, b = r["ours"], r["base"]
        mem = f"{b['times']['whole suite']:.1f} s | {b['peak_rss_mb']:,.0f} MB" if b else "— | —"
        ratio = f"{o['times']['whole suite'] / b['times']['whole suite']:.2f}" if b else "—"
        print(f"| {r['rows']:,} | {r['tokens']:,} | {r['disk_mb']:,.0f} MB | {o['times']['whole suite']:.1f} s | "
              f"{o['peak_rss_mb']:,.0f} MB | {mem} | {ratio} |")  # fmt: skip


if __name__ == "__main__":
    main()
