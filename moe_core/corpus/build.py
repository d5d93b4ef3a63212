"""A domain-labelled corpus built offline: the ground truth for expert specialization.

Four domains (the `label` of every document), roughly equal in characters:
- `prose`: English. The seed sentences (`sample_data/seed_sentences.txt`), the docstrings and comment
  blocks of the running interpreter's standard library (found with `ast`), and the language reference
  topics that ship with it (`pydoc_data/topics.py`). Indented blocks, doctests and non-ASCII paragraphs
  are left out, so what remains is running English text.
- `code`: standard-library Python source with docstrings (via `ast`) and comments removed.
- `math`: generated arithmetic, equations, fractions, algebra, percentages and word problems.
- `data`: generated JSON records, CSV tables, log lines and key=value / INI configs.

Everything is seeded (`random.Random(seed)`, sorted file lists), so one seed and one interpreter give
byte-identical files. Documents are ~0.5-3 kB. The split is by document, stratified by domain.

Output of `build_corpus(out_dir)` (this module):
    train.jsonl, val.jsonl   one JSON object per line: {"doc_id", "label", "source", "text"}
    manifest.json            sizes per domain and split (docs, chars), sources, seed, python version
"""

from __future__ import annotations

import os
import platform
import random
import sysconfig
from pathlib import Path

from moe_core.corpus.docs import VAL_FRACTION, Doc, label_sizes, split_docs, write_docs
from moe_core.corpus.generated import generated_docs
from moe_core.corpus.stdlib_text import Stdlib, code_docs, prose_docs
from moe_core.files import write_json_atomic

FORMAT = "moe-explorer-corpus/1"
LABELS = ("prose", "code", "math", "data")
SIZES = {"small": 300_000, "default": 2_500_000}  # target characters per domain


def make_docs(seed: int = 0, chars_per_domain: int = SIZES["default"]) -> list[Doc]:
    """All documents of the built-in corpus, domain by domain, with doc_ids 0..n-1 (not yet split)."""
    if chars_per_domain <= 0:
        raise ValueError(f"chars_per_domain must be > 0, got {chars_per_domain}")
    stdlib = Stdlib()
    docs: list[Doc] = []
    # one RNG per domain, derived from the seed, so changing one generator leaves the others unchanged
    for index, label in enumerate(LABELS):
        rng = random.Random(f"{seed}:{index}:{label}")
        if label == "prose":
            docs += prose_docs(stdlib, rng, chars_per_domain)
        elif label == "code":
            docs += code_docs(stdlib, rng, chars_per_domain)
        else:
            docs += generated_docs(label, rng, chars_per_domain)
    for i, doc in enumerate(docs):
        doc.doc_id = i
    return docs


def build_corpus(
    out_dir: str | os.PathLike,
    seed: int = 0,
    size: str = "default",
    chars_per_domain: int | None = None,
    val_fraction: float = VAL_FRACTION,
) -> dict:
    """Build the built-in corpus into `out_dir` (train.jsonl, val.jsonl, manifest.json); return the manifest.

    `size` picks the characters per domain ("small" ~300 kB, "default" ~2.5 MB); `chars_per_domain`
    overrides it (tests use a few kB).
    """
    if size not in SIZES:
        raise ValueError(f"unknown corpus size {size!r}; choose from {', '.join(SIZES)}")
    target = SIZES[size] if chars_per_domain is None else int(chars_per_domain)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    docs = make_docs(seed, target)
    train, val = split_docs(docs, seed, val_fraction)
    sources: dict[str, dict[str, int]] = {}
    for d in docs:  # e.g. {"code": {"stdlib": 1200}, "math": {"generated:math": 900}}
        kind = d.source if d.source.startswith("generated:") else d.source.split(":", 1)[0]
        sources.setdefault(d.label, {}).setdefault(kind, 0)
        sources[d.label][kind] += 1
    manifest = {
        "format": FORMAT,
        "seed": seed,
        "size": size if chars_per_domain is None else "custom",
        "chars_per_domain": target,
        "val_fraction": val_fraction,
        "labels": list(LABELS),
        "files": {"train": "train.jsonl", "val": "val.jsonl"},
        "train": label_sizes(train),
        "val": label_sizes(val),
        "total": {"docs": len(docs), "chars": sum(len(d.text) for d in docs)},
        "sources": {label: dict(sorted(sources[label].items())) for label in sorted(sources)},
        "source_descriptions": {
            "prose": "seed sentences + English docstrings/comments of the stdlib + pydoc_data topics",
            "code": "stdlib .py source, docstrings and comments removed",
            "math": "generated arithmetic, equations, fractions, algebra, word problems",
            "data": "generated JSON/JSON Lines, CSV, log lines, key=value and INI configs",
        },
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "stdlib": sysconfig.get_paths()["stdlib"],
    }
    write_docs(out / "train.jsonl", train)
    write_docs(out / "val.jsonl", val)
    write_json_atomic(out / "manifest.json", manifest)
    return manifest
