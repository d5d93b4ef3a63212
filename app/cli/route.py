"""`moe-explorer route [--run RUN] [--checkpoint STEP] (--text TEXT | FILE ...) [--out trace.parquet|.csv]`

Prints one line per token (the token, then its top-1 expert in every MoE layer) and a per-layer load
summary; writes the trace with --out. `--hf PATH` routes through a local Hugging Face MoE model instead.
"""

from __future__ import annotations

import argparse
import sys
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

TOKEN_WIDTH = 16  # characters of token text shown per line


def add_route_args(p: argparse.ArgumentParser) -> None:
    add_source_args(p)
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
    check_source(args)
    docs = [args.text] if args.text is not None else docs_from_files(args.files)
    if args.hf:
        trace = trace_from_hf_args(args, docs)
    else:
        run = open_run(args.run)
        model, tok, step = load_checkpoint_model(run, args.checkpoint, args.device)
        trace = record_run(run, model, tok, step, docs, args.batch_size)
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
