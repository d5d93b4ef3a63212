"""Documents: the `Doc` record, cutting text into documents, the train/val split, corpus JSONL files, and
labelled docs from the user's own files and folders."""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from moe_core.files import write_jsonl_atomic

VAL_FRACTION = 0.05  # share of each domain's documents held out for validation
MIN_DOC_CHARS = 500  # generated/extracted documents are 0.5-3 kB
MAX_DOC_CHARS = 3000


@dataclass
class Doc:
    """One labelled document."""

    text: str
    label: str  # domain, e.g. "code"; for user files the folder or file name
    source: str  # where it came from, e.g. "stdlib:json/decoder.py" or "generated:math"
    doc_id: int = -1  # unique within a corpus; -1 until assigned


# ---------------------------------------------------------------------------------------------------------
# Splitting text into documents


def split_text(text: str, target_chars: int = 2000, max_chars: int = 4000) -> list[str]:
    """Cut `text` into chunks of about `target_chars` at paragraph (blank line) boundaries, else at line
    boundaries (else at spaces), never longer than `max_chars`. Lossless: "".join(chunks) == text.
    """
    if target_chars <= 0 or max_chars < target_chars:
        raise ValueError("need 0 < target_chars <= max_chars")
    pieces: list[str] = []
    for para in re.split(r"(?<=\n\n)", text):  # keeps the blank line with the paragraph before it
        if len(para) <= max_chars:
            pieces.append(para)
        else:  # an over-long paragraph goes line by line, an over-long line at spaces
            for line in para.splitlines(keepends=True):
                while len(line) > max_chars:
                    cut = line.rfind(" ", 0, max_chars) + 1 or max_chars
                    pieces.append(line[:cut])
                    line = line[cut:]
                pieces.append(line)
    chunks: list[str] = []
    current = ""
    for piece in pieces:
        if current and len(current) + len(piece) > max_chars:
            chunks.append(current)
            current = ""
        current += piece
        if len(current) >= target_chars:
            chunks.append(current)
            current = ""
    if current:
        if chunks and len(chunks[-1]) + len(current) <= max_chars and len(current) < target_chars // 4:
            chunks[-1] += current  # fold a small tail into the previous chunk
        else:
            chunks.append(current)
    return chunks


def pack_paragraphs(paragraphs: Iterable[str], max_chars: int = MAX_DOC_CHARS) -> list[str]:
    """Join paragraphs with blank lines into documents of at most `max_chars` (longer ones are cut)."""
    docs: list[str] = []
    current = ""
    for para in paragraphs:
        for part in split_text(para, max_chars // 2, max_chars) if len(para) > max_chars else [para]:
            part = part.strip("\n")
            if current and len(current) + 2 + len(part) > max_chars:
                docs.append(current)
                current = ""
            current = f"{current}\n\n{part}" if current else part
    if current:
        docs.append(current)
    return docs


def split_docs(docs: list[Doc], seed: int = 0, val_fraction: float = VAL_FRACTION) -> tuple[list[Doc], list[Doc]]:
    """Split by document, stratified by label: each label keeps round(val_fraction*n) (>= 1 if n >= 2) docs
    for validation. Both splits come back shuffled (seeded) so domains are interleaved."""
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    rng = random.Random(f"{seed}:split")
    train: list[Doc] = []
    val: list[Doc] = []
    for label in sorted({d.label for d in docs}):
        group = [d for d in docs if d.label == label]
        rng.shuffle(group)
        n_val = round(val_fraction * len(group))
        if val_fraction > 0 and len(group) >= 2:
            n_val = max(1, n_val)
        val += group[:n_val]
        train += group[n_val:]
    rng.shuffle(train)
    rng.shuffle(val)
    return train, val


def label_sizes(docs: list[Doc]) -> dict[str, dict[str, int]]:
    """{label: {"docs": count, "chars": total characters}}, labels sorted (corpus manifests, run.json)."""
    sizes: dict[str, dict[str, int]] = {}
    for d in docs:
        entry = sizes.setdefault(d.label, {"docs": 0, "chars": 0})
        entry["docs"] += 1
        entry["chars"] += len(d.text)
    return {label: sizes[label] for label in sorted(sizes)}


def write_docs(path: Path, docs: list[Doc]) -> None:
    """A corpus JSONL file: one {"doc_id", "label", "source", "text"} object per line (atomic)."""
    write_jsonl_atomic(path, ({"doc_id": d.doc_id, "label": d.label, "source": d.source, "text": d.text} for d in docs))


def load_docs(path: str | os.PathLike, split: str = "train") -> list[Doc]:
    """Docs from a .jsonl file, or from `<path>/<split>.jsonl` when `path` is a corpus directory."""
    path = Path(path)
    if path.is_dir():
        path = path / f"{split}.jsonl"
    if not path.is_file():
        raise ValueError(f"no such corpus file: {path}")
    docs = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                docs.append(Doc(str(row["text"]), str(row["label"]), str(row.get("source", "")), int(row["doc_id"])))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"{path}:{number}: not a corpus line ({type(exc).__name__}: {exc})") from None
    return docs


# ---------------------------------------------------------------------------------------------------------
# the user's own files


def read_text_file(path: Path) -> str | None:
    """The file's text, or None when it looks binary or is not UTF-8."""
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    if b"\x00" in raw[:8192]:
        return None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None


def docs_from_paths(paths: Iterable[str | os.PathLike], target_chars: int = 3000, max_chars: int = 4000) -> list[Doc]:
    """Labelled docs from the user's files and folders; doc_ids 0..n-1 in the order found.

    Labels: a file given directly -> its stem ("notes.txt" -> "notes"); a file directly inside a given
    folder -> the folder's name; a file deeper inside a given folder -> the name of the first subfolder
    (so `corpus/legal/*.txt` and `corpus/poems/*.txt` give labels "legal" and "poems").
    Hidden files/folders are skipped, binary or non-UTF-8 files too. Long files are split into docs of
    ~`target_chars` at paragraph or line boundaries (see `split_text`).
    """
    paths = list(paths)
    found: list[tuple[Path, str]] = []
    for given in paths:
        given = Path(given)
        if given.is_file():
            found.append((given, given.stem))
        elif given.is_dir():
            name = given.resolve().name or "docs"
            for path in sorted(given.rglob("*"), key=lambda p: p.relative_to(given).as_posix()):
                rel = path.relative_to(given).parts
                if not path.is_file() or any(part.startswith(".") for part in rel):
                    continue
                found.append((path, rel[0] if len(rel) > 1 else name))
        else:
            raise ValueError(f"no such file or folder: {given}")
    docs: list[Doc] = []
    skipped = []
    for path, label in found:
        text = read_text_file(path)
        if text is None:
            skipped.append(path)
            continue
        for chunk in split_text(text, target_chars, max_chars):
            if chunk.strip():
                docs.append(Doc(chunk, label, str(path), len(docs)))
    if not docs:
        detail = f" ({len(skipped)} binary or non-UTF-8 file(s) skipped)" if skipped else ""
        raise ValueError(f"no usable text in {', '.join(map(str, paths))}{detail}")
    return docs
