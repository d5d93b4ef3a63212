"""The routing dataset on disk: paths, table schemas, the manifest and its checks (docs/ARCHITECTURE.md).

A dataset is a directory, format `moe-explorer-dataset/1`:

    DIR/manifest.json                                  the ONLY list of readable files (written atomically)
    DIR/docs/part-w000-s000007.parquet                 DOCS_SCHEMA: one row per document
    DIR/tokens/part-w000-s000007.parquet               TOKENS_SCHEMA: one row per token
    DIR/routing/step=S/layer=L/part-....parquet        ROUTING_SCHEMA: one row per (token, rank) of layer L
    DIR/token_layer/step=S/layer=L/part-....parquet    TOKEN_LAYER_SCHEMA: one row per token of layer L
    DIR/sample/step=S/part-....safetensors             SAMPLE_ARRAYS: router inputs of a stratified sample
    DIR/progress/worker-000.jsonl                      per-worker append-only log of finished shards

A token is keyed by (doc_index, position); doc_index is the document's position in the input stream. `S` is
the step or `none` (a source without steps); `L` is the MoE-layer index 0..L-1. Readers read only files the
manifest lists, after checking their sizes (and SHA-256 on `verify`): a half-written or foreign file is never
read. Every failure is a one-line `DatasetError` (a ValueError) naming the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa

from moe_core.files import write_json_atomic

FORMAT = "moe-explorer-dataset/1"
MANIFEST = "manifest.json"
PROGRESS_DIR = "progress"
TABLES = ("docs", "tokens", "routing", "token_layer", "sample")
PER_LAYER = ("routing", "token_layer")  # tables partitioned by step=S/layer=L
STEP_NONE = "none"  # partition value of a source without steps (a Hugging Face folder)
SHARD_RE = re.compile(r"^w(\d{3,})-s(\d{6,})$")

DOCS_SCHEMA = pa.schema(
    [
        ("doc_index", pa.int64()),  # global: position of the document in the input stream
        ("doc_id", pa.string()),  # the input's own id (a JSONL/Parquet `doc_id`), else str(doc_index)
        ("label", pa.string()),  # "" = unlabelled
        ("text", pa.string()),
        ("n_tokens", pa.int32()),
    ]
)
TOKENS_SCHEMA = pa.schema(
    [
        ("doc_index", pa.int64()),
        ("position", pa.int32()),  # 0-based position in the document
        ("token_id", pa.int32()),
        ("token_text", pa.string()),
        ("char_start", pa.int32()),  # [char_start, char_end) in the document's text
        ("char_end", pa.int32()),
        ("label", pa.string()),
    ]
)
ROUTING_SCHEMA = pa.schema(
    [
        ("doc_index", pa.int64()),
        ("position", pa.int32()),
        ("rank", pa.int8()),  # 0 = top-1 (by score + bias, the score the router chose on)
        ("expert", pa.int16()),
        ("weight", pa.float32()),  # gate weight
        ("score", pa.float32()),  # unbiased router score
        ("biased_score", pa.float32()),  # score + bias
        ("bias_flip", pa.bool_()),  # chosen on score + bias, not on score alone
    ]
)
TOKEN_LAYER_SCHEMA = pa.schema(
    [
        ("doc_index", pa.int64()),
        ("position", pa.int32()),
        ("shared_share", pa.float32()),
        ("entropy", pa.float32()),
    ]
)
SCHEMAS: dict[str, pa.Schema] = {
    "docs": DOCS_SCHEMA,
    "tokens": TOKENS_SCHEMA,
    "routing": ROUTING_SCHEMA,
    "token_layer": TOKEN_LAYER_SCHEMA,
}
# sample/step=S/part-*.safetensors: hidden (M, L, D) float16, doc_index (M,) int64, position (M,) int64
SAMPLE_ARRAYS = ("hidden", "doc_index", "position")


class DatasetError(ValueError):
    """A one-line error about a dataset file (the app/cli prints it without a traceback)."""


# --- names and paths ------------------------------------------------------------------------------------


def shard_id(worker: int, index: int) -> str:
    """Worker 0's shard 7 -> "w000-s000007" (sorts in stream order within a worker)."""
    return f"w{int(worker):03d}-s{int(index):06d}"


def parse_shard_id(shard: str) -> tuple[int, int]:
    """ "w000-s000007" -> (0, 7); DatasetError for anything else."""
    m = SHARD_RE.match(shard)
    if not m:
        raise DatasetError(f"malformed shard id {shard!r} (expected e.g. w000-s000007)")
    return int(m.group(1)), int(m.group(2))


def step_value(step: int | None) -> str:
    """The partition value of `step`: "none" for a source without steps."""
    return STEP_NONE if step is None else str(int(step))


def parse_step(value: str) -> int | None:
    return None if value == STEP_NONE else int(value)


def table_path(table: str, shard: str, step: int | None = None, layer: int | None = None) -> str:
    """Relative POSIX path of one shard's file of `table` (routing/token_layer need step and layer, sample a step)."""
    if table in ("docs", "tokens"):
        return f"{table}/part-{shard}.parquet"
    if table in PER_LAYER:
        if layer is None:
            raise ValueError(f"the {table} table is partitioned by layer: give one")
        return f"{table}/step={step_value(step)}/layer={int(layer)}/part-{shard}.parquet"
    if table == "sample":
        return f"sample/step={step_value(step)}/part-{shard}.safetensors"
    raise ValueError(f"unknown dataset table {table!r} (one of {', '.join(TABLES)})")


def progress_path(root: str | os.PathLike, worker: int) -> Path:
    return Path(root) / PROGRESS_DIR / f"worker-{int(worker):03d}.jsonl"


def parse_path(rel: str) -> dict[str, Any]:
    """{"table", "shard", "step", "layer"} of a relative file path written by `table_path`."""
    parts = rel.split("/")
    out: dict[str, Any] = {"table": parts[0], "step": None, "layer": None}
    for part in parts[1:-1]:
        key, _, value = part.partition("=")
        out[key] = parse_step(value) if key == "step" else int(value)
    out["shard"] = parts[-1].split(".", 1)[0].removeprefix("part-")
    return out


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# --- the manifest ---------------------------------------------------------------------------------------


def new_manifest(
    source: dict[str, Any],
    *,
    steps: list[int | None],
    inputs: list[dict[str, Any]] | None = None,
    config: dict[str, Any] | None = None,
    sample: dict[str, Any] | None = None,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An empty dataset's manifest. source: {"name", "kind", "path"}; steps: the recorded steps (None for a
    source without steps); inputs: the input files with size and mtime; config: the recording settings (a
    resume must use the same); sample: {"max_hidden": M, ...}; meta: the model's n_layers, n_experts, top_k,
    layer_blocks, config (None until the first shard is recorded)."""
    stamp = now()
    return {
        "format": FORMAT,
        "source": {key: source.get(key) for key in ("name", "kind", "path")},
        "meta": meta,
        "steps": [None if s is None else int(s) for s in steps],
        "inputs": list(inputs or []),
        "config": dict(config or {}),
        "sample": dict(sample or {"max_hidden": 0}),
        "shards": [],
        "complete": False,  # True once every input document is recorded
        "created": stamp,
        "updated": stamp,
    }


def read_manifest(root: str | os.PathLike) -> dict[str, Any]:
    """The validated manifest of the dataset at `root`; DatasetError (one line) when it is missing, not JSON,
    of another format version, or malformed."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        hint = " (was its recording interrupted? run record --resume)" if Path(root).is_dir() else ""
        raise DatasetError(f"{path}: not found: not a routing dataset{hint}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: not a JSON manifest ({str(exc).splitlines()[0]})") from None
    if not isinstance(manifest, dict):
        raise DatasetError(f"{path}: not a dataset manifest")
    fmt = manifest.get("format")
    if fmt != FORMAT:
        raise DatasetError(f"{path}: unsupported dataset format {fmt!r} (this version reads {FORMAT!r})")
    for key, kind in (("source", dict), ("steps", list), ("shards", list), ("sample", dict)):
        if not isinstance(manifest.get(key), kind):
            raise DatasetError(f"{path}: malformed manifest ({key!r} missing or not a {kind.__name__})")
    for shard in manifest["shards"]:
        check_shard_record(shard, path)
    return manifest


def write_manifest(root: str | os.PathLike, manifest: dict[str, Any]) -> None:
    """Write the manifest atomically (readers see the old one or the new one), stamping `updated`."""
    manifest["updated"] = now()
    write_json_atomic(Path(root) / MANIFEST, manifest)


def check_shard_record(shard: Any, where: str | os.PathLike) -> None:
    """DatasetError unless `shard` is a shard record: {"id", "worker", "files": {rel: {"rows", "bytes",
    "sha256"}}, "docs", "tokens", "doc_start", "doc_end"}."""
    try:
        parse_shard_id(shard["id"])
        files = shard["files"]
        ok = isinstance(files, dict) and all(
            isinstance(rel, str)
            and not rel.startswith("/")
            and ".." not in rel.split("/")
            and isinstance(f.get("bytes"), int)
            and isinstance(f.get("sha256"), str)
            for rel, f in files.items()
        )
        ok = ok and all(isinstance(shard[k], int) for k in ("worker", "docs", "tokens", "doc_start", "doc_end"))
    except (KeyError, TypeError, AttributeError, DatasetError):
        ok = False
    if not ok:
        shown = shard.get("id") if isinstance(shard, dict) else shard
        raise DatasetError(f"{where}: malformed shard record {str(shown)[:60]!r}")


def check_files(root: str | os.PathLike, manifest: dict[str, Any], checksums: bool = False) -> None:
    """DatasetError (naming the file) unless every listed file exists with its recorded size (and, with
    `checksums`, its recorded SHA-256)."""
    root = Path(root)
    for shard in manifest["shards"]:
        for rel, info in shard["files"].items():
            path = root / rel
            if not path.is_file():
                raise DatasetError(f"{path}: listed in the manifest but missing")
            size = path.stat().st_size
            if size != info["bytes"]:
                recorded = info["bytes"]
                raise DatasetError(f"{path}: {size} bytes, the manifest records {recorded} (truncated or replaced)")
            if checksums and sha256_file(path) != info["sha256"]:
                raise DatasetError(f"{path}: checksum does not match the manifest (corrupted or replaced)")


def listed_files(
    manifest: dict[str, Any], table: str, step: int | None | str = "any", layer: int | None = None
) -> list[str]:
    """Relative paths of `table`'s listed files, in shard order; `step`/`layer` narrow the partition
    ("any" step: all steps; layer None: all layers)."""
    out = []
    for shard in sorted(manifest["shards"], key=lambda s: (s["doc_start"], s["id"])):  # stream order
        for rel in shard["files"]:
            info = parse_path(rel)
            if info["table"] != table:
                continue
            if step != "any" and info["step"] != step:
                continue
            if layer is not None and info["layer"] != layer:
                continue
            out.append(rel)
    return out
