"""Print the specialization tables of docs/FINDINGS.md for a run (Markdown on stdout).

python -m scripts.findings --run sample_data/default_run
"""

from __future__ import annotations

import argparse
import sys

from analysis.findings import findings
from moe_core.run import load_run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True)
    args = p.parse_args(argv)
    print(findings(load_run(args.run)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
