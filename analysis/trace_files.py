"""The on-disk form of a routing trace: a parquet file plus an optional safetensors sidecar (layout in
`analysis.trace`'s docstring). This module knows files, metadata and checksums; `analysis.trace` turns the
table it reads into a `RoutingTrace`.

- `PATH.parquet`: one wide table; its key-value metadata key `moe_explorer_trace` holds the JSON header
  `{"format", "n_tokens", "meta", "texts", "arrays": {name: shape}, "sidecar", "sidecar_sha256"}`.
- `PATH.arrays.safetensors`: the optional arrays; the header records its SHA-256, so a stale sidecar is an error.
Every failure to read is a one-line ValueError naming the file. No pickle anywhere.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from moe_core.files import atomic_write

FORMAT = "moe-explorer-trace/1"
METADATA_KEY = b"moe_explorer_trace"


def sidecar_path(path: str | os.PathLike) -> Path:
    """trace.parquet -> trace.arrays.safetensors (same folder)."""
    path = Path(path)
    return path.with_name(path.stem + ".arrays.safetensors")


def header(n_tokens: int, meta: dict[str, Any], texts: dict[str, str]) -> dict[str, Any]:
    """The JSON header of a trace file without arrays (`write` fills in the sidecar fields)."""
    return {
        "format": FORMAT,
        "n_tokens": n_tokens,
        "meta": meta,
        "texts": texts,
        "arrays": {},
        "sidecar": None,
        "sidecar_sha256": None,
    }


def write(path: str | os.PathLike, wide: pd.DataFrame, head: dict[str, Any], arrays: dict[str, np.ndarray]) -> Path:
    """Write PATH (parquet) and, when there are arrays, its sidecar PATH.arrays.safetensors; both atomic,
    the sidecar first (a parquet file that exists names a complete sidecar)."""
    from safetensors.numpy import save as st_save

    path = Path(path)
    sidecar = sidecar_path(path)
    head = {**head, "arrays": {name: list(arr.shape) for name, arr in arrays.items()}}
    if arrays:
        blob = st_save({name: np.ascontiguousarray(arr) for name, arr in arrays.items()})
        head.update(sidecar=sidecar.name, sidecar_sha256=hashlib.sha256(blob).hexdigest())
        atomic_write(sidecar, lambda tmp: Path(tmp).write_bytes(blob))
    elif sidecar.exists():
        sidecar.unlink()  # a stale sidecar from an earlier save
    table = _table(wide, head)
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))
    return path


def parquet_bytes(wide: pd.DataFrame, head: dict[str, Any]) -> bytes:
    """The parquet file alone, as bytes (no sidecar)."""
    buf = pa.BufferOutputStream()
    pq.write_table(_table(wide, head), buf)
    return buf.getvalue().to_pybytes()


def read(path: str | os.PathLike, expect_config: Any = None) -> tuple[dict[str, Any], pd.DataFrame]:
    """(header, wide table) of a trace file. ValueError (one line) when the file is missing, not parquet, a
    parquet file that is not a trace, of another format, or (with `expect_config`, a ModelConfig or its dict)
    recorded with another model config."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"trace file not found: {path}")
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as exc:
        raise ValueError(f"{path} is not a parquet file ({first_line(exc)})") from None
    raw = (schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        raise ValueError(f"{path} is a parquet file but not a moe-explorer routing trace")
    try:
        head = json.loads(raw)
        fmt, meta = head["format"], head["meta"]
        head["n_tokens"] = int(head["n_tokens"])
        head["texts"]  # noqa: B018 - a header without texts is malformed
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"{path}: malformed routing-trace metadata") from None
    if fmt != FORMAT:
        raise ValueError(f"{path}: unsupported trace format {fmt!r} (this version reads {FORMAT!r})")
    if expect_config is not None:
        _check_config(path, meta, expect_config)
    try:
        wide = pq.read_table(path).to_pandas()
    except (pa.ArrowException, OSError) as exc:
        raise ValueError(f"{path}: unreadable parquet data ({first_line(exc)})") from None
    return head, wide


def read_arrays(path: str | os.PathLike, head: dict[str, Any]) -> dict[str, np.ndarray]:
    """The sidecar's arrays named in the header ({} without a sidecar); ValueError when it is missing, belongs
    to another trace (checksum) or lacks an array of the recorded shape."""
    from safetensors.numpy import load_file

    if not head.get("sidecar"):
        return {}
    sidecar = Path(path).with_name(head["sidecar"])
    if not sidecar.is_file():
        raise ValueError(f"its arrays file {sidecar.name} is missing")
    if hashlib.sha256(sidecar.read_bytes()).hexdigest() != head.get("sidecar_sha256"):
        raise ValueError(f"its arrays file {sidecar.name} does not belong to it (checksum mismatch)")
    arrays = load_file(sidecar)
    for name, shape in head.get("arrays", {}).items():
        if name not in arrays or list(arrays[name].shape) != shape:
            raise ValueError(f"array {name!r} missing or of the wrong shape in {sidecar.name}")
    return arrays


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _table(wide: pd.DataFrame, head: dict[str, Any]) -> pa.Table:
    try:
        encoded = json.dumps(head, ensure_ascii=False, allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"trace meta/texts must be JSON-serialisable: {exc}") from None
    table = pa.Table.from_pandas(wide, preserve_index=False)
    return table.replace_schema_metadata({**(table.schema.metadata or {}), METADATA_KEY: encoded})


def _check_config(path: Path, meta: dict[str, Any], expect_config: Any) -> None:
    expected = expect_config.to_dict() if hasattr(expect_config, "to_dict") else expect_config
    found = meta.get("config")
    if found is None:
        raise ValueError(f"{path}: the trace records no model config, cannot check it belongs to this model")
    if found != expected:
        diff = sorted(_diff_keys(found, expected))
        shown = ", ".join(diff[:5]) + (" ..." if len(diff) > 5 else "")
        raise ValueError(f"{path}: trace was recorded with another model (config differs in: {shown})")


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            out += _diff_keys(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]
