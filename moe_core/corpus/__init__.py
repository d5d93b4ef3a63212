"""The domain-labelled corpus (the ground truth for expert specialization) and the user's own documents.

Modules: docs (Doc, splitting text, the train/val split, JSONL files, user files), stdlib_text (prose and
code from the Python standard library), generated (math and data generators), build (make_docs,
build_corpus and its manifest). `moe-explorer corpus` is app/cli/corpus.py.
"""

from moe_core.corpus.build import FORMAT, LABELS, SIZES, build_corpus, make_docs
from moe_core.corpus.docs import (
    MAX_DOC_CHARS,
    MIN_DOC_CHARS,
    VAL_FRACTION,
    Doc,
    docs_from_paths,
    label_sizes,
    load_docs,
    split_docs,
    split_text,
    write_docs,
)

__all__ = [
    "FORMAT",
    "LABELS",
    "MAX_DOC_CHARS",
    "MIN_DOC_CHARS",
    "SIZES",
    "VAL_FRACTION",
    "Doc",
    "build_corpus",
    "docs_from_paths",
    "label_sizes",
    "load_docs",
    "make_docs",
    "split_docs",
    "split_text",
    "write_docs",
]
