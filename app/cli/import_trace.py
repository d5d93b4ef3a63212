"""`moe-explorer import --format {megatron,vllm,sglang} FILES... --out DIR [--tokenizer T] [--config C]`

Reads routing traces written by another system into a routing dataset (the formats and what each holds:
`analysis.dataset.importers`): Megatron-LM's router_trace_rank*.jsonl, or saved vLLM / SGLang responses
(.json / .jsonl) of servers started with --enable-return-routed-experts. An interrupted import resumes.
"""

from __future__ import annotations

import argparse
import sys


def add_import_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", metavar="FILE", help="trace files or folders holding them")
    p.add_argument(
        "--format", required=True, choices=("megatron", "vllm", "sglang"), help="the system that wrote FILEs"
    )
    p.add_argument("--out", required=True, help="the dataset folder to write (new, or an interrupted import)")
    p.add_argument("--tokenizer", default=None, help="tokenizer.json (or its folder): token ids -> token text")
    p.add_argument("--config", default=None, help="the model's config.json (or its folder): experts, top-k, layers")
    p.add_argument("--n-experts", type=int, default=None, help="routed experts (default: config, else max id + 1)")
    p.add_argument("--n-layers", type=int, default=None, help="SGLang: layers in its flat buffer (default: config)")
    p.add_argument("--top-k", type=int, default=None, help="SGLang: experts per token in its buffer (default: config)")
    p.add_argument("--moe-layers", default=None, help="layer indices to keep, e.g. 1-26 or 3,5,7 (default: detected)")
    p.add_argument("--label", default="", help="label of every document (a response line's own 'label' wins)")
    p.add_argument("--shard-tokens", type=int, default=65536, help="tokens per shard")


def run_import(args: argparse.Namespace) -> int:
    from analysis.dataset.importers import ImportOptions, import_traces

    opts = ImportOptions(
        config=args.config,
        tokenizer=args.tokenizer,
        n_experts=args.n_experts,
        n_layers=args.n_layers,
        top_k=args.top_k,
        moe_layers=parse_layers(args.moe_layers),
        label=args.label,
        shard_tokens=args.shard_tokens,
    )
    if opts.shard_tokens < 1:
        raise ValueError("--shard-tokens must be at least 1")

    def progress(docs: int, tokens: int) -> None:
        print(f"\rimported {docs} documents, {tokens} tokens", end="", file=sys.stderr, flush=True)

    manifest = import_traces(args.format, args.files, args.out, opts, progress)
    meta = manifest.get("meta") or {}
    print(file=sys.stderr)
    print(
        f"wrote {args.out}: {sum(s['docs'] for s in manifest['shards'])} documents, "
        f"{sum(s['tokens'] for s in manifest['shards'])} tokens, {meta.get('n_layers')} MoE layers "
        f"(raw {meta.get('layer_blocks')}), {meta.get('n_experts')} experts, top-{meta.get('top_k')}"
    )
    return 0


def parse_layers(text: str | None) -> list[int] | None:
    """ "1-3,7" -> [1, 2, 3, 7]; None stays None."""
    if text is None:
        return None
    out: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            out.extend(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise ValueError(f"--moe-layers: expected e.g. 1-26 or 3,5,7, got {text!r}") from None
    return sorted(set(out))
