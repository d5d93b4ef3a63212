"""`moe-explorer`: one command line for building corpora, training, routing, reports and the app.

All argparse lives in this package: each subcommand is a module here (corpus, train, route, report, app)
with `add_<name>_args(parser)` and `run_<name>(args) -> int` that turn flags into the typed configs of the
library; it is imported only when used, so `--help` stays fast and `moe-explorer app` never loads torch.
`python -m app.cli ...` (app/cli/__main__.py) is the same command line; torchrun launches it for DDP:
`torchrun --nproc_per_node 2 -m app.cli train --preset tiny --out RUN`.
Expected failures (bad input, missing files) print one line, not a traceback;
set MOE_EXPLORER_DEBUG=1 to see the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "corpus": ("app.cli.corpus", "build the default multi-domain corpus"),
    "train": ("app.cli.train", "train a model into a run directory"),
    "route": ("app.cli.route", "route text through a model and print/save its routing trace"),
    "record": ("app.cli.record", "record the routing of a large corpus into a routing dataset (resumable)"),
    "report": ("app.cli.report", "write a self-contained HTML routing report"),
    "app": ("app.cli.app", "open the Streamlit app"),
    "import": ("app.cli.import_trace", "import routing traces of Megatron-LM, vLLM or SGLang into a dataset"),
    "ablate": ("app.cli.ablate", "remove experts and print the change of next-token loss per domain"),
    "stats": ("app.cli.stats", "per-layer routing statistics of a routing dataset (out of core, DuckDB)"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="moe-explorer",
        description="Explore how a Mixture-of-Experts language model routes tokens.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == only:
            getattr(importlib.import_module(module), f"add_{name}_args")(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and argv[0] in COMMANDS else None
    args = build_parser(command).parse_args(argv)
    if args.command is None:
        build_parser().print_help()
        return 0
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return int(getattr(module, f"run_{args.command}")(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError) as exc:  # expected failures: one line, no traceback
        if os.environ.get("MOE_EXPLORER_DEBUG"):
            raise
        print(f"moe-explorer {args.command}: error: {exc}", file=sys.stderr)
        return 2
