"""RoutingTrace: which experts every token went to, in every MoE layer, as tidy tables.

In memory (see docs/ARCHITECTURE.md); n tokens, L MoE layers, K experts per token, E experts:
- `tokens`: one row per token, index `token_row` (0..n-1):
  `doc_id, position, token_id, token_text, char_start, char_end, label` (label "" = unlabelled)
- `routing`: one row per (token, layer, rank), n*L*K rows:
  `token_row, layer, rank, expert, weight, score, biased_score, bias_flip`
  rank orders a token's experts by the score the router chose them on (score + bias): rank 0 is the top-1.
  weight is the gate weight, score the unbiased router score of that expert, biased_score score + bias,
  bias_flip True when the expert was chosen on score + bias but would not be on the score alone.
- `token_layer`: one row per (token, layer), n*L rows: `token_row, layer, shared_share, entropy`
- `scores`: optional (n, L, E) float32 router scores over all experts
- `hidden`, `hidden_rows`: optional (M, L, D) float16 router inputs of the tokens `hidden_rows` (int64, sorted)
- `texts`: {doc_id: original text}; `meta`: JSON-able dict with at least `n_layers`, `n_experts`, `top_k`
  (and from the recorder: `run`, `step`, `config` (the model config dict), `layer_blocks`).
`layer` is the MoE-layer index 0..L-1, not the block index (`meta["layer_blocks"][layer]` is).

Canonical order (checked by `validate`): `routing` is sorted by (token_row, layer, rank) and holds every
combination once, `token_layer` by (token_row, layer). So row i of `routing` is token i // (L*K), and
`experts_array()` is a reshape, not a pivot.

On disk (`save` / `load`; files, metadata and checksums in `analysis.trace_files`):
- `PATH.parquet`: ONE table, one row per (token, layer, rank) in canonical order: the `routing` columns,
  then the `tokens` columns, then the `token_layer` columns (repeated over ranks/layers; parquet's
  dictionary encoding makes the repetition cheap). Any parquet reader gets an analysis-ready tidy table.
  The parquet key-value metadata key `moe_explorer_trace` holds JSON:
  `{"format": "moe-explorer-trace/1", "n_tokens", "meta", "texts", "arrays": {name: shape},
  "sidecar": file name or null, "sidecar_sha256"}`.
- `PATH.arrays.safetensors` (only when `scores` or `hidden` exist): tensors `scores`, `hidden`,
  `hidden_rows`. The parquet metadata records the sidecar's SHA-256, so a stale sidecar is an error.
No pickle anywhere.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis import trace_files

# column -> dtype of each table (small integer types keep a 1M-row trace small)
TOKEN_COLUMNS: dict[str, str] = {
    "doc_id": "str",
    "position": "int32",  # position of the token in its document (0-based)
    "token_id": "int32",
    "token_text": "str",
    "char_start": "int32",  # character span [char_start, char_end) in texts[doc_id]
    "char_end": "int32",
    "label": "str",
}
ROUTING_COLUMNS: dict[str, str] = {
    "token_row": "int32",
    "layer": "int8",
    "rank": "int8",
    "expert": "int16",
    "weight": "float32",
    "score": "float32",
    "biased_score": "float32",
    "bias_flip": "bool",
}
TOKEN_LAYER_COLUMNS: dict[str, str] = {
    "token_row": "int32",
    "layer": "int8",
    "shared_share": "float32",
    "entropy": "float32",
}
_ARRAY_NAMES = ("scores", "hidden", "hidden_rows")


class MoEShape:
    """n_layers, n_experts and top_k read from `self.meta` (a trace's, or a routing dataset's manifest meta)."""

    meta: dict[str, Any]

    @property
    def n_layers(self) -> int:
        return int(self.meta["n_layers"])

    @property
    def n_experts(self) -> int:
        return int(self.meta["n_experts"])

    @property
    def top_k(self) -> int:
        return int(self.meta["top_k"])


@dataclass
class RoutingTrace(MoEShape):
    """Routing of n tokens through L MoE layers; see the module docstring for the tables."""

    tokens: pd.DataFrame  # (n rows) index token_row; TOKEN_COLUMNS
    routing: pd.DataFrame  # (n*L*K rows) ROUTING_COLUMNS, canonical order
    token_layer: pd.DataFrame  # (n*L rows) TOKEN_LAYER_COLUMNS, canonical order
    texts: dict[str, str] = field(default_factory=dict)  # doc_id -> original text
    meta: dict[str, Any] = field(default_factory=dict)  # JSON-able: n_layers, n_experts, top_k, run, step, config
    scores: np.ndarray | None = None  # (n, L, E) float32 scores over all experts
    hidden: np.ndarray | None = None  # (M, L, D) float16 router inputs
    hidden_rows: np.ndarray | None = None  # (M,) int64 token rows of `hidden`, sorted

    def __post_init__(self) -> None:
        self.validate()

    # --- shape --------------------------------------------------------------------------------------

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)

    def validate(self) -> None:
        """Raise ValueError unless the tables have the documented columns, dtypes, sizes and order."""
        for key in ("n_layers", "n_experts", "top_k"):
            if not isinstance(self.meta.get(key), int) or self.meta[key] < 1:
                raise ValueError(f"trace meta[{key!r}] must be a positive integer, got {self.meta.get(key)!r}")
        n, L, K = self.n_tokens, self.n_layers, self.top_k
        _check_columns("tokens", self.tokens, TOKEN_COLUMNS)
        _check_columns("routing", self.routing, ROUTING_COLUMNS)
        _check_columns("token_layer", self.token_layer, TOKEN_LAYER_COLUMNS)
        if not self.tokens.index.equals(pd.RangeIndex(n, name="token_row")):
            raise ValueError("trace tokens must be indexed by token_row = 0..n-1")
        if len(self.routing) != n * L * K or len(self.token_layer) != n * L:
            raise ValueError(
                f"trace tables disagree: {n} tokens x {L} layers x top-{K} needs {n * L * K} routing rows and "
                f"{n * L} token_layer rows, got {len(self.routing)} and {len(self.token_layer)}"
            )
        t, l, r = np.unravel_index(np.arange(n * L * K), (n, L, K))
        if not (
            np.array_equal(self.routing["token_row"].to_numpy(), t)
            and np.array_equal(self.routing["layer"].to_numpy(), l)
            and np.array_equal(self.routing["rank"].to_numpy(), r)
        ):
            raise ValueError("trace routing rows must be sorted by (token_row, layer, rank), each once")
        if not (
            np.array_equal(self.token_layer["token_row"].to_numpy(), t[::K])
            and np.array_equal(self.token_layer["layer"].to_numpy(), l[::K])
        ):
            raise ValueError("trace token_layer rows must be sorted by (token_row, layer), each once")
        if self.scores is not None and self.scores.shape != (n, L, self.n_experts):
            raise ValueError(f"trace scores must have shape {(n, L, self.n_experts)}, got {self.scores.shape}")
        if (self.hidden is None) != (self.hidden_rows is None):
            raise ValueError("trace hidden and hidden_rows must be given together")
        if self.hidden is not None:
            rows = self.hidden_rows
            if self.hidden.ndim != 3 or self.hidden.shape[:2] != (len(rows), L) or rows.ndim != 1:
                raise ValueError(f"trace hidden must be (len(hidden_rows), {L}, D), got {self.hidden.shape}")
            if len(rows) and (rows.min() < 0 or rows.max() >= n or np.any(np.diff(rows) <= 0)):
                raise ValueError("trace hidden_rows must be sorted, distinct token rows")

    # --- views ----------------------------------------------------------------------------------------

    def experts_array(self) -> np.ndarray:
        """(n_tokens, L, K) int16 chosen experts; [..., 0] is the top-1."""
        return self.routing["expert"].to_numpy().reshape(self.n_tokens, self.n_layers, self.top_k)

    def top1(self) -> pd.DataFrame:
        """One row per (token, layer): token_row, layer, expert (the rank-0 expert)."""
        top = self.routing.iloc[:: self.top_k]
        return top[["token_row", "layer", "expert"]].reset_index(drop=True)

    def wide(self) -> pd.DataFrame:
        """The on-disk table: routing rows joined with their token's and (token, layer)'s columns."""
        K, L = self.top_k, self.n_layers
        out = self.routing.reset_index(drop=True).copy()
        token_rows = out["token_row"].to_numpy()
        for col in TOKEN_COLUMNS:
            out[col] = self.tokens[col].to_numpy()[token_rows]
        for col in ("shared_share", "entropy"):
            out[col] = np.repeat(self.token_layer[col].to_numpy(), K)
        assert len(out) == self.n_tokens * L * K
        return out

    def content_hash(self) -> str:
        """SHA-256 of the tables and arrays (not of meta): the same routing of the same text hashes the same."""
        h = hashlib.sha256()
        h.update(json.dumps([self.n_tokens, self.n_layers, self.top_k, self.n_experts]).encode())
        for frame, columns in ((self.tokens, TOKEN_COLUMNS), (self.routing, ROUTING_COLUMNS)):
            for col, dtype in columns.items():
                values = frame[col]
                if dtype == "str":
                    h.update("\0".join(values.tolist()).encode("utf-8", "surrogatepass"))
                else:
                    h.update(np.ascontiguousarray(values.to_numpy()).tobytes())
        for col in ("shared_share", "entropy"):
            h.update(np.ascontiguousarray(self.token_layer[col].to_numpy()).tobytes())
        for name in _ARRAY_NAMES:
            arr = getattr(self, name)
            h.update(name.encode() + (b"-" if arr is None else np.ascontiguousarray(arr).tobytes()))
        return h.hexdigest()

    # --- subsets and unions ---------------------------------------------------------------------------

    def select_docs(self, doc_ids: Iterable[str] | None = None, labels: Iterable[str] | None = None) -> RoutingTrace:
        """The trace of the documents whose doc_id is in `doc_ids` and whose label is in `labels`
        (None = no condition); token rows are renumbered 0..m-1 in their original order."""
        keep = np.ones(self.n_tokens, dtype=bool)
        if doc_ids is not None:
            keep &= self.tokens["doc_id"].isin(list(doc_ids)).to_numpy()
        if labels is not None:
            keep &= self.tokens["label"].isin(list(labels)).to_numpy()
        return self._subset(np.flatnonzero(keep))

    def _subset(self, rows: np.ndarray) -> RoutingTrace:
        parts = self._parts()
        for key in ("experts", "weights", "scores_k", "biased_k", "flips", "shared_share", "entropy"):
            parts[key] = parts[key][rows]
        tokens = self.tokens.iloc[rows]
        hidden = hidden_rows = None
        if self.hidden is not None:
            new_row = np.full(self.n_tokens, -1, dtype=np.int64)
            new_row[rows] = np.arange(len(rows))
            keep_h = new_row[self.hidden_rows] >= 0
            hidden, hidden_rows = self.hidden[keep_h], new_row[self.hidden_rows[keep_h]]
        doc_ids = set(tokens["doc_id"].tolist())
        return build_trace(
            tokens={col: tokens[col].to_numpy() for col in TOKEN_COLUMNS},
            texts={d: t for d, t in self.texts.items() if d in doc_ids},
            meta=self.meta,
            scores=None if self.scores is None else self.scores[rows],
            hidden=hidden,
            hidden_rows=hidden_rows,
            **parts,
        )

    def _parts(self) -> dict[str, np.ndarray]:
        n, L, K = self.n_tokens, self.n_layers, self.top_k
        r = self.routing
        return {
            "experts": r["expert"].to_numpy().reshape(n, L, K),
            "weights": r["weight"].to_numpy().reshape(n, L, K),
            "scores_k": r["score"].to_numpy().reshape(n, L, K),
            "biased_k": r["biased_score"].to_numpy().reshape(n, L, K),
            "flips": r["bias_flip"].to_numpy().reshape(n, L, K),
            "shared_share": self.token_layer["shared_share"].to_numpy().reshape(n, L),
            "entropy": self.token_layer["entropy"].to_numpy().reshape(n, L),
        }

    # --- I/O ---------------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> Path:
        """Write PATH (parquet) and, when there are arrays, its sidecar PATH.arrays.safetensors; atomic."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {name: getattr(self, name) for name in _ARRAY_NAMES if getattr(self, name) is not None}
        return trace_files.write(path, self.wide(), self._header(), arrays)

    def to_parquet_bytes(self) -> bytes:
        """The parquet file alone, as bytes (for a download button): `load` reads it back exactly, without
        the optional arrays (scores, hidden), which only the sidecar of `save` holds."""
        return trace_files.parquet_bytes(self.wide(), self._header())

    def _header(self) -> dict[str, Any]:
        return trace_files.header(self.n_tokens, self.meta, self.texts)

    @staticmethod
    def load(path: str | os.PathLike, expect_config: Any = None) -> RoutingTrace:
        """Same as the module-level `load`."""
        return load(path, expect_config)

    def to_csv(self, path: str | os.PathLike) -> Path:
        """CSV export: one row per (token, layer, rank) with the token's text and position (see `wide`)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.wide().to_csv(path, index=False)
        return path


def load(path: str | os.PathLike, expect_config: Any = None) -> RoutingTrace:
    """Read a trace written by `RoutingTrace.save`.

    ValueError (one line) when the file is missing, not parquet, a parquet file that is not a trace, a
    trace with broken tables or sidecar, or (when `expect_config` is a ModelConfig or its dict) a trace
    recorded with another model config.
    """
    from safetensors import SafetensorError

    path = Path(path)
    head, wide = trace_files.read(path, expect_config)
    n, meta = head["n_tokens"], head["meta"]
    missing = [c for c in (*ROUTING_COLUMNS, *TOKEN_COLUMNS, "shared_share", "entropy") if c not in wide]
    if missing:
        raise ValueError(f"{path}: malformed trace, missing column(s) {', '.join(missing)}")
    try:
        L, K = int(meta["n_layers"]), int(meta["top_k"])
        if len(wide) != n * L * K:
            raise ValueError(f"{len(wide)} rows, expected {n * L * K}")
        routing = _cast(wide[list(ROUTING_COLUMNS)].reset_index(drop=True), ROUTING_COLUMNS)
        tokens = _cast(wide[list(TOKEN_COLUMNS)].iloc[:: L * K].reset_index(drop=True), TOKEN_COLUMNS)
        tokens.index = pd.RangeIndex(n, name="token_row")
        token_layer = _cast(wide[list(TOKEN_LAYER_COLUMNS)].iloc[::K].reset_index(drop=True), TOKEN_LAYER_COLUMNS)
        arrays = trace_files.read_arrays(path, head)
        return RoutingTrace(
            tokens=tokens,
            routing=routing,
            token_layer=token_layer,
            texts=dict(head["texts"]),
            meta=meta,
            scores=arrays.get("scores"),
            hidden=arrays.get("hidden"),
            hidden_rows=arrays.get("hidden_rows"),
        )
    except (ValueError, KeyError, TypeError, SafetensorError) as exc:
        raise ValueError(f"{path}: malformed routing trace: {trace_files.first_line(exc)}") from None


def build_trace(
    *,
    tokens: dict[str, Sequence] | pd.DataFrame,
    experts: np.ndarray,
    weights: np.ndarray,
    scores_k: np.ndarray,
    biased_k: np.ndarray,
    flips: np.ndarray,
    shared_share: np.ndarray,
    entropy: np.ndarray,
    meta: dict[str, Any],
    texts: dict[str, str] | None = None,
    scores: np.ndarray | None = None,
    hidden: np.ndarray | None = None,
    hidden_rows: np.ndarray | None = None,
) -> RoutingTrace:
    """A trace from per-token arrays: experts/weights/scores_k/biased_k/flips (n, L, K), shared_share and
    entropy (n, L), token columns (length n). Builds the tidy tables in canonical order, vectorised."""
    experts = np.asarray(experts)
    n, L, K = experts.shape
    meta = {**meta, "n_layers": int(L), "top_k": int(K)}
    # str columns as objects: a numpy unicode array would silently drop trailing NUL characters ("\x00")
    tok = pd.DataFrame(
        {col: np.asarray(tokens[col], dtype=object if kind == "str" else None) for col, kind in TOKEN_COLUMNS.items()}
    )
    tok = _cast(tok, TOKEN_COLUMNS)
    tok.index = pd.RangeIndex(n, name="token_row")
    t, l, r = np.unravel_index(np.arange(n * L * K), (n, L, K))
    routing = _cast(
        pd.DataFrame(
            {
                "token_row": t,
                "layer": l,
                "rank": r,
                "expert": experts.reshape(-1),
                "weight": np.asarray(weights).reshape(-1),
                "score": np.asarray(scores_k).reshape(-1),
                "biased_score": np.asarray(biased_k).reshape(-1),
                "bias_flip": np.asarray(flips).reshape(-1),
            }
        ),
        ROUTING_COLUMNS,
    )
    token_layer = _cast(
        pd.DataFrame(
            {
                "token_row": t[::K],
                "layer": l[::K],
                "shared_share": np.asarray(shared_share).reshape(-1),
                "entropy": np.asarray(entropy).reshape(-1),
            }
        ),
        TOKEN_LAYER_COLUMNS,
    )
    return RoutingTrace(
        tokens=tok,
        routing=routing,
        token_layer=token_layer,
        texts=dict(texts or {}),
        meta=meta,
        scores=None if scores is None else np.asarray(scores, dtype=np.float32),
        hidden=None if hidden is None else np.asarray(hidden, dtype=np.float16),
        hidden_rows=None if hidden_rows is None else np.asarray(hidden_rows, dtype=np.int64),
    )


def concat(traces: Sequence[RoutingTrace]) -> RoutingTrace:
    """One trace of several traces' documents (same n_layers, top_k, n_experts and model config; distinct
    doc_ids). Meta is the first trace's. `scores`/`hidden` are kept only when every trace has them."""
    if not traces:
        raise ValueError("concat needs at least one trace")
    first = traces[0]
    for other in traces[1:]:
        for key in ("n_layers", "n_experts", "top_k", "config"):
            if other.meta.get(key) != first.meta.get(key):
                raise ValueError(f"cannot concat traces with different {key}")
    doc_ids = [d for tr in traces for d in tr.tokens["doc_id"].unique().tolist()]
    if len(doc_ids) != len(set(doc_ids)):
        raise ValueError("cannot concat traces that share doc_ids")
    parts = [tr._parts() for tr in traces]
    merged = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    tokens = {col: np.concatenate([tr.tokens[col].to_numpy() for tr in traces]) for col in TOKEN_COLUMNS}
    texts = {d: t for tr in traces for d, t in tr.texts.items()}
    scores = None
    if all(tr.scores is not None for tr in traces):
        scores = np.concatenate([tr.scores for tr in traces])
    hidden = hidden_rows = None
    if all(tr.hidden is not None for tr in traces):
        offsets = np.cumsum([0] + [tr.n_tokens for tr in traces[:-1]])
        hidden = np.concatenate([tr.hidden for tr in traces])
        hidden_rows = np.concatenate([tr.hidden_rows + off for tr, off in zip(traces, offsets)])
    return build_trace(
        tokens=tokens, texts=texts, meta=first.meta, scores=scores, hidden=hidden, hidden_rows=hidden_rows, **merged
    )


# --- helpers -------------------------------------------------------------------------------------------


def _check_columns(name: str, frame: pd.DataFrame, columns: dict[str, str]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"trace {name} table lacks column(s) {', '.join(missing)}")
    for col, dtype in columns.items():
        actual = frame[col].dtype
        ok = pd.api.types.is_string_dtype(actual) if dtype == "str" else actual == np.dtype(dtype)
        if not ok:
            raise ValueError(f"trace {name}.{col} must have dtype {dtype}, got {actual}")


def _cast(frame: pd.DataFrame, columns: dict[str, str]) -> pd.DataFrame:
    """Cast to the documented dtypes, refusing lossy integer casts (e.g. expert 300 into int8)."""
    out = {}
    for col, dtype in columns.items():
        values = frame[col]
        if dtype == "str":
            out[col] = values.astype("str")
            continue
        arr = values.to_numpy()
        cast = arr.astype(dtype)
        if np.dtype(dtype).kind in "iu" and len(arr) and not np.array_equal(cast, arr):
            raise ValueError(f"column {col} does not fit in {dtype}")
        out[col] = cast
    return pd.DataFrame(out, index=frame.index)
