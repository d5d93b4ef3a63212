"""Text input: the built-in samples, uploaded files decoded to documents, and the per-request limits.

Uploads: .txt .md .py .json .csv, at most UPLOAD_MAX_BYTES per file; binary, undecodable or empty files give a
one-line message, never an exception. Documents are (doc_id, label, text) tuples.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.sources import ModelSource

# --- input limits (stated in the UI) --------------------------------------------------------------------
UPLOAD_TYPES = ["txt", "md", "py", "json", "csv"]
UPLOAD_MAX_BYTES = 1_000_000  # per file
UPLOAD_MAX_MB = 1  # the upload widget's own limit (whole MB): the server refuses bigger files before reading them
UPLOAD_MAX_FILES = 10  # per request: at most 10 MB of uploads held at once
MAX_TEXT_CHARS = 1_000_000  # a pasted text is cut here before tokenizing (a 5 MB paste: no 8 s tokenization)
MAX_TOKENS = 20_000  # per routing request; longer input is cut with a message
LIMITS_TEXT = "Up to 10 files of 1 MB (.txt .md .py .json .csv) and 20,000 tokens per request."

SAMPLES = {
    "Prose": "The old lighthouse keeper climbed the stairs every evening. From the top he could see the fishing "
    "boats coming home, their lights bobbing on the dark water like fireflies.",
    "Python code": "def fibonacci(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n"
    "    return a\n\nprint([fibonacci(i) for i in range(10)])\n",
    "Math": "Let f(x) = 3x^2 + 2x - 5. Then f'(x) = 6x + 2, so the minimum is at x = -1/3, "
    "where f(-1/3) = 1/3 - 2/3 - 5 = -16/3.",
    "JSON": '{"name": "moe-explorer", "experts": 16, "top_k": 2, "layers": [1, 2, 3], "shared": true}',
    "Escaping test": "<script>alert(1)</script> & <b>not bold</b>",
}


def samples(source: ModelSource, per_label: int = 2) -> dict[str, str]:
    """The built-in samples plus a few of the source's held-out eval documents per domain."""
    out = dict(SAMPLES)
    seen: dict[str, int] = {}
    for doc_id, label, text in source.eval_docs():
        if seen.get(label, 0) < per_label:
            seen[label] = seen.get(label, 0) + 1
            out[f"eval: {label} #{doc_id}"] = text
    return out


def labelled_samples() -> tuple[tuple[str, str, str], ...]:
    """The built-in samples as documents labelled by their name (for a source without eval documents)."""
    return tuple((name, name, text) for name, text in SAMPLES.items() if name != "Escaping test")


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


def decode_upload(name: str, data: bytes, max_bytes: int = UPLOAD_MAX_BYTES) -> Upload:
    """Bytes of an uploaded file -> text, or a clear error (never raises).

    Tries UTF-8 (a UTF-8 BOM is dropped) and UTF-16 only when the file starts with a UTF-16 BOM.
    A NUL byte in a file without a UTF-16 BOM means binary.
    """
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if ext not in UPLOAD_TYPES:
        return Upload(name, None, f"{name}: unsupported file type; use {', '.join('.' + t for t in UPLOAD_TYPES)}.")
    if len(data) > max_bytes:
        return Upload(name, None, f"{name}: too large ({len(data) / 1e6:.1f} MB; the limit is {max_bytes / 1e6:g} MB).")
    if not data.strip():
        return Upload(name, None, f"{name}: the file is empty.")
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        try:
            text = data.decode("utf-16")
        except UnicodeDecodeError:
            return Upload(name, None, f"{name}: starts like UTF-16 but does not decode as UTF-16 text.")
    elif b"\x00" in data:
        return Upload(name, None, f"{name}: looks like a binary file, not text.")
    else:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            return Upload(name, None, f"{name}: not UTF-8 text (bad byte at position {exc.start}); save it as UTF-8.")
    if not text.strip():
        return Upload(name, None, f"{name}: the file is empty.")
    return Upload(name, text, None)


def docs_from_uploads(uploads: list[Upload]) -> list[tuple[str, str, str]]:
    """(doc_id, label, text) per good upload; a .csv with `label` and `text` columns gives one doc per row,
    any other file is one doc labelled by its file name."""
    docs: list[tuple[str, str, str]] = []
    for up in uploads:
        if up.text is None:
            continue
        if up.name.lower().endswith(".csv"):
            try:
                df = pd.read_csv(io.StringIO(up.text), dtype=str).fillna("")
            except (ValueError, pd.errors.ParserError):
                df = None
            if df is not None and {"label", "text"} <= set(df.columns):
                for i, (label, text) in enumerate(zip(df["label"], df["text"])):
                    if text.strip():
                        docs.append((f"{up.name}#{i}", label, text))
                continue
        docs.append((up.name, Path(up.name).stem, up.text))
    seen: set[str] = set()
    for i, (doc_id, label, text) in enumerate(docs):  # the same file name twice: "a.txt", "a.txt (2)"
        unique, n = doc_id, 1
        while unique in seen:
            n += 1
            unique = f"{doc_id} ({n})"
        seen.add(unique)
        docs[i] = (unique, label, text)
    return docs


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
