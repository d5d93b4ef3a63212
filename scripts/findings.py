"""Print (or write into docs/FINDINGS.md) the specialization summary and tables of a run (Markdown).

python -m scripts.findings --run sample_data/default_run --out-of-corpus tests/data/out_of_corpus
python -m scripts.findings --run sample_data/default_run --out-of-corpus tests/data/out_of_corpus \
    --write docs/FINDINGS.md            # replaces the blocks between the `training` and `findings` markers
python -m scripts.findings --run sample_data/default_run --sweep sample_data/default_run/causal/sweep.csv \
    --write docs/FINDINGS.md            # only the `causal` block (§4), from a `moe-explorer ablate --out` table
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from analysis.findings import FindingsConfig, findings, training_markdown
from moe_core.run import load_run

BLOCK = "findings"


def causal_markdown(run, sweep: Path) -> str:
    """§4's block: the sweep table beside the specialization of the final eval trace (the one it measured)."""
    import pandas as pd

    from analysis.causal.sweep_findings import sweep_markdown
    from analysis.trace import load

    return sweep_markdown(load(run.trace_path(run.checkpoints()[-1])), pd.read_csv(sweep))


def markers(name: str) -> tuple[str, str]:
    """The comment lines around a generated block of docs/FINDINGS.md."""
    return f"<!-- generated: {name} (do not edit by hand) -->", f"<!-- end generated: {name} -->"


def read_block(doc: str, name: str) -> str:
    """The text between the markers of block `name` (ValueError when absent)."""
    begin, end = markers(name)
    if begin not in doc or end not in doc:
        raise ValueError(f"no generated block {name!r} in the document")
    return doc.split(begin, 1)[1].split(end, 1)[0].strip("\n")


def replace_block(doc: str, name: str, text: str) -> str:
    begin, end = markers(name)
    read_block(doc, name)
    head, rest = doc.split(begin, 1)
    return f"{head}{begin}\n{text}\n{end}{rest.split(end, 1)[1]}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True)
    p.add_argument("--out-of-corpus", type=Path, help="folder of LABEL_SOURCE_N.txt documents (named-expert test)")
    p.add_argument("--sweep", type=Path, help="an ablation sweep table (CSV): write §4's block only")
    p.add_argument("--write", type=Path, help="replace the generated block of this Markdown file")
    args = p.parse_args(argv)
    run = load_run(args.run)
    if args.sweep:
        text = causal_markdown(run, args.sweep)
        if args.write:
            args.write.write_text(replace_block(args.write.read_text(encoding="utf-8"), "causal", text), "utf-8")
        else:
            print(text)
        return 0
    text = findings(run, FindingsConfig(out_of_corpus=args.out_of_corpus))
    if args.write:
        doc = replace_block(args.write.read_text(encoding="utf-8"), BLOCK, text)
        args.write.write_text(replace_block(doc, "training", training_markdown(run)), encoding="utf-8")
    else:
        print(training_markdown(run), text, sep="\n\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
