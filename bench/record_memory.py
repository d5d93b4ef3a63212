"""Peak memory and speed of `moe-explorer record` (streaming into a dataset) vs the in-memory recorder.

    python bench/record_memory.py                       # 0.2M, 1M and 5M tokens; baseline up to 1M
    python bench/record_memory.py --sizes 200000 --baseline-max 200000

Corpora: the shipped run's eval documents repeated until the target token count (each copy a new JSONL
row with its own doc_id), written to a temp folder. Every measurement is a fresh subprocess, one torch
thread, on the shipped model (sample_data/default_run):
- ours: `python -m app.cli record CORPUS.jsonl --out DIR --no-progress --threads 1` (default settings);
- baseline: the whole corpus through `analysis.recording.record` at once (what `moe-explorer route` and
  `source.record` do today), then `trace.save` (no token limit), only up to --baseline-max tokens.
Peak RSS is the child's ru_maxrss (getrusage(RUSAGE_CHILDREN) in a wrapper process that runs only that
child). Prints one table row per run as it finishes, then the ratios measured in this run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / "sample_data" / "default_run"

BASELINE = """
import sys, json, torch
torch.set_num_threads(1)
from moe_core.run import load_run
from analysis.recording import record
from moe_core.corpus import Doc
run = load_run(sys.argv[1])
docs = [Doc(r["text"], r["label"], "bench", i) for i, r in enumerate(map(json.loads, open(sys.argv[2])))]
trace = record(run.load_model(run.latest_step(), device="cpu"), run.tokenizer(), docs, max_tokens=None)
trace.save(sys.argv[3])
print(trace.n_tokens)
"""

WRAPPER = """
import resource, subprocess, sys, time
t = time.perf_counter()
rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode
print(rc, time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def eval_docs_with_tokens() -> list[tuple[dict, int]]:
    """(JSONL row, token count) of each shipped eval document."""
    from moe_core.run import load_run
    from moe_core.tokenizer import encode_with_offsets

    run = load_run(RUN)
    tok = run.tokenizer()
    return [({"text": d.text, "label": d.label}, len(encode_with_offsets(tok, d.text)[0])) for d in run.eval_docs()]


def write_corpus(path: Path, tokens: int, docs: list[tuple[dict, int]]) -> int:
    """Repeat the eval docs into `path` until `tokens` tokens; the token count written."""
    total = i = 0
    with open(path, "w", encoding="utf-8") as f:
        while total < tokens:
            row, n = docs[i % len(docs)]
            f.write(json.dumps({**row, "doc_id": f"copy{i // len(docs)}-{i % len(docs)}"}) + "\n")
            total += n
            i += 1
    return total


def measure(cmd: list[str]) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of `cmd` run alone in a fresh wrapper process."""
    out = subprocess.run([sys.executable, "-c", WRAPPER, *cmd], capture_output=True, text=True, cwd=ROOT, check=True)
    rc, seconds, maxrss_kb = out.stdout.split()
    if int(rc) != 0:
        raise SystemExit(f"failed ({rc}): {' '.join(cmd)}")
    return float(seconds), int(maxrss_kb) / 1024


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[200_000, 1_000_000, 5_000_000])
    p.add_argument("--baseline-max", type=int, default=1_000_000, help="largest corpus the baseline records")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = p.parse_args()
    docs = eval_docs_with_tokens()
    rows = []
    print("| tokens | recorder | peak RSS (MB) | seconds | tokens/s | dataset / trace on disk (MB) |", flush=True)
    print("|---:|---|---:|---:|---:|---:|", flush=True)
    with tempfile.TemporaryDirectory(prefix="record-bench-") as tmp:
        tmp = Path(tmp)
        for size in args.sizes:
            corpus = tmp / f"corpus-{size}.jsonl"
            n = write_corpus(corpus, size, docs)
            runs = [("record (dataset)", [sys.executable, "-m", "app.cli", "record", str(corpus), "--out",
                                          str(tmp / f"ds-{size}"), "--no-progress", "--threads", "1"])]  # fmt: skip
            if size <= args.baseline_max:
                trace = tmp / f"trace-{size}.parquet"
                runs.append(("in memory (route)", [sys.executable, "-c", BASELINE, str(RUN), str(corpus), str(trace)]))
            for name, cmd in runs:
                seconds, rss = measure(cmd)
                out = tmp / (f"ds-{size}" if name.startswith("record") else f"trace-{size}.parquet")
                files = [out] if out.is_file() else [f for f in out.rglob("*") if f.is_file()]
                disk = sum(f.stat().st_size for f in files) / 2**20
                row = {"tokens": n, "recorder": name, "rss_mb": rss, "seconds": seconds, "tok_s": n / seconds}
                rows.append({**row, "disk_mb": disk})
                cells = f"{rss:,.0f} | {seconds:,.0f} | {n / seconds:,.0f} | {disk:,.1f}"
                print(f"| {n:,} | {name} | {cells} |", flush=True)
                for f in files:
                    f.unlink()  # keep the temp folder small: the 5M dataset is large
    print()
    by = {(r["tokens"], r["recorder"].split()[0]): r for r in rows}
    for n in sorted({r["tokens"] for r in rows}):
        ours, base = by.get((n, "record")), by.get((n, "in"))
        if ours and base:
            print(
                f"{n:,} tokens: peak RSS record/in-memory = {ours['rss_mb'] / base['rss_mb']:.2f}, "
                f"tokens/s record/in-memory = {ours['tok_s'] / base['tok_s']:.2f}"
            )
    ours = [r for r in rows if r["recorder"].startswith("record")]
    if len(ours) > 1:
        print(f"record peak RSS, largest/smallest corpus: {ours[-1]['rss_mb'] / ours[0]['rss_mb']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
