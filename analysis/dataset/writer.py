"""Write a routing dataset: one shard at a time, atomically, then a line in the worker's progress log.

`DatasetWriter(root, source, worker)` creates the manifest (or checks that an existing one was recorded with
the same source, steps, inputs and settings), `write_shard(shard_id, data)` writes every file of the shard
to a temp name, renames it into place and appends the shard's record (files, sizes, SHA-256) to
`progress/worker-NNN.jsonl` with an fsync: a shard is finished exactly when its progress line is there.
`finalize()` merges the progress logs of all workers into manifest.json (atomic; callable at any time).

`ShardBuilder` turns the RoutingTraces of a shard's record batches into the shard's tables (`ShardData`),
keeping the router inputs of a stratified sample: per label the tokens with the smallest `sample_keys` (a
hash of (doc_index, position), so the choice does not depend on batching or on which worker records it).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from analysis.dataset import layout
from analysis.dataset.layout import DatasetError
from moe_core.files import atomic_write, read_jsonl

if TYPE_CHECKING:
    from analysis.trace import RoutingTrace

COMPRESSION = "zstd"  # ~2x smaller than snappy on routing tables, as fast to read
STALE_SECONDS = 60  # a manifest temp file this old is no live write (they take milliseconds)
CHECKED_KEYS = ("source", "steps", "inputs", "config", "sample")  # a resume must match these exactly

Step = int | None


@dataclass
class ShardData:
    """The tables of one shard (schemas in `layout`); the documents doc_start..doc_end-1 of the stream."""

    docs: pa.Table  # DOCS_SCHEMA, one row per document
    tokens: pa.Table  # TOKENS_SCHEMA, one row per token
    routing: dict[tuple[Step, int], pa.Table]  # (step, layer) -> ROUTING_SCHEMA
    token_layer: dict[tuple[Step, int], pa.Table]  # (step, layer) -> TOKEN_LAYER_SCHEMA
    sample: dict[Step, dict[str, np.ndarray]] = field(default_factory=dict)  # step -> SAMPLE_ARRAYS
    doc_start: int = 0
    doc_end: int = 0

    @property
    def n_tokens(self) -> int:
        return self.tokens.num_rows


class DatasetWriter:
    """Writes shards of worker `worker` into the dataset at `root` (see the module docstring).

    source: {"name", "kind", "path"} of the model source; steps: the recorded steps; inputs, config, sample:
    the manifest's fields (a resume with different ones is a one-line DatasetError). On opening, the
    worker's leftovers of an interrupted run are removed: temp files, renamed files of an unfinished shard,
    a torn last progress line.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        source: dict[str, Any],
        worker: int = 0,
        *,
        steps: list[Step] | None = None,
        inputs: list[dict[str, Any]] | None = None,
        config: dict[str, Any] | None = None,
        sample: dict[str, Any] | None = None,
    ):
        self.root = Path(root)
        self.worker = int(worker)
        self.progress = layout.progress_path(self.root, self.worker)
        wanted = layout.new_manifest(
            source, steps=list(steps if steps is not None else [None]), inputs=inputs, config=config, sample=sample
        )
        if (self.root / layout.MANIFEST).is_file():
            self.manifest = layout.read_manifest(self.root)
            diff = [key for key in CHECKED_KEYS if self.manifest.get(key) != wanted[key]]
            if diff:
                raise DatasetError(
                    f"{self.root / layout.MANIFEST}: this dataset was recorded with another "
                    f"{' / '.join(diff)}; record into a new --out folder"
                )
        else:
            if self.root.exists() and any(self.root.iterdir()) and not (self.root / layout.PROGRESS_DIR).is_dir():
                raise DatasetError(f"{self.root}: not empty and not a routing dataset; choose an empty --out folder")
            self.root.mkdir(parents=True, exist_ok=True)
            self.manifest = wanted
            layout.write_manifest(self.root, self.manifest)
        self._repair_progress()
        self._remove_leftovers()

    # --- state ----------------------------------------------------------------------------------------

    def finished_shards(self) -> dict[str, dict[str, Any]]:
        """This worker's finished shards: id -> progress record."""
        rows = read_jsonl(self.progress)
        for row in rows:
            layout.check_shard_record(row, self.progress)
        return {row["id"]: row for row in rows}

    @property
    def complete(self) -> bool:
        return bool(self.manifest.get("complete"))

    # --- writing --------------------------------------------------------------------------------------

    def write_shard(self, shard: str, data: ShardData, meta: dict[str, Any] | None = None) -> dict[str, Any]:
        """Write every file of `shard` atomically, then append its progress record (returned). meta: the
        model's n_layers, n_experts, top_k, layer_blocks, config (the manifest takes the first shard's)."""
        worker, _ = layout.parse_shard_id(shard)
        if worker != self.worker:
            raise ValueError(f"shard {shard} belongs to worker {worker}, this writer is worker {self.worker}")
        files: dict[str, dict[str, Any]] = {}
        tables = [("docs", None, None, data.docs), ("tokens", None, None, data.tokens)]
        tables += [("routing", s, l, t) for (s, l), t in sorted(data.routing.items(), key=_step_layer_key)]
        tables += [("token_layer", s, l, t) for (s, l), t in sorted(data.token_layer.items(), key=_step_layer_key)]
        for table, step, layer, values in tables:
            rel = layout.table_path(table, shard, step, layer)
            values = values.cast(layout.SCHEMAS[table])  # ArrowInvalid for a lossy cast: a bug upstream
            atomic_write(self.root / rel, lambda tmp, v=values: pq.write_table(v, tmp, compression=COMPRESSION))
            files[rel] = self._file_record(rel, values.num_rows)
        from safetensors.numpy import save as st_save

        for step, arrays in sorted(data.sample.items(), key=lambda kv: _step_key(kv[0])):
            rel = layout.table_path("sample", shard, step)
            blob = st_save({name: np.ascontiguousarray(arrays[name]) for name in layout.SAMPLE_ARRAYS})
            atomic_write(self.root / rel, lambda tmp, b=blob: Path(tmp).write_bytes(b))
            files[rel] = self._file_record(rel, len(arrays["doc_index"]))
        record = {
            "id": shard,
            "worker": self.worker,
            "files": files,
            "docs": data.docs.num_rows,
            "tokens": data.n_tokens,
            "doc_start": int(data.doc_start),
            "doc_end": int(data.doc_end),
            "meta": meta,
        }
        _append_synced(self.progress, record)
        return record

    def _file_record(self, rel: str, rows: int) -> dict[str, Any]:
        path = self.root / rel
        return {"rows": int(rows), "bytes": path.stat().st_size, "sha256": layout.sha256_file(path)}

    def finalize(self, complete: bool | None = None) -> dict[str, Any]:
        """Merge every worker's progress log into manifest.json (atomic) and return it; `complete` marks the
        recording finished (None: leave the flag)."""
        manifest = layout.read_manifest(self.root)
        shards = merged_progress(self.root)
        manifest["shards"] = [{k: v for k, v in row.items() if k != "meta"} for row in shards]
        if manifest.get("meta") is None:
            manifest["meta"] = next((row["meta"] for row in shards if row.get("meta")), None)
        if complete is not None:
            manifest["complete"] = bool(complete)
        layout.write_manifest(self.root, manifest)
        self.manifest = manifest
        return manifest

    # --- leftovers of an interrupted run ----------------------------------------------------------------

    def _repair_progress(self) -> None:
        """Cut a torn last line (a writer killed mid-append), so the next append starts a line of its own."""
        if not self.progress.is_file():
            return
        raw = self.progress.read_bytes()
        if raw and not raw.endswith(b"\n"):
            with open(self.progress, "r+b") as f:
                f.truncate(raw.rfind(b"\n") + 1)
                f.flush()
                os.fsync(f.fileno())

    def _remove_leftovers(self) -> None:
        """Delete this worker's temp files and the files of shards it did not finish (never read: unlisted)."""
        for path in self.root.glob(f".{layout.MANIFEST}.*.tmp"):  # a manifest write cut short, minutes ago
            if time.time() - path.stat().st_mtime > STALE_SECONDS:
                path.unlink(missing_ok=True)
        finished = {rel for row in self.finished_shards().values() for rel in row["files"]}
        prefix = f"part-w{self.worker:03d}-"
        for table in layout.TABLES:
            folder = self.root / table
            if not folder.is_dir():
                continue
            for path in folder.rglob("*"):
                if not path.is_file():
                    continue
                rel = path.relative_to(self.root).as_posix()
                temp = path.name.startswith(f".{prefix}") and path.name.endswith(".tmp")
                if temp or (path.name.startswith(prefix) and rel not in finished):
                    path.unlink()


def merged_progress(root: str | os.PathLike) -> list[dict[str, Any]]:
    """Finished shards of every worker (progress/worker-*.jsonl), in stream order; DatasetError for a
    malformed record or two workers claiming overlapping documents."""
    folder = Path(root) / layout.PROGRESS_DIR
    by_id: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.glob("worker-*.jsonl")) if folder.is_dir() else []:
        for row in read_jsonl(path):
            layout.check_shard_record(row, path)
            by_id[row["id"]] = row  # a shard re-recorded after a crash: the last record wins
    shards = sorted(by_id.values(), key=lambda r: (r["doc_start"], r["id"]))
    for a, b in zip(shards, shards[1:]):
        if b["doc_start"] < a["doc_end"]:
            raise DatasetError(f"{folder}: shards {a['id']} and {b['id']} both hold document {b['doc_start']}")
    return shards


def _append_synced(path: Path, row: dict[str, Any]) -> None:
    """Append one JSON line and fsync it: after this returns, the shard is finished even across a crash."""
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _step_key(step: Step) -> int:
    return -1 if step is None else int(step)


def _step_layer_key(item) -> tuple:
    (step, layer), _ = item
    return (_step_key(step), layer)


# --- traces -> shard tables --------------------------------------------------------------------------------


def sample_keys(doc_index: np.ndarray, position: np.ndarray) -> np.ndarray:
    """(n,) uint64 pseudo-random keys of tokens (splitmix64 of doc_index and position): the sample keeps the
    smallest per label, the same tokens whatever the batching, sharding or worker."""
    with np.errstate(over="ignore"):
        x = np.asarray(doc_index, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15) + np.asarray(position, np.uint64)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def stratified_pick(labels: np.ndarray, keys: np.ndarray, m: int) -> np.ndarray:
    """Sorted indices of at most `m` items: an equal share per label (a label with fewer items gives its
    unused share to the others), within a label the smallest keys."""
    n = len(keys)
    if n <= m:
        return np.arange(n)
    if m <= 0:
        return np.zeros(0, dtype=np.int64)
    _, inverse = np.unique(np.asarray(labels, dtype=object).astype(str), return_inverse=True)
    counts = np.bincount(inverse)
    quota = np.zeros_like(counts)
    left = m
    for i, label in enumerate(np.argsort(counts, kind="stable")):  # smallest labels first: water filling
        quota[label] = min(counts[label], left // (len(counts) - i))
        left -= quota[label]
    order = np.lexsort((keys, inverse))  # by label, then key
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - starts[inverse[order]]
    return np.flatnonzero(rank < quota[inverse])


class ShardBuilder:
    """Collects the record batches of one shard: `add_docs` per batch, `add_trace` per batch and step (the
    trace's doc_ids are str(doc_index)); `build()` gives the `ShardData`. Memory: the shard's tables plus at
    most `max_hidden` router inputs per label and step."""

    def __init__(self, steps: list[Step], max_hidden: int):
        self.steps = list(steps)
        self.max_hidden = int(max_hidden)
        self.docs: list[pa.Table] = []
        self.tokens: list[pa.Table] = []
        self.routing: dict[tuple[Step, int], list[pa.Table]] = {}
        self.token_layer: dict[tuple[Step, int], list[pa.Table]] = {}
        self.sample: dict[Step, dict[str, np.ndarray]] = {}
        self.meta: dict[str, Any] | None = None
        self.doc_start: int | None = None
        self.doc_end = 0

    @property
    def n_tokens(self) -> int:
        return sum(t.num_rows for t in self.tokens)

    def add_docs(self, doc_index: list[int], doc_id: list[str], label: list[str], text: list[str], n_tokens: list[int]):
        if self.doc_start is None:
            self.doc_start = int(doc_index[0])
        self.doc_end = int(doc_index[-1]) + 1
        self.docs.append(
            pa.table(
                {"doc_index": doc_index, "doc_id": doc_id, "label": label, "text": text, "n_tokens": n_tokens},
                schema=layout.DOCS_SCHEMA,
            )
        )

    def add_trace(self, trace: RoutingTrace, step: Step, with_tokens: bool, doc_index: np.ndarray | None = None):
        """One batch's routing at `step`; `with_tokens` for the first step (the token table is step-free).
        doc_index: (n,) of each token (default: the trace's doc_ids are str(doc_index))."""
        n, L, K = trace.n_tokens, trace.n_layers, trace.top_k
        tok = trace.tokens
        if doc_index is None:
            doc_index = tok["doc_id"].astype(np.int64).to_numpy()  # (n,)
        position = tok["position"].to_numpy(np.int32)  # (n,)
        if self.meta is None:  # the model's meta (n_layers, n_experts, top_k, config, ...); the step is a partition
            self.meta = {k: v for k, v in trace.meta.items() if k != "step"}
        if with_tokens:
            cols = {c: tok[c].to_numpy() for c in ("token_id", "token_text", "char_start", "char_end", "label")}
            self.tokens.append(
                pa.table({"doc_index": doc_index, "position": position, **cols}, schema=layout.TOKENS_SCHEMA)
            )
        r = trace.routing
        per_token = {
            "expert": r["expert"].to_numpy().reshape(n, L, K),
            "weight": r["weight"].to_numpy().reshape(n, L, K),
            "score": r["score"].to_numpy().reshape(n, L, K),
            "biased_score": r["biased_score"].to_numpy().reshape(n, L, K),
            "bias_flip": r["bias_flip"].to_numpy().reshape(n, L, K),
        }
        share = trace.token_layer["shared_share"].to_numpy().reshape(n, L)
        entropy = trace.token_layer["entropy"].to_numpy().reshape(n, L)
        rank = np.tile(np.arange(K, dtype=np.int8), n)  # (n*K,)
        for layer in range(L):
            cols = {name: values[:, layer, :].reshape(-1) for name, values in per_token.items()}  # (n*K,)
            self.routing.setdefault((step, layer), []).append(
                pa.table(
                    {"doc_index": np.repeat(doc_index, K), "position": np.repeat(position, K), "rank": rank, **cols},
                    schema=layout.ROUTING_SCHEMA,
                )
            )
            self.token_layer.setdefault((step, layer), []).append(
                pa.table(
                    {
                        "doc_index": doc_index,
                        "position": position,
                        "shared_share": share[:, layer],
                        "entropy": entropy[:, layer],
                    },
                    schema=layout.TOKEN_LAYER_SCHEMA,
                )
            )
        if trace.hidden is not None and self.max_hidden > 0:
            rows = trace.hidden_rows
            self._add_sample(step, trace.hidden, doc_index[rows], position[rows], tok["label"].to_numpy()[rows])

    def _add_sample(self, step: Step, hidden, doc_index, position, labels) -> None:
        old = self.sample.get(step)
        new = {"hidden": hidden, "doc_index": doc_index, "position": position.astype(np.int64), "label": labels}
        if old is not None:
            new = {k: np.concatenate([old[k], new[k]]) for k in new}
        keys = sample_keys(new["doc_index"], new["position"])
        # keep per label its max_hidden smallest keys: whatever the final quota, it is among them
        keep = np.zeros(len(keys), dtype=bool)
        for label in np.unique(new["label"].astype(str)):
            idx = np.flatnonzero(new["label"].astype(str) == label)
            keep[idx[np.argsort(keys[idx], kind="stable")[: self.max_hidden]]] = True
        self.sample[step] = {k: v[keep] for k, v in new.items()}

    def build(self) -> ShardData:
        """The shard's tables; its sample is the stratified `max_hidden` of the kept candidates, by token."""
        sample = {}
        for step, arrays in self.sample.items():
            keys = sample_keys(arrays["doc_index"], arrays["position"])
            pick = stratified_pick(arrays["label"], keys, self.max_hidden)
            order = pick[np.lexsort((arrays["position"][pick], arrays["doc_index"][pick]))]  # by token
            sample[step] = {name: arrays[name][order] for name in layout.SAMPLE_ARRAYS}
        return ShardData(
            docs=pa.concat_tables(self.docs),
            tokens=pa.concat_tables(self.tokens),
            routing={key: pa.concat_tables(parts) for key, parts in self.routing.items()},
            token_layer={key: pa.concat_tables(parts) for key, parts in self.token_layer.items()},
            sample=sample,
            doc_start=int(self.doc_start or 0),
            doc_end=self.doc_end,
        )
