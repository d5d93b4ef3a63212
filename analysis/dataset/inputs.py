"""The recorder's inputs, streamed: text files, folders, JSONL and Parquet files with a `text` column.

`list_inputs(paths)` expands folders (recursively, sorted, hidden files skipped) into `InputFile`s;
`iter_docs(files)` yields `InputDoc`s one at a time, never holding a JSONL or Parquet file whole. doc_index is
the document's position in this stream, so the same inputs always number their documents the same (what
resume and several workers rely on).

- text file (any other suffix): cut into documents of ~3000 characters at paragraph or line boundaries
  (`moe_core.corpus.split_text`); label: the file's stem, or for a file inside a given folder the folder's
  name (the first subfolder's when deeper), as `docs_from_paths`; doc_id: the file's path below the given
  folder (or its name), `PATH#n` for its n-th document when cut; binary or non-UTF-8 files are skipped.
- .jsonl: one JSON object per line with "text" (optional "label", "doc_id"); blank lines skipped.
- .parquet: columns `text` (optional `label`, `doc_id`), read in record batches.
A document whose text is empty or only whitespace is skipped (it has no tokens). Bad input is a one-line
ValueError naming the file and line (JSONL) or row (Parquet).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from moe_core.corpus.docs import read_text_file, split_text

DOC_CHARS = (3000, 4000)  # text files: target and largest document, in characters (as docs_from_paths)
PARQUET_BATCH_ROWS = 256  # rows read at a time from a Parquet file


@dataclass(frozen=True)
class InputFile:
    path: Path
    kind: str  # "text" | "jsonl" | "parquet"
    label: str  # text files: their label; JSONL/Parquet rows without a label get ""
    name: str = ""  # text files: the doc_id of their documents (the path below the given folder, or the file name)


@dataclass(frozen=True)
class InputDoc:
    doc_index: int  # position in the input stream
    doc_id: str  # the row's doc_id, else str(doc_index)
    label: str
    text: str
    nbytes: int  # input bytes it accounts for (progress estimate)


def _kind(path: Path) -> str:
    suffix = path.suffix.lower()
    return {".jsonl": "jsonl", ".parquet": "parquet"}.get(suffix, "text")


def list_inputs(paths: list[str | os.PathLike]) -> list[InputFile]:
    """The input files of `paths` in stream order; ValueError for a missing path or an empty input."""
    found: list[InputFile] = []
    for given in map(Path, paths):
        if given.is_file():
            found.append(InputFile(given, _kind(given), given.stem, given.name))
        elif given.is_dir():
            name = given.resolve().name or "docs"
            for path in sorted(given.rglob("*"), key=lambda p: p.relative_to(given).as_posix()):
                rel = path.relative_to(given).parts
                if path.is_file() and not any(part.startswith(".") for part in rel):
                    found.append(InputFile(path, _kind(path), rel[0] if len(rel) > 1 else name, "/".join(rel)))
        else:
            raise ValueError(f"no such file or folder: {given}")
    if not found:
        raise ValueError(f"no input files in {', '.join(map(str, paths))}")
    return found


def fingerprint(files: list[InputFile]) -> list[dict[str, Any]]:
    """What the manifest records of the inputs: a resume must read the same files, unchanged."""
    out = []
    for f in files:
        st = f.path.stat()
        out.append({"path": str(f.path.resolve()), "kind": f.kind, "size": st.st_size, "mtime": int(st.st_mtime)})
    return out


def total_bytes(files: list[InputFile]) -> int:
    """Input bytes the documents account for (`InputDoc.nbytes` sums to about this): file sizes, and for
    Parquet the uncompressed size of its text column."""
    total = 0
    for f in files:
        if f.kind != "parquet":
            total += f.path.stat().st_size
            continue
        meta = _parquet(f.path).metadata
        col = meta.schema.to_arrow_schema().get_field_index("text")
        total += sum(meta.row_group(g).column(col).total_uncompressed_size for g in range(meta.num_row_groups))
    return total


def iter_docs(files: list[InputFile]) -> Iterator[InputDoc]:
    """Every document of `files`, in stream order (see the module docstring)."""
    index = 0
    for f in files:
        reader = {"text": _text_docs, "jsonl": _jsonl_docs, "parquet": _parquet_docs}[f.kind]
        for doc_id, label, text, nbytes in reader(f):
            if not text.strip():
                continue
            yield InputDoc(index, str(index) if doc_id is None else doc_id, label, text, nbytes)
            index += 1


def _text_docs(f: InputFile) -> Iterator[tuple[str | None, str, str, int]]:
    text = read_text_file(f.path)
    if text is None:
        return  # binary or not UTF-8: skipped, as docs_from_paths does
    chunks = split_text(text, *DOC_CHARS)
    for i, chunk in enumerate(chunks, start=1):
        doc_id = (f.name if len(chunks) == 1 else f"{f.name}#{i}") or None  # a long file: several documents
        yield doc_id, f.label, chunk, len(chunk.encode("utf-8", "surrogatepass"))


def _jsonl_docs(f: InputFile) -> Iterator[tuple[str | None, str, str, int]]:
    with open(f.path, "rb") as stream:
        for number, raw in enumerate(stream, start=1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                raise ValueError(f"{f.path}:{number}: not a JSON line") from None
            if not isinstance(row, dict) or "text" not in row:
                raise ValueError(f"{f.path}:{number}: no 'text' field (each line needs a JSON object with \"text\")")
            yield _fields(row.get("text"), row.get("label"), row.get("doc_id"), f"{f.path}:{number}") + (len(raw),)


def _parquet(path: Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise ValueError(f"{path}: not a readable Parquet file ({_first_line(exc)})") from None


def _parquet_docs(f: InputFile) -> Iterator[tuple[str | None, str, str, int]]:
    pf = _parquet(f.path)
    names = pf.schema_arrow.names
    if "text" not in names:
        raise ValueError(f"{f.path}: no 'text' column (columns: {', '.join(names[:8])})")
    columns = [c for c in ("text", "label", "doc_id") if c in names]
    row = 0
    try:
        for batch in pf.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=columns):
            values = {c: batch.column(c).to_pylist() for c in columns}
            for i, text in enumerate(values["text"]):
                label = values["label"][i] if "label" in values else None
                doc_id = values["doc_id"][i] if "doc_id" in values else None
                fields = _fields(text, label, doc_id, f"{f.path}: row {row + i}")
                yield fields + (len(fields[2].encode("utf-8", "surrogatepass")),)
            row += batch.num_rows
    except (pa.ArrowException, OSError) as exc:
        raise ValueError(f"{f.path}: unreadable Parquet data near row {row} ({_first_line(exc)})") from None


def _fields(text: Any, label: Any, doc_id: Any, where: str) -> tuple[str | None, str, str]:
    if not isinstance(text, str):
        raise ValueError(f"{where}: 'text' must be a string, got {type(text).__name__}")
    return (None if doc_id is None else str(doc_id)), ("" if label is None else str(label)), text


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
