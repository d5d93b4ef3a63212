"""Read a routing dataset: `open_dataset(DIR)` checks the manifest (format version, every listed file present
with its recorded size), `Dataset.verify()` the SHA-256 of every file; tables are read from listed files only.

`Dataset.to_trace(docs, step)` gives a `RoutingTrace` of a bounded set of documents (the first n, or given
doc_index values) with the stored router inputs of those documents' sampled tokens; `from_trace(trace, DIR)`
writes a trace as a one-shard dataset. The round trip keeps every table, `hidden` and the meta; `scores`
(router scores over all experts) is not part of the dataset.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute
import pyarrow.parquet as pq

from analysis.dataset import layout
from analysis.dataset.layout import DatasetError
from analysis.dataset.writer import DatasetWriter, ShardBuilder, sample_keys, stratified_pick

if TYPE_CHECKING:
    from analysis.trace import RoutingTrace

_ANY = "any"


class Dataset:
    """An opened dataset (see `analysis.dataset.layout`); cheap to open: reads only manifest.json and stats files."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.manifest = layout.read_manifest(self.root)
        layout.check_files(self.root, self.manifest)

    def __repr__(self) -> str:
        return f"Dataset({str(self.root)!r}: {self.n_docs} docs, {self.n_tokens} tokens, steps {self.steps})"

    # --- what it holds --------------------------------------------------------------------------------

    @property
    def meta(self) -> dict[str, Any]:
        """The model's meta: n_layers, n_experts, top_k, layer_blocks, config, ... ({} before the first shard)."""
        return dict(self.manifest.get("meta") or {})

    @property
    def steps(self) -> list[int | None]:
        return list(self.manifest["steps"])

    @property
    def shards(self) -> list[dict[str, Any]]:
        """Shard records in stream order."""
        return sorted(self.manifest["shards"], key=lambda s: (s["doc_start"], s["id"]))

    @property
    def n_docs(self) -> int:
        return sum(s["docs"] for s in self.manifest["shards"])

    @property
    def n_tokens(self) -> int:
        return sum(s["tokens"] for s in self.manifest["shards"])

    @property
    def complete(self) -> bool:
        return bool(self.manifest.get("complete"))

    def verify(self) -> None:
        """DatasetError (naming the file) unless every listed file matches its recorded SHA-256."""
        layout.check_files(self.root, self.manifest, checksums=True)

    def check_step(self, step: int | None | str = "default") -> int | None:
        """`step` if recorded ("default": the last recorded step); DatasetError otherwise."""
        if step == "default":
            return self.steps[-1] if self.steps else None
        if step not in self.steps:
            shown = ", ".join(layout.step_value(s) for s in self.steps)
            raise DatasetError(f"{self.root}: step {layout.step_value(step)} is not recorded (steps: {shown})")
        return step

    # --- tables -------------------------------------------------------------------------------------

    def files(self, table: str, step: int | None | str = _ANY, layer: int | None = None) -> list[Path]:
        """Absolute paths of the listed files of `table` (narrowed to a step/layer partition), stream order."""
        return [self.root / rel for rel in layout.listed_files(self.manifest, table, step, layer)]

    def read(
        self,
        table: str,
        step: int | None | str = _ANY,
        layer: int | None = None,
        columns: Sequence[str] | None = None,
        doc_index: np.ndarray | None = None,
    ) -> pa.Table:
        """One table of listed files (only shards holding `doc_index`, when given, and only those rows)."""
        rels = layout.listed_files(self.manifest, table, step, layer)
        if doc_index is not None:
            wanted = np.unique(np.asarray(doc_index, dtype=np.int64))
            keep = {s["id"] for s in self.shards if _overlaps(wanted, s["doc_start"], s["doc_end"])}
            rels = [rel for rel in rels if layout.parse_path(rel)["shard"] in keep]
        parts = [self._read_file(rel, columns, None if doc_index is None else wanted) for rel in rels]
        if not parts:
            schema = layout.SCHEMAS[table]
            fields = [schema.field(c) for c in columns] if columns is not None else list(schema)
            return pa.schema(fields).empty_table()
        return pa.concat_tables(parts)

    def _read_file(self, rel: str, columns, wanted: np.ndarray | None) -> pa.Table:
        path = self.root / rel
        try:
            table = pq.read_table(path, columns=list(columns) if columns else None)
        except (pa.ArrowException, OSError) as exc:
            raise DatasetError(f"{path}: unreadable parquet data ({_first_line(exc)})") from None
        if wanted is not None:
            table = table.filter(pyarrow.compute.is_in(table["doc_index"], value_set=pa.array(wanted)))
        return table

    def doc_indices(self, n: int | None = None) -> np.ndarray:
        """(m,) int64 doc_index of the first `n` documents of the stream (all with None)."""
        out, have = [], 0
        for rel in layout.listed_files(self.manifest, "docs"):
            if n is not None and have >= n:
                break
            part = self._read_file(rel, ["doc_index"], None)["doc_index"].to_numpy()
            out.append(part)
            have += len(part)
        found = np.sort(np.concatenate(out)) if out else np.zeros(0, dtype=np.int64)
        return found if n is None else found[:n]

    def sample(self, step: int | None | str = "default", max_hidden: int | None = None) -> dict[str, np.ndarray]:
        """The stored router inputs of the stratified sample at `step`: hidden (M, L, D) float16, doc_index
        and position (M,) int64, label (M,) str; at most `max_hidden` (default: the manifest's) by label."""
        from safetensors.numpy import load_file

        step = self.check_step(step)
        parts = []
        for rel in layout.listed_files(self.manifest, "sample", step):
            try:
                parts.append(load_file(self.root / rel))
            except Exception as exc:  # safetensors raises its own error types
                raise DatasetError(f"{self.root / rel}: unreadable sample ({_first_line(exc)})") from None
        if not parts:
            return {
                "hidden": np.zeros((0, 0, 0), np.float16),
                "doc_index": np.zeros(0, np.int64),
                "position": np.zeros(0, np.int64),
                "label": np.zeros(0, dtype=object),
            }
        arrays = {k: np.concatenate([p[k] for p in parts]) for k in layout.SAMPLE_ARRAYS}
        labels = self._labels(arrays["doc_index"])
        m = int(self.manifest["sample"].get("max_hidden", 0)) if max_hidden is None else int(max_hidden)
        pick = stratified_pick(labels, sample_keys(arrays["doc_index"], arrays["position"]), m)
        return {**{k: v[pick] for k, v in arrays.items()}, "label": labels[pick]}

    def _labels(self, doc_index: np.ndarray) -> np.ndarray:
        docs = self.read("docs", columns=["doc_index", "label"], doc_index=doc_index).to_pandas()
        by_doc = pd.Series(docs["label"].to_numpy(), index=docs["doc_index"].to_numpy())
        return by_doc.reindex(doc_index).fillna("").to_numpy(dtype=object)

    # --- traces -------------------------------------------------------------------------------------

    def to_trace(self, docs: int | Sequence[int] | None = None, step: int | None | str = "default") -> RoutingTrace:
        """The RoutingTrace of some documents at `step`: docs = the first n of the stream (an int), given
        doc_index values (a sequence) or all (None: only for small datasets). Token rows follow
        (doc_index, position); doc_ids are the documents' own when distinct, else str(doc_index)."""
        from analysis.trace import build_trace

        step = self.check_step(step)
        meta = self.meta
        if not meta:
            raise DatasetError(f"{self.root}: the dataset holds no shard yet")
        L, K = int(meta["n_layers"]), int(meta["top_k"])
        wanted = self.doc_indices(docs if isinstance(docs, int) or docs is None else None)
        if docs is not None and not isinstance(docs, int):
            wanted = np.unique(np.asarray(docs, dtype=np.int64))
        doc_rows = self.read("docs", doc_index=wanted).sort_by("doc_index").to_pandas()
        missing = np.setdiff1d(wanted, doc_rows["doc_index"].to_numpy())
        if len(missing):
            raise DatasetError(f"{self.root}: no document {int(missing[0])} in the dataset")
        ids = doc_rows["doc_id"].astype(str)
        if not ids.is_unique:
            ids = doc_rows["doc_index"].astype(str)
        name_of = dict(zip(doc_rows["doc_index"].tolist(), ids.tolist()))
        tokens = self.read("tokens", doc_index=wanted).sort_by([("doc_index", "ascending"), ("position", "ascending")])
        n = tokens.num_rows
        order = [("doc_index", "ascending"), ("position", "ascending"), ("rank", "ascending")]
        arrays: dict[str, list[np.ndarray]] = {}
        for layer in range(L):
            routing = self.read("routing", step, layer, doc_index=wanted).sort_by(order)
            token_layer = self.read("token_layer", step, layer, doc_index=wanted).sort_by(order[:2])
            if routing.num_rows != n * K or token_layer.num_rows != n:
                where = f"layer {layer} at step {layout.step_value(step)}"
                raise DatasetError(f"{self.root}: {where} does not cover every token")
            for col in ("expert", "weight", "score", "biased_score", "bias_flip"):
                arrays.setdefault(col, []).append(routing[col].to_numpy(zero_copy_only=False).reshape(n, K))
            for col in ("shared_share", "entropy"):
                arrays.setdefault(col, []).append(token_layer[col].to_numpy())
        stack = {k: np.stack(v, axis=1) for k, v in arrays.items()}  # (n, L, K) or (n, L)
        tok = tokens.to_pandas()
        hidden, hidden_rows = self._trace_hidden(step, wanted, tok)
        columns = {c: tok[c].to_numpy() for c in ("position", "token_id", "token_text", "char_start", "char_end")}
        return build_trace(
            tokens={**columns, "label": tok["label"].to_numpy(), "doc_id": tok["doc_index"].map(name_of).to_numpy()},
            experts=stack["expert"],
            weights=stack["weight"],
            scores_k=stack["score"],
            biased_k=stack["biased_score"],
            flips=stack["bias_flip"],
            shared_share=stack["shared_share"],
            entropy=stack["entropy"],
            meta={**meta, "step": step},
            texts=dict(zip(ids.tolist(), doc_rows["text"].tolist())),
            hidden=hidden,
            hidden_rows=hidden_rows,
        )

    def _trace_hidden(self, step, wanted: np.ndarray, tok: pd.DataFrame) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The stored router inputs of the sampled tokens of the `wanted` documents, by token row."""
        from safetensors.numpy import load_file

        keep = {s["id"] for s in self.shards if _overlaps(wanted, s["doc_start"], s["doc_end"])}
        rels = [r for r in layout.listed_files(self.manifest, "sample", step) if layout.parse_path(r)["shard"] in keep]
        if not rels:
            return None, None
        row_of = pd.Series(np.arange(len(tok)), index=pd.MultiIndex.from_arrays([tok["doc_index"], tok["position"]]))
        hidden, rows = [], []
        for rel in rels:
            part = load_file(self.root / rel)
            index = pd.MultiIndex.from_arrays([part["doc_index"], part["position"]])
            found = row_of.reindex(index).to_numpy()
            ok = ~np.isnan(found)
            hidden.append(part["hidden"][ok])
            rows.append(found[ok].astype(np.int64))
        rows_M = np.concatenate(rows)
        order = np.argsort(rows_M)
        return np.concatenate(hidden)[order], rows_M[order]


def open_dataset(root: str | os.PathLike) -> Dataset:
    """The dataset at `root`; DatasetError (one line, naming the file) for a missing or foreign manifest,
    another format version, or a listed file that is missing or of the wrong size."""
    return Dataset(root)


def from_trace(trace: RoutingTrace, root: str | os.PathLike) -> Dataset:
    """Write `trace` as a one-shard dataset at `root` (a new or empty folder): documents numbered in the order
    they appear, the trace's hidden rows as the sample, its step (meta["step"]) as the only step."""
    root = Path(root)
    if (root / layout.MANIFEST).exists():
        raise DatasetError(f"{root}: a dataset already exists there")
    tok = trace.tokens
    doc_ids = pd.unique(tok["doc_id"])
    index_of = {d: i for i, d in enumerate(doc_ids)}
    doc_index = tok["doc_id"].map(index_of).to_numpy(np.int64)  # (n,)
    step = trace.meta.get("step")
    n_hidden = 0 if trace.hidden is None else len(trace.hidden_rows)
    builder = ShardBuilder([step], max_hidden=n_hidden)
    first = tok.groupby("doc_id", sort=False)["label"].first()
    counts = tok.groupby("doc_id", sort=False).size()
    builder.add_docs(
        list(range(len(doc_ids))),
        [str(d) for d in doc_ids],
        [str(first[d]) for d in doc_ids],
        [trace.texts.get(d, "") for d in doc_ids],
        [int(counts[d]) for d in doc_ids],
    )
    builder.add_trace(trace, step, with_tokens=True, doc_index=doc_index)
    source = {"name": trace.meta.get("run"), "kind": "trace", "path": None}
    writer = DatasetWriter(root, source, steps=[step], sample={"max_hidden": n_hidden})
    writer.write_shard(layout.shard_id(0, 0), builder.build(), builder.meta)
    writer.finalize(complete=True)
    return Dataset(root)


def _overlaps(sorted_values: np.ndarray, start: int, end: int) -> bool:
    i = np.searchsorted(sorted_values, start)
    return bool(i < len(sorted_values) and sorted_values[i] < end)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
