"""The one recording pipeline of both recorders: documents -> token table -> windows -> forward with hooks ->
`RoutingTrace`.

`record_with(hooks, encode, forward, docs, ...)` does everything that does not depend on the model:
- `normalise_docs`: (doc_id, text, label) per document;
- the token table: `encode(text) -> (ids, spans, texts)` per document, global token rows running through the
  documents in order (doc_id, position, token_id, token_text, char_start, char_end, label);
- `window_batches`: each document cut into NON-overlapping windows of at most `window` tokens (each token is
  routed exactly once; a window's first tokens see no context from the previous window), windows of equal
  length batched together (no padding, so no attention masks);
- the router inputs to keep: all tokens, or a seeded random subsample of `max_hidden` of them (the same text
  always keeps the same tokens);
- the forward loop under `model_lock`, eval mode and `torch.inference_mode`, inside the `hooks` context;
- stream order (forward after forward, row-major (B, S)) -> document order, and `build_trace`.

What is model-specific comes in as two objects: `hooks` (a context manager that hooks the MoE layers and
whose `result()` gives per-token arrays in stream order) and `forward(ids_BS, keep_hidden_BS)`, which tells
the hooks which router inputs to keep and runs the model on one batch of windows (e.g. with a BOS prefix).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
import torch

from analysis.trace import RoutingTrace, build_trace

FP16_MAX = 65504.0  # router inputs are stored as float16: clamp so that outliers don't become inf
MAX_TOKENS = 1_000_000  # tokens per `record` call: a trace holds ~1 KB per token (~1 GB at the limit)
TOKEN_COLUMNS = ("doc_id", "position", "token_id", "token_text", "char_start", "char_end", "label")

Encoded = tuple[list[int], list[tuple[int, int]], list[str]]  # ids, character spans, display texts


class RoutingHooks(Protocol):
    """What the pipeline needs from a model's hooks: a context manager and, after the forwards, `result()`:
    experts, weights, scores_k, biased_k, flips (n, L, K), shared_share, entropy (n, L), scores (n, L, E) or
    None and hidden (M, L, D) float16 or None, all in stream order (other keys are ignored)."""

    def __enter__(self) -> Any: ...

    def __exit__(self, *exc_info) -> bool: ...

    def result(self) -> dict[str, np.ndarray | None]: ...


class ForwardHooks:
    """Base of both recorders' hooks: `attach()` registers them on enter (`self.hook(module, fn)`), and they
    are always detached on exit, exceptions included (a hook left behind would record every later forward)."""

    def __init__(self) -> None:
        self._handles: list[Any] = []

    def attach(self) -> None:
        raise NotImplementedError

    def hook(self, module: torch.nn.Module, fn: Callable) -> None:
        self._handles.append(module.register_forward_hook(fn))

    def __enter__(self):
        try:
            self.attach()
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc_info) -> bool:
        self.remove()
        return False  # never swallow the exception

    def remove(self) -> None:
        """Detach every hook (idempotent)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


PER_TOKEN = ("experts", "weights", "scores_k", "biased_k", "flips", "scores", "shared_share", "entropy")


_MODEL_LOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_MODEL_LOCKS_GUARD = threading.Lock()


def model_lock(model: torch.nn.Module) -> threading.RLock:
    """The re-entrant lock of `model`. Forward hooks see every forward of a module, whoever runs it: two
    recordings of one shared model (two app sessions on one cached model, in two threads) must not overlap,
    or each captures the other's tokens (mismatched sizes, or silently mixed traces)."""
    with _MODEL_LOCKS_GUARD:
        lock = _MODEL_LOCKS.get(model)
        if lock is None:
            lock = _MODEL_LOCKS[model] = threading.RLock()
        return lock


def record_with(
    hooks: RoutingHooks,
    encode: Callable[[str], Encoded],
    forward: Callable[[np.ndarray, np.ndarray], None],
    docs: str | Sequence[str] | Sequence[Any],
    *,
    model: torch.nn.Module,
    vocab_size: int,
    window: int,
    batch_size: int,
    labels: Sequence[str] | None = None,
    max_hidden: int = 2000,
    max_tokens: int | None = MAX_TOKENS,
    meta: dict[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> RoutingTrace:
    """Route `docs` through `model` and return their trace in document order (see the module docstring).

    encode(text) -> (ids, spans, texts) of one document; forward(ids_BS, keep_hidden_BS) runs one batch of
    windows (text token ids, and which of them to keep the router input of) with `hooks` active.
    model: locked, put in eval mode and restored afterwards. vocab_size: ValueError for a larger token id.
    window: tokens per window; batch_size: windows per forward. max_tokens: ValueError when the docs hold more
    tokens (None: no limit), before the model runs. meta: the trace meta. progress(done, total) per batch.
    """
    entries = normalise_docs(docs, labels)
    columns, doc_lengths = token_table(entries, encode, max_tokens)
    token_ids = np.asarray(columns["token_id"], dtype=np.int64)
    n = len(token_ids)
    if token_ids.max() >= vocab_size:
        raise ValueError(
            f"the tokenizer does not match the model: token id {token_ids.max()} >= vocab_size {vocab_size}"
        )
    batches = window_batches(doc_lengths, window, batch_size)
    want_hidden_N = hidden_sample(n, max_hidden)

    done = 0
    with model_lock(model):  # one recording of a shared model at a time (see model_lock)
        was_training = model.training
        model.eval()  # no dropout or router jitter: the routing of the checkpoint, not of a noisy forward
        try:
            with torch.inference_mode(), hooks:
                for rows_BS in batches:
                    forward(token_ids[rows_BS], want_hidden_N[rows_BS])
                    done += rows_BS.size
                    if progress is not None:
                        progress(done, n)
                res = hooks.result()
        finally:
            model.train(was_training)

    # stream order -> document order
    order = np.concatenate([rows.reshape(-1) for rows in batches])  # stream row -> global token row
    inverse = np.empty(n, dtype=np.int64)
    inverse[order] = np.arange(n)
    arrays = {key: None if res.get(key) is None else res[key][inverse] for key in PER_TOKEN}
    hidden = hidden_rows = None
    if res.get("hidden") is not None:
        global_rows = order[want_hidden_N[order]]  # the kept rows, in stream order
        by_row = np.argsort(global_rows)
        hidden, hidden_rows = res["hidden"][by_row], global_rows[by_row]
    return build_trace(
        tokens=columns,
        texts={doc_id: text for doc_id, text, _ in entries},
        meta=meta or {},
        hidden=hidden,
        hidden_rows=hidden_rows,
        **arrays,
    )


def normalise_docs(docs, labels) -> list[tuple[str, str, str]]:
    """(doc_id, text, label) per document; ValueError for no/empty/duplicate documents."""
    if isinstance(docs, str):
        docs = [docs]
    docs = list(docs)
    if not docs:
        raise ValueError("no text to route")
    if labels is not None and len(labels) != len(docs):
        raise ValueError(f"got {len(labels)} labels for {len(docs)} documents")
    entries = []
    for i, doc in enumerate(docs):
        if isinstance(doc, str):
            doc_id, text, label = str(i), doc, ""
        elif hasattr(doc, "text"):
            doc_id = getattr(doc, "doc_id", None)
            doc_id = str(i) if doc_id is None or (isinstance(doc_id, int) and doc_id < 0) else str(doc_id)  # -1: unset
            text, label = doc.text, getattr(doc, "label", "") or ""
        else:
            raise ValueError(f"document {i} is a {type(doc).__name__}, expected str or Doc")
        if labels is not None:
            label = str(labels[i])
        if not isinstance(text, str) or not text:
            raise ValueError("the text is empty" if len(docs) == 1 else f"document {doc_id!r} is empty")
        entries.append((doc_id, text, label))
    ids = [e[0] for e in entries]
    if len(set(ids)) != len(ids):
        raise ValueError("documents have duplicate doc_ids")
    return entries


def token_table(
    entries: Sequence[tuple[str, str, str]], encode: Callable[[str], Encoded], max_tokens: int | None = MAX_TOKENS
) -> tuple[dict[str, list], list[int]]:
    """(columns, doc_lengths): the token table's columns (TOKEN_COLUMNS, one entry per token, documents in
    order) and each document's token count. ValueError for a document without tokens or more than
    `max_tokens` tokens in all (checked document by document, before the model runs)."""
    columns: dict[str, list] = {c: [] for c in TOKEN_COLUMNS}
    doc_lengths: list[int] = []
    for doc_id, text, label in entries:
        ids, spans, texts = encode(text)
        if not ids:
            raise ValueError(f"document {doc_id!r} has no tokens")
        doc_lengths.append(len(ids))
        if max_tokens is not None and sum(doc_lengths) > max_tokens:
            raise ValueError(
                f"too much text: more than {max_tokens:,} tokens in one request; route fewer or shorter documents"
            )
        columns["doc_id"] += [doc_id] * len(ids)
        columns["position"] += range(len(ids))
        columns["token_id"] += ids
        columns["token_text"] += texts
        columns["char_start"] += [s for s, _ in spans]
        columns["char_end"] += [e for _, e in spans]
        columns["label"] += [label] * len(ids)
    return columns, doc_lengths


def window_batches(doc_lengths: Sequence[int], block_size: int, batch_size: int) -> list[np.ndarray]:
    """Global token rows of each forward, as (B, S) arrays: each document (its tokens are consecutive rows)
    cut into non-overlapping windows of at most block_size tokens; windows of equal length stacked, up to
    batch_size per batch, longest windows first."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    ends = np.cumsum(doc_lengths)
    starts = ends - np.asarray(doc_lengths)
    by_length: dict[int, list[int]] = {}
    for s, e in zip(starts.tolist(), ends.tolist()):
        for w in range(s, e, block_size):
            by_length.setdefault(min(block_size, e - w), []).append(w)
    batches = []
    for length in sorted(by_length, reverse=True):
        window_starts = np.asarray(by_length[length])
        for b in range(0, len(window_starts), batch_size):
            batches.append(window_starts[b : b + batch_size, None] + np.arange(length))  # (B, S)
    return batches


def hidden_sample(n: int, max_hidden: int) -> np.ndarray:
    """(n,) bool: the tokens whose router inputs are kept. All of them when n <= max_hidden, else a seeded
    random choice of max_hidden (so the same text always keeps the same tokens); none for max_hidden <= 0."""
    want_N = np.zeros(n, dtype=bool)
    if max_hidden > 0:
        keep = np.arange(n) if n <= max_hidden else np.random.default_rng(0).choice(n, max_hidden, replace=False)
        want_N[keep] = True
    return want_N
