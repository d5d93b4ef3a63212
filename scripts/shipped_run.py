"""Turn a trained run into the embedded default (sample_data/default_run): a slim copy with the final
weights, routing traces over training, and precomputed projections.

    python -m scripts.shipped_run --run runs/default --out sample_data/default_run

1. the slim copy: run.json, tokenizer, full history, a subset of the held-out eval docs, and only the
   final checkpoint's weights, stored in bf16 (half the bytes; everything below is recorded from
   these bf16 weights, so the shipped traces and projections match the shipped checkpoint exactly);
2. routing traces of the eval docs at every checkpoint of the source run: the final one (from the
   shipped weights) keeps router inputs for projections; earlier ones keep the tidy tables only, with
   gate weights and scores rounded to float16 precision (enough for saturation and "how routing
   evolved", a third of the bytes);
3. PCA and UMAP projections of every MoE layer at the final checkpoint, in the run's projection cache.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from analysis.projections import ProjectionParams, project, warm_up_umap
from analysis.recording import record
from analysis.trace import RoutingTrace, load
from moe_core.run import Run, load_run, load_weights, save_weights

FINAL_HIDDEN = 5000  # router inputs kept for the projections of the shipped run
EVAL_DOCS_PER_LABEL = 16  # eval docs shipped per label
EVAL_DOC_CHARS = 1000  # each shipped eval doc is cut to this many characters


def compact(trace: RoutingTrace) -> RoutingTrace:
    """Drop the arrays and round the float columns to float16 precision (for intermediate checkpoints)."""
    trace.scores = trace.hidden = trace.hidden_rows = None
    for table, cols in (
        (trace.routing, ("weight", "score", "biased_score")),
        (trace.token_layer, ("shared_share", "entropy")),
    ):
        for col in cols:
            table[col] = table[col].to_numpy().astype(np.float16).astype(np.float32)
    return trace


def export_slim(run: Run, out: Path) -> Run:
    """Copy what the app needs; the final weights in bf16, no optimizer state."""
    if out.exists():
        shutil.rmtree(out)
    (out / "eval").mkdir(parents=True)
    (out / "checkpoints").mkdir()
    for name in ("run.json", "tokenizer.json"):
        shutil.copy2(run.path / name, out / name)
    shutil.copytree(run.path / "history", out / "history")
    per_label: dict[str, int] = {}
    with open(out / "eval" / "docs.jsonl", "w", encoding="utf-8") as f:
        for doc in run.eval_docs():
            if per_label.get(doc.label, 0) < EVAL_DOCS_PER_LABEL:
                per_label[doc.label] = per_label.get(doc.label, 0) + 1
                row = {
                    "doc_id": doc.doc_id,
                    "label": doc.label,
                    "source": doc.source,
                    "text": doc.text[:EVAL_DOC_CHARS],
                }
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    final = run.checkpoints()[-1]
    tensors, metadata = load_weights(run.weights_path(final))
    bf16 = {k: v.bfloat16() if v.is_floating_point() else v for k, v in tensors.items()}
    save_weights(out / "checkpoints" / run.weights_path(final).name, bf16, metadata)
    return load_run(out)


def record_traces(source: Run, shipped: Run, log=print) -> None:
    """Eval-doc traces at every checkpoint of `source`; the last one from the shipped weights."""
    docs, tok = shipped.eval_docs(), shipped.tokenizer()
    steps = source.checkpoints()
    for step in steps:
        start = time.perf_counter()
        final = step == steps[-1]
        model = shipped.load_model(step) if final else source.load_model(step)
        trace = record(
            model, tok, docs, max_hidden=FINAL_HIDDEN if final else 0, meta={"run": shipped.name, "step": step}
        )
        if final:
            trace.scores = None  # the app re-records user text; the eval trace's tables suffice
        else:
            compact(trace)
        trace.save(shipped.trace_path(step))
        log(f"step {step}: {trace.n_tokens} tokens traced in {time.perf_counter() - start:.1f} s")


def precompute_projections(run: Run, methods: tuple[str, ...] = ("pca", "umap"), log=print) -> None:
    """PCA and UMAP of every MoE layer at the final checkpoint, into RUN/projections."""
    step = run.checkpoints()[-1]
    trace = load(run.trace_path(step))
    if "umap" in methods:
        log(f"warming up UMAP (numba compilation): {warm_up_umap():.1f} s")
    for layer in range(trace.n_layers):
        for method in methods:
            proj = project(trace, layer, params=ProjectionParams(method=method), cache_dir=run.path / "projections")
            n, sil = len(proj.coords), proj.silhouette
            log(f"layer {layer} {method}: {n} points, silhouette {sil:.3f}, {proj.seconds:.1f} s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="the trained run directory (all checkpoints)")
    p.add_argument("--out", required=True, help="where to write the slim copy (replaced)")
    args = p.parse_args(argv)
    source = load_run(args.run)
    shipped = export_slim(source, Path(args.out))
    record_traces(source, shipped)
    precompute_projections(shipped)
    files = [f for f in Path(args.out).rglob("*") if f.is_file()]
    print(f"wrote {args.out}: {len(files)} files, {sum(f.stat().st_size for f in files) / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
