"""`moe-explorer ablate [--run RUN | --hf PATH] --layer L (--expert E | --all-experts) [FILE ... | --text T]`

Removes expert E of MoE layer L (or each expert of the layer in turn) and prints the change of next-token
loss per domain, in nats/token, with a 95% bootstrap CI over documents (analysis.causal.ablation). Without
FILEs or --text it uses the run's held-out eval documents (a Hugging Face folder has none: the app's built-in
labelled samples, as its pages use). --mode zero zeroes the expert's output instead of re-routing its tokens;
--references adds the whole layer's routed experts and the shared expert; --out writes the table (.csv or
.parquet): per domain, or with --per doc|token per document or token. With --hf PATH the interventions are
forward hooks on the loaded model (analysis.causal.hf_interventions); a mode its family lacks is one line.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from app.cli.model_source import add_source_args, check_source, docs_from_files, load_checkpoint_model, open_run


def add_ablate_args(p: argparse.ArgumentParser) -> None:
    add_source_args(p)
    p.add_argument("files", nargs="*", metavar="FILE", help="text files or folders (default: the run's eval docs)")
    p.add_argument("--text", default=None, help="a text to measure on (instead of FILEs)")
    p.add_argument("--layer", required=True, help="MoE layer index (0 = first MoE layer), or 'all'")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--expert", type=int, default=None, help="the expert to remove")
    which.add_argument("--all-experts", action="store_true", help="remove each expert of the layer in turn")
    p.add_argument("--mode", choices=["reroute", "zero"], default="reroute", help="re-route its tokens or zero it")
    p.add_argument("--references", action="store_true", help="also ablate all routed experts, and the shared one")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples of the documents")
    p.add_argument("--out", default=None, help="write the table: .csv or .parquet")
    p.add_argument("--per", choices=["domain", "doc", "token"], default="domain", help="rows of the --out table")


def run_ablate(args: argparse.Namespace) -> int:
    from analysis.causal.ablation import Ablation, stack, sweep_results

    out = Path(args.out) if args.out else None
    if out is not None and out.suffix not in (".csv", ".parquet"):
        raise ValueError(f"--out must end in .csv or .parquet, got {out.name}")
    if args.text is not None and args.files:
        raise ValueError("give --text TEXT or FILE ..., not both")
    if args.text is not None and not args.text.strip():
        raise ValueError("the text is empty")
    check_source(args)
    if args.threads is not None:
        import torch

        torch.set_num_threads(max(1, args.threads))
    modes = [args.mode] + (["layer", "shared"] if args.references else [])
    target = causal_target(args, modes)
    docs = documents(args, target)
    layers = parse_layers(args.layer, target.n_layers)
    if args.expert is not None and not 0 <= args.expert < target.n_experts:
        raise ValueError(f"--expert must be in 0..{target.n_experts - 1}, got {args.expert}")
    experts = range(target.n_experts) if args.all_experts else [args.expert]
    ablations = [Ablation(layer, args.mode, e) for layer in layers for e in experts]
    if args.references:
        ablations += [Ablation(layer, ref) for layer in layers for ref in ("layer", "shared")]
    start = time.perf_counter()
    batch_tokens = None if args.batch_size is None else args.batch_size * target.block_size
    runner = target.runner(docs, batch_tokens=batch_tokens)
    results = sweep_results(
        runner, ablations, n_boot=args.n_boot, progress=lambda i, n: print(f"\r{i}/{n}", end="", file=sys.stderr)
    )
    table = stack(results, "domain")
    seconds = time.perf_counter() - start
    print(f"\r{len(ablations)} ablations of {target.name} (step {target.step}) in {seconds:.1f} s", file=sys.stderr)
    print(format_table(table))
    if out is not None:
        from moe_core.files import atomic_write

        rows = table if args.per == "domain" else stack(results, args.per)
        write = rows.to_csv if out.suffix == ".csv" else rows.to_parquet
        atomic_write(out, lambda tmp: write(tmp, index=False))  # an interrupted write leaves the old file
        print(f"wrote {out}", file=sys.stderr)
    return 0


def causal_target(args: argparse.Namespace, modes: list[str]):
    """Our run's checkpoint (--run, --checkpoint, --device), or the --hf folder's hooked model; a mode the
    folder's family lacks is a one-line ValueError before the model loads."""
    if args.hf:
        from analysis.causal.hf_interventions import check_mode
        from analysis.hf.families import FAMILIES
        from analysis.sources import HFSource

        source = HFSource(args.hf, device=args.hf_device or args.device, dtype=args.hf_dtype)
        if not source.info["supported"]:
            raise ValueError(f"{args.hf}: {source.info['reason']}")
        for mode in modes:
            check_mode(FAMILIES[source.info["model_type"]], mode)
        return dataclasses.replace(source.causal_model(), window=args.hf_window)
    from analysis.causal.target import CausalTarget

    run = open_run(args.run)
    model, tok, step = load_checkpoint_model(run, args.checkpoint, args.device)
    return CausalTarget(model.eval(), tok, run.name, step)


def documents(args: argparse.Namespace, target) -> list:
    if args.text is not None:
        return [("text", "text", args.text)]
    if args.files:
        return docs_from_files(args.files)
    if args.hf:
        from app.samples import labelled_samples

        docs = list(labelled_samples())
        print(f"{target.name} has no eval documents: measuring on the {len(docs)} built-in samples", file=sys.stderr)
        return docs
    run = open_run(args.run)
    docs = run.eval_docs()
    if not docs:
        raise ValueError(f"run {run.name} has no eval documents: give FILEs or --text")
    return docs


def parse_layers(value: str, n_layers: int) -> list[int]:
    if value == "all":
        return list(range(n_layers))
    try:
        layer = int(value)
    except ValueError:
        raise ValueError(f"--layer must be an integer or 'all', got {value!r}") from None
    if not 0 <= layer < n_layers:
        raise ValueError(f"--layer must be in 0..{n_layers - 1} (MoE layers), got {layer}")
    return [layer]


def format_table(table) -> str:
    """One row per ablation, one column per domain: 'Δ [lo, hi]' in nats/token; the denominators below."""
    cells = table.assign(
        cell=[f"{d:+.4f} [{lo:+.4f}, {hi:+.4f}]" for d, lo, hi in zip(table.delta, table.lo, table.hi)]
    )
    wide = cells.pivot(index="ablation", columns="label", values="cell")
    wide = wide.reindex(index=list(dict.fromkeys(table["ablation"])), columns=list(dict.fromkeys(table["label"])))
    sizes = table.drop_duplicates("label").set_index("label")
    notes = ", ".join(f"{lab}: {r.n_docs} docs, {r.n_tokens} tokens" for lab, r in sizes.iterrows())
    header = "Δ loss (nats/token, ablated − baseline) with a 95% bootstrap CI over documents"
    return f"{header}\n{wide.rename_axis(None, axis=1).to_string()}\n(scored tokens per domain — {notes})"
