"""Text input: the built-in samples, uploaded files decoded to documents, and the per-request limits.

Uploads: .txt .md .py .json .csv, at most UPLOAD_MAX_BYTES per file, decoded as UTF-8, UTF-16 (with a BOM) or,
with a notice, Windows-1252 / Latin-1; binary or empty files give a one-line message, never an exception. A .csv
with `label` and `text` columns gives one document per row; rows that cannot be read are skipped and reported by
line number. Documents are (doc_id, label, text) tuples.

One message per refused file: the upload widget refuses files over UPLOAD_MAX_MB in the browser (its red file
chip, "File must be 1.0MB or smaller"), counting 1 MB as 1,000,000 bytes (1,048,576 on Windows), so the page
never sees them; UPLOAD_MAX_BYTES is that same 1,000,000, and `decode_upload`'s own check only fires for what the
widget let through (Windows, or a caller without the widget).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import streamlit as st

from analysis.sources import ModelSource
from app.samples import SAMPLES, labelled_samples  # noqa: F401 (the pages' names for them)

# --- input limits (stated in the UI) --------------------------------------------------------------------
UPLOAD_TYPES = ["txt", "md", "py", "json", "csv"]
UPLOAD_MAX_MB = 1  # the upload widget's own limit (whole MB): the browser refuses bigger files before sending them
UPLOAD_MAX_BYTES = UPLOAD_MAX_MB * 1_000_000  # per file: the widget's limit as the browser counts it (not 2**20)
UPLOAD_MAX_FILES = 10  # per request: at most 10 MB of uploads held at once
MAX_TEXT_CHARS = 1_000_000  # a pasted text is cut here before tokenizing (a 5 MB paste: no 8 s tokenization)
MAX_TOKENS = 20_000  # per routing request; longer input is cut with a message
LIMITS_TEXT = "Up to 10 files of 1 MB (.txt .md .py .json .csv) and 20,000 tokens per request."
NO_FILES_TEXT = (
    "Choose files to see their routing. A file over 1 MB is refused and marked in red; point at it to read why."
)


def samples(source: ModelSource, per_label: int = 2) -> dict[str, str]:
    """The built-in samples plus a few of the source's held-out eval documents per domain."""
    out = dict(SAMPLES)
    seen: dict[str, int] = {}
    for doc_id, label, text in source.eval_docs():
        if seen.get(label, 0) < per_label:
            seen[label] = seen.get(label, 0) + 1
            out[f"eval: {label} #{doc_id}"] = text
    return out


def limit_docs(source: ModelSource, docs: list[tuple[str, str, str]]) -> tuple[list[tuple[str, str, str]], bool]:
    """Docs cut so that together they hold at most MAX_TOKENS tokens; (docs, True) when something was cut.
    Each text is first cut to MAX_TEXT_CHARS characters, so a huge paste is never tokenized whole."""
    if sum(len(t.encode("utf-8", "surrogatepass")) for _, _, t in docs) <= MAX_TOKENS:  # a token holds >= 1 byte
        return docs, False  # (not >= 1 character: an emoji can be 4 tokens)
    cut_chars = any(len(t) > MAX_TEXT_CHARS for _, _, t in docs)
    docs = [(d, lab, t[:MAX_TEXT_CHARS]) for d, lab, t in docs]
    out, budget = [], MAX_TOKENS
    for doc_id, label, text in docs:
        if budget <= 0:
            return out, True
        spans = source.token_spans(text)
        if len(spans) > budget:
            out.append((doc_id, label, text[: spans[budget - 1][1]]))
            return out, True
        out.append((doc_id, label, text))
        budget -= len(spans)
    return out, cut_chars


@dataclass
class Upload:
    name: str
    text: str | None  # None when the file was refused
    error: str | None  # one-line reason shown to the user
    notice: str | None = None  # one line shown once for a file that was read, e.g. "read as cp1252", skipped rows


# C0 control bytes that no text file holds (tab, newline, vertical tab, form feed, carriage return and escape may)
_BINARY_BYTES = bytes(set(range(32)) - {9, 10, 11, 12, 13, 27}) + b"\x7f"


def decode_text(data: bytes) -> tuple[str | None, str | None, str | None]:
    """(text, encoding note, refusal) for bytes that are not empty: UTF-8 (its BOM dropped), UTF-16 when the data
    starts with a UTF-16 BOM, else Windows-1252 where it decodes, else Latin-1, with a note saying so. A NUL or
    another control byte outside a UTF-8 or UTF-16 text means binary."""
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        try:
            return data.decode("utf-16"), None, None
        except UnicodeDecodeError:
            return None, None, "starts like UTF-16 but does not decode as UTF-16 text"
    if b"\x00" in data:
        return None, None, "looks like a binary file, not text"
    try:
        return data.decode("utf-8-sig"), None, None
    except UnicodeDecodeError as exc:
        bad = exc.start
    if any(b in _BINARY_BYTES for b in data):
        return None, None, "looks like a binary file, not text"
    for codec, label in (("cp1252", "Windows-1252 (cp1252)"), ("latin-1", "Latin-1 (ISO-8859-1)")):
        try:
            text = data.decode(codec)
        except UnicodeDecodeError:
            continue
        note = f"not UTF-8 (byte {bad} is not valid UTF-8), so it was read as {label}"
        return text, note + "; if letters look wrong, save it as UTF-8.", None
    raise AssertionError("latin-1 decodes every byte")  # pragma: no cover


def decode_upload(name: str, data: bytes, max_bytes: int = UPLOAD_MAX_BYTES) -> Upload:
    """Bytes of an uploaded file -> text, or a clear error (never raises). The encoding is found by `decode_text`;
    a note (a fallback encoding, CSV rows skipped) goes to `Upload.notice`, one line starting with the file name."""
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if ext not in UPLOAD_TYPES:
        return Upload(name, None, f"{name}: unsupported file type; use {', '.join('.' + t for t in UPLOAD_TYPES)}.")
    if len(data) > max_bytes:
        return Upload(name, None, f"{name}: too large ({size_text(len(data))}; the limit is {size_text(max_bytes)}).")
    if not data.strip():
        return Upload(name, None, f"{name}: the file is empty.")
    text, note, refusal = decode_text(data)
    if refusal is not None:
        return Upload(name, None, f"{name}: {refusal}.")
    if not text.strip():
        return Upload(name, None, f"{name}: the file is empty.")
    notes = [note] if note else []
    if ext == "csv":
        _, skipped = csv_docs(name, text)
        if skipped:
            notes.append(skipped_text(skipped))
    return Upload(name, text, None, f"{name}: " + " ".join(notes) if notes else None)


def size_text(n_bytes: int) -> str:
    """A byte count as people read it, never rounded onto a limit: 5,000,000 is "5 MB", 1,000,001 "1,000,001 bytes"."""
    mb = round(n_bytes / 1e6, 1)
    return f"{mb:g} MB" if mb * 1e6 == n_bytes else f"{n_bytes:,} bytes"


# --- CSV of labelled documents ------------------------------------------------------------------------------


def csv_docs(name: str, text: str) -> tuple[list[tuple[str, str, str]] | None, list[tuple[int, int, str]]]:
    """A CSV whose header names `label` and `text` columns -> (one (doc_id, label, text) per row, skipped rows as
    (first line, last line, reason)); (None, []) when the header lacks them (the file is then one document).

    Line numbers are the file's (the header is line 1; a quoted text can span lines). A row that cannot be read
    (bad quoting, more fields than the header, no text field, an empty text) is skipped and reported; blank
    lines are ignored. Extra columns are ignored; a missing label is ""."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = [h.strip() for h in next(reader)]
    except (csv.Error, StopIteration):
        return None, []
    if "label" not in header or "text" not in header:
        return None, []
    i_label, i_text = header.index("label"), header.index("text")
    docs: list[tuple[str, str, str]] = []
    skipped: list[tuple[int, int, str]] = []
    while True:
        first = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            end = "unexpected end of data" in str(exc)
            skipped.append((first, reader.line_num, "a quote is never closed" if end else "bad quoting"))
            continue
        last = reader.line_num
        if not row or not any(f.strip() for f in row):
            continue  # a blank line
        if len(row) > len(header) and any(f.strip() for f in row[len(header) :]):
            skipped.append((first, last, f"{len(row)} fields where the header has {len(header)}"))
        elif len(row) <= i_text or not row[i_text].strip():
            skipped.append((first, last, "no text"))
        else:
            docs.append((f"{name}#{len(docs)}", row[i_label] if i_label < len(row) else "", row[i_text]))
    return docs, skipped


def skipped_text(skipped: list[tuple[int, int, str]], show: int = 5) -> str:
    """Skipped CSV rows as one sentence: "2 rows could not be read and were skipped: line 3 (bad quoting), ..."."""
    lines = [f"line {a} ({why})" if a == b else f"lines {a}–{b} ({why})" for a, b, why in skipped[:show]]
    more = f" and {len(skipped) - show} more" if len(skipped) > show else ""
    rows = "1 row" if len(skipped) == 1 else f"{len(skipped)} rows"
    hint = " Quote a text that holds commas." if any("fields where" in why for _, _, why in skipped) else ""
    verb = "was" if len(skipped) == 1 else "were"
    return f"{rows} could not be read and {verb} skipped: {', '.join(lines)}{more}.{hint}"


def docs_from_uploads(uploads: list[Upload]) -> list[tuple[str, str, str]]:
    """(doc_id, label, text) per good upload; a .csv with `label` and `text` columns gives one doc per readable row
    (`csv_docs`; the rows it skips are in the upload's notice), any other file is one doc labelled by its name."""
    docs: list[tuple[str, str, str]] = []
    for up in uploads:
        if up.text is None:
            continue
        rows = csv_docs(up.name, up.text)[0] if up.name.lower().endswith(".csv") else None
        docs.extend(rows if rows is not None else [(up.name, Path(up.name).stem, up.text)])
    seen: set[str] = set()
    for i, (doc_id, label, text) in enumerate(docs):  # the same file name twice: "a.txt", "a.txt (2)"
        unique, n = doc_id, 1
        while unique in seen:
            n += 1
            unique = f"{doc_id} ({n})"
        seen.add(unique)
        docs[i] = (unique, label, text)
    return docs


def notices(uploads: list[Upload]) -> list[str]:
    """The notices of the uploads that were read: a fallback encoding, CSV rows skipped (one line per file)."""
    return [up.notice for up in uploads if up.notice]


def show_notices(uploads: list[Upload]) -> None:
    """Show each read file's notice once, as a warning (the file was read, but not exactly as given)."""
    for notice in notices(uploads):
        st.warning(notice, icon=":material/warning:")


def read_uploads(files: list[Any] | None) -> tuple[list[Upload], list[str]]:
    """Decode Streamlit UploadedFile objects; returns (good uploads, error messages)."""
    good, errors = [], []
    files = list(files or [])
    if len(files) > UPLOAD_MAX_FILES:
        skipped = ", ".join(getattr(f, "name", "file") for f in files[UPLOAD_MAX_FILES:])
        errors.append(f"Only {UPLOAD_MAX_FILES} files per request; not read: {skipped}.")
        files = files[:UPLOAD_MAX_FILES]
    for f in files:
        try:
            data = f.getvalue()
        except Exception as exc:  # noqa: BLE001 - a broken upload must not break the page
            errors.append(f"{getattr(f, 'name', 'file')}: could not be read ({exc}).")
            continue
        up = decode_upload(f.name, data)
        (good if up.error is None else errors).append(up if up.error is None else up.error)
    return good, errors
