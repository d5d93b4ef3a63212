"""`python -m app.cli COMMAND ...`: the `moe-explorer` command line (what torchrun and the Train page launch)."""

import sys

from app.cli import main

if __name__ == "__main__":
    sys.exit(main())
