"""Atomic files and JSON lines: the one place that writes files a reader may open at any moment.

An atomic write goes to a temp file in the same folder, is fsync-ed, then renamed over the target (and the
folder fsync-ed), so a reader never sees half a file and a crash leaves the old file or the new one.
Torch-free: the app, the recorder and the trainer all write through here.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any


def _fsync_dir(folder: Path) -> None:
    try:  # makes the rename durable; not supported everywhere (e.g. Windows), harmless to skip
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[str], Any]) -> None:
    """Call `write(tmp_path)`, fsync the temp file, then rename it over `path` (same folder).

    The temp file (`.NAME.*.tmp`) is removed when `write` fails; the target is untouched then."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; run files are meant to be shared/read by the app
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    _fsync_dir(path.parent)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    text = json.dumps(data, indent=2, sort_keys=False) + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_jsonl_atomic(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    """Replace a JSON-lines file in one rename (used to cut history back to a checkpoint on resume)."""
    text = "".join(json.dumps(row) + "\n" for row in rows)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def append_jsonl(path: str | os.PathLike, row: dict) -> None:
    """Append one row as one line and flush it, so readers see whole rows while training runs."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Rows of a JSON-lines file; [] if it does not exist.

    A torn last line (a writer caught mid-write, or killed) is ignored; a bad line elsewhere is an error.
    """
    path = Path(path)
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8", errors="replace").split("\n")
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):  # the last line has no newline yet: torn, skip it
                break
            raise ValueError(f"{path}:{number}: not a JSON line") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
        rows.append(row)
    return rows
