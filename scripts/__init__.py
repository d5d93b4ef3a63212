"""Maintainer scripts that rebuild sample_data/ (run from the repository root: `python -m scripts.NAME`).

Not part of the installed packages; analyses users run on their own runs live in `analysis`.
"""
