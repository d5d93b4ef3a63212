"""`moe-explorer report [--run RUN] [--checkpoint STEP] [--text FILE ...] --out report.html`

A self-contained HTML report of the FILEs' routing (default: the run's held-out eval docs, or the eval trace
stored with the checkpoint). `--hf PATH --text FILE ...` reports on a local Hugging Face MoE model instead.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from app.cli.hf_args import trace_from_hf_args
from app.cli.model_source import (
    add_source_args,
    check_source,
    docs_from_files,
    load_checkpoint_model,
    open_run,
    record_run,
)


def add_report_args(p: argparse.ArgumentParser) -> None:
    add_source_args(p)
    p.add_argument("--text", nargs="+", default=None, metavar="FILE", help="text files/folders (default: eval docs)")
    p.add_argument("--out", required=True, help="the HTML file to write")


def run_report(args: argparse.Namespace) -> int:
    from analysis.report import build_report
    from analysis.trace import load

    out = Path(args.out)
    check_source(args)
    docs = docs_from_files(args.text) if args.text else None
    if args.hf:
        if docs is None:
            raise ValueError("--hf needs --text FILE ... (a Hugging Face model folder has no eval docs)")
        trace = trace_from_hf_args(args, docs)
        return _write_report(out, build_report(trace, run_info={"name": trace.meta.get("run")}), trace)
    run = open_run(args.run)
    step = run.latest_step() if args.checkpoint is None else args.checkpoint
    stored = run.trace_path(step) if step is not None else None
    if docs is None and stored is not None and stored.is_file():
        trace = load(stored, expect_config=run.config)  # the eval trace recorded with the checkpoint
    else:
        if docs is None:
            docs = run.eval_docs()
            if not docs:
                raise ValueError(f"run {run.path} has no eval docs: pass --text FILE ...")
        model, tok, step = load_checkpoint_model(run, step, args.device)
        trace = record_run(run, model, tok, step, docs, args.batch_size)
    return _write_report(out, build_report(trace, history=run.history(), run_info=run.info), trace)


def _write_report(out: Path, page: str, trace) -> int:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    print(f"wrote {out} ({len(page) / 1e6:.1f} MB, {trace.n_tokens} tokens)")
    return 0
