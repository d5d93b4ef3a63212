"""Megatron-LM router traces (`--moe-routing-trace-path`) -> imported documents.

Format (NVIDIA/Megatron-LM, megatron/core/transformer/moe/router_trace.py, `RouterTracer`): one JSONL file
per rank, `router_trace_rank{rank}.jsonl`, one record per (step, block, layer) router call:
    {"step": 0, "stage": "pre_dispatch", "block": "decoder", "layer": 3, "rank": 0,
     "num_tokens": 128, "topk": 8, "top_indices": [[12, 45, ...], ...]}        (+ "mtp_idx" for MTP blocks)
`top_indices` is (num_tokens, topk). `step` is the training iteration (training mode) or the decode step
(inference); `layer` is the index N of `decoder.layers.N` on that rank. When the hook sees a boolean
routing map, the indices come from `nonzero()`: a token's experts in ascending id order, not by score.
Optional sidecars `hidden_states_rank{r}.bin` / `logits_rank{r}.bin` (raw bfloat16, located by the records'
`hs_offset`/`logit_offset` fields) are not imported; `router_state_rank{r}.pt` is a torch.save pickle and
is never opened. Megatron's RouterReplay (megatron/core/transformer/moe/router_replay.py) keeps recorded top-k
indices in memory for replay and writes no file of its own; `RouterTracer.record_indices` serializes them
into this same JSONL.

Mapping: a document is one router call of every decoder layer on one rank in one step: within a step the
k-th record of each layer belongs to call k (micro-batches under gradient accumulation); its tokens are the
rank's flattened token rows in Megatron's order, with no token ids or text (the format has none). MTP
records are skipped (they are extra prediction heads, not decoder layers).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from analysis.dataset.importers.common import ImportedDoc, ImportOptions, expand_paths, read_jsonl

FILE_PATTERN = "router_trace_rank*.jsonl"
_REQUIRED = ("step", "layer", "rank", "num_tokens", "topk", "top_indices")


def read_docs(paths: list[str | Path], opts: ImportOptions) -> Iterator[ImportedDoc]:
    """Every document of the trace files (folders: their router_trace_rank*.jsonl), file by file."""
    for path in expand_paths(paths, FILE_PATTERN):
        yield from _file_docs(path, opts)


def _file_docs(path: Path, opts: ImportOptions) -> Iterator[ImportedDoc]:
    group: list[tuple[str, dict[str, Any]]] = []  # records of one (rank, step), in file order
    key = None
    for lineno, rec in read_jsonl(path):
        where = f"{path}:{lineno}"
        if not isinstance(rec, dict) or any(k not in rec for k in _REQUIRED):
            raise ValueError(f"{where}: not a Megatron router-trace record (needs {', '.join(_REQUIRED)})")
        if rec.get("block", "decoder") != "decoder":
            continue  # MTP heads: see the module docstring
        k = (rec["rank"], rec["step"])
        if group and k != key:
            yield from _step_docs(group, opts)
            group = []
        key = k
        group.append((where, rec))
    if group:
        yield from _step_docs(group, opts)


def _step_docs(group: list[tuple[str, dict[str, Any]]], opts: ImportOptions) -> Iterator[ImportedDoc]:
    """The documents of one (rank, step): call k = the k-th record of every layer."""
    calls: dict[int, list[tuple[str, dict[str, Any]]]] = {}
    for where, rec in group:
        calls.setdefault(int(rec["layer"]), []).append((where, rec))
    layers = sorted(calls)
    counts = {len(calls[layer]) for layer in layers}
    first_where, first = group[0]
    if len(counts) != 1:
        raise ValueError(
            f"{first_where}: rank {first['rank']} step {first['step']} has a different number of router calls "
            f"per layer ({ {layer: len(calls[layer]) for layer in layers} }); cannot pair layers into tokens"
        )
    for k in range(counts.pop()):
        per_layer = []
        for layer in layers:
            where, rec = calls[layer][k]
            idx = _indices(rec, where)
            if per_layer and len(idx) != len(per_layer[0]):
                raise ValueError(
                    f"{where}: {len(idx)} tokens, but layer {layers[0]} of this call has {len(per_layer[0])}"
                )
            per_layer.append(idx)
        experts = np.stack(per_layer, axis=1)  # (n, L_raw, K)
        yield ImportedDoc(
            doc_id=f"rank{first['rank']}-step{first['step']}-call{k}",
            experts=_place(experts, layers),
            label=opts.label,
            where=first_where,
        )


def _indices(rec: dict[str, Any], where: str) -> np.ndarray:
    try:
        idx = np.asarray(rec["top_indices"], dtype=np.int64)
    except (ValueError, TypeError):
        raise ValueError(f"{where}: top_indices is not a (num_tokens, topk) list of integers") from None
    n, k = int(rec["num_tokens"]), int(rec["topk"])
    if idx.shape != (n, k) and not (n == 0 and idx.size == 0):
        raise ValueError(f"{where}: top_indices has shape {idx.shape}, the record says ({n}, {k})")
    return idx.reshape(n, k)


def _place(experts: np.ndarray, layers: list[int]) -> np.ndarray:
    """(n, len(layers), K) -> (n, max(layers)+1, K) with the layers at their raw index and -1 elsewhere, so a
    rank holding layers 0..3 and one holding 0..3 agree, and absent (dense or other-stage) layers read as unwritten."""
    n, _, k = experts.shape
    out = np.full((n, max(layers) + 1, k), -1, dtype=np.int64)
    out[:, layers, :] = experts
    return out
