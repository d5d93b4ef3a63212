"""`moe-explorer route` and `moe-explorer report` (wired in app/cli.py).

route:  moe-explorer route [--run RUN] [--checkpoint STEP] (--text TEXT | FILE ...) [--out trace.parquet|.csv]
        prints one line per token (the token, then its top-1 expert in every MoE layer) and a per-layer load
        summary; writes the trace with --out.
report: moe-explorer report [--run RUN] [--checkpoint STEP] [--text FILE ...] --out report.html
        a self-contained HTML report of the FILEs' routing (default: the run's held-out eval docs).
Without --run both use the shipped run (moe_core.paths.default_run_path()); `--hf PATH` routes through a local
Hugging Face MoE model instead (analysis.hf_adapter, docs/HF_MODELS.md). User errors raise ValueError or
OSError with one line; app/cli.py prints it without a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

TOKEN_WIDTH = 16  # characters of token text shown per line


# --- shared -------------------------------------------------------------------------------------------------


def _add_common(p: argparse.ArgumentParser) -> None:
    from analysis.hf_adapter import add_hf_arguments

    p.add_argument("--run", default=None, help="run directory (default: the shipped run)")
    p.add_argument("--checkpoint", type=int, default=None, metavar="STEP", help="checkpoint step (default: latest)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (cuda when available)")
    p.add_argument("--batch-size", type=int, default=None, help="windows per forward (default: ~4096 tokens)")
    add_hf_arguments(p)  # --hf PATH: a local Hugging Face MoE model instead of a run (docs/HF_MODELS.md)


def _check_source(args: argparse.Namespace) -> None:
    if getattr(args, "hf", None) and (args.run or args.checkpoint is not None):
        raise ValueError("give --run/--checkpoint or --hf, not both")


def _hf_trace(args: argparse.Namespace, docs):
    from analysis.hf_adapter import trace_from_hf_args

    return trace_from_hf_args(args, docs)


def open_run(path: str | None):
    """The run at `path`, or the shipped default run; ValueError (one line) when there is none."""
    from moe_core.paths import default_run_path
    from moe_core.run import load_run

    if path is None:
        default = default_run_path()
        if not default.is_dir():
            raise ValueError(f"no --run given and the default run {default} does not exist yet")
        return load_run(default)
    return load_run(path)


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    return name


def _load(run, checkpoint: int | None, device: str):
    step = run.latest_step() if checkpoint is None else checkpoint
    model = run.load_model(step, device=_device(device))  # ValueError if the run/step has no checkpoint
    return model, run.tokenizer(), step


def _docs_from_files(files: list[str]) -> list[Any]:
    from moe_core.corpus import docs_from_paths

    return docs_from_paths(files)  # one-line ValueError for missing, empty or binary files


def _record(run, model, tok, step, docs, batch_size):
    from analysis.recorder import record

    return record(model, tok, docs, batch_size=batch_size, meta={"run": run.name, "step": step})


# --- route --------------------------------------------------------------------------------------------------


def add_route_args(p: argparse.ArgumentParser) -> None:
    _add_common(p)
    p.add_argument("files", nargs="*", metavar="FILE", help="text files or folders to route")
    p.add_argument("--text", default=None, help="a text to route (instead of FILEs)")
    p.add_argument("--out", default=None, help="write the trace: a .parquet (+ .arrays.safetensors) or .csv file")
    p.add_argument("--max-tokens", type=int, default=200, help="token lines printed (0 = all)")


def run_route(args: argparse.Namespace) -> int:
    if args.text is not None and args.files:
        raise ValueError("give --text TEXT or FILE ..., not both")
    if args.text is None and not args.files:
        raise ValueError("nothing to route: give --text TEXT or FILE ...")
    if args.text is not None and not args.text.strip():
        raise ValueError("the text is empty")
    out = Path(args.out) if args.out else None
    if out is not None and out.suffix not in (".parquet", ".csv"):
        raise ValueError(f"--out must end in .parquet or .csv, got {out.name}")
    _check_source(args)
    docs = [args.text] if args.text is not None else _docs_from_files(args.files)
    if args.hf:
        trace = _hf_trace(args, docs)
    else:
        run = open_run(args.run)
        model, tok, step = _load(run, args.checkpoint, args.device)
        trace = _record(run, model, tok, step, docs, args.batch_size)
    print(format_tokens(trace, args.max_tokens))
    print()
    print(format_load(trace))
    if out is not None:
        trace.to_csv(out) if out.suffix == ".csv" else trace.save(out)
        print(f"\nwrote {out}", file=sys.stderr)
    return 0


def format_tokens(trace, max_tokens: int = 200) -> str:
    """One line per token: doc, position, token text (repr, cut to TOKEN_WIDTH), top-1 expert per layer."""
    L = trace.n_layers
    top1 = trace.experts_array()[:, :, 0]  # (T, L)
    width = max(2, len(str(trace.n_experts - 1)))
    layers = " ".join(f"L{l:<{width}}"[: width + 1] for l in range(L))
    lines = [f"{'doc':>5} {'pos':>5}  {'token':<{TOKEN_WIDTH}}  {layers}".rstrip()]
    n = trace.n_tokens if max_tokens <= 0 else min(max_tokens, trace.n_tokens)
    tok = trace.tokens
    for row in range(n):
        text = show_token(tok["token_text"].iat[row])
        experts = " ".join(f"{e:>{width + 1}}" for e in top1[row])
        doc, pos = str(tok["doc_id"].iat[row])[:5], tok["position"].iat[row]
        lines.append(f"{doc:>5} {pos:>5}  {text:<{TOKEN_WIDTH}}  {experts}")
    if n < trace.n_tokens:
        lines.append(f"… {trace.n_tokens - n} more tokens (--max-tokens 0 shows all)")
    return "\n".join(lines)


def show_token(text: str) -> str:
    """A token on one terminal column: escapes (\\n, \\t) as repr does, spaces as '·', cut to TOKEN_WIDTH."""
    shown = repr(text)[1:-1].replace(" ", "·")
    return shown if len(shown) <= TOKEN_WIDTH else shown[: TOKEN_WIDTH - 1] + "…"


def format_load(trace) -> str:
    """Per MoE layer: MaxVio, CV, dead experts, bias-flip rate, and the tokens routed to each expert."""
    from analysis import metrics

    load = metrics.expert_load(trace.experts_array(), trace.n_experts)  # (L, E)
    table = metrics.summary(trace.routing, trace.n_experts)
    blocks = trace.meta.get("layer_blocks") or [None] * trace.n_layers
    lines = [f"load per layer ({trace.n_tokens} tokens, top-{trace.top_k} of {trace.n_experts} experts):"]
    for l, row in table.iterrows():
        block = f" (block {blocks[l]})" if blocks[l] is not None else ""
        flips = f", bias flips {row['bias_flip_rate']:.1%}" if "bias_flip_rate" in row else ""
        lines.append(
            f"  layer {l}{block}: MaxVio {row['max_vio']:.2f}, CV {row['cv']:.2f}, "
            f"dead {int(row['dead_experts'])}{flips}"
        )
        lines.append("    tokens per expert: " + " ".join(str(int(c)) for c in load[l]))
    return "\n".join(lines)


# --- report -------------------------------------------------------------------------------------------------


def add_report_args(p: argparse.ArgumentParser) -> None:
    _add_common(p)
    p.add_argument("--text", nargs="+", default=None, metavar="FILE", help="text files/folders (default: eval docs)")
    p.add_argument("--out", required=True, help="the HTML file to write")


def run_report(args: argparse.Namespace) -> int:
    from analysis.report import build_report
    from analysis.trace import load

    out = Path(args.out)
    _check_source(args)
    docs = _docs_from_files(args.text) if args.text else None
    if args.hf:
        if docs is None:
            raise ValueError("--hf needs --text FILE ... (a Hugging Face model folder has no eval docs)")
        trace = _hf_trace(args, docs)
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
        model, tok, step = _load(run, step, args.device)
        trace = _record(run, model, tok, step, docs, args.batch_size)
    return _write_report(out, build_report(trace, history=run.history(), run_info=run.info), trace)


def _write_report(out: Path, page: str, trace) -> int:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    print(f"wrote {out} ({len(page) / 1e6:.1f} MB, {trace.n_tokens} tokens)")
    return 0
