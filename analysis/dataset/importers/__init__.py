"""Routing traces written by other systems -> a routing dataset (`moe-explorer import`).

Formats (each module's docstring cites the repository, path and field names it follows):
- `megatron`: Megatron-LM's router tracing (`--moe-routing-trace-path`): router_trace_rank{r}.jsonl;
- `vllm`: vLLM's `--enable-return-routed-experts` responses (base64 .npy `routed_experts` per choice);
- `sglang`: SGLang's `--enable-return-routed-experts` responses (base64 int32 `meta_info.routed_experts`).
None of them stores gate weights, router scores or router inputs: those columns are NaN and the dataset has
no sample for projections. Token ids come with the vLLM/SGLang responses when the request asked for them
(`--tokenizer` turns them into token text); Megatron's traces have none.

`import_traces` reads the files twice: a first pass fixes the MoE layers, top-k and expert count (the
plan), the second writes shards of about `shard_tokens` tokens through `DatasetWriter`. Batching is
deterministic, so an interrupted import resumes: finished shards are kept and skipped.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from analysis.dataset import layout
from analysis.dataset.importers import megatron, sglang, vllm
from analysis.dataset.importers.common import (
    ImportedDoc,
    ImportOptions,
    ImportPlan,
    TokenTexts,
    batches,
    docs_to_trace,
    expand_paths,
    plan_from_docs,
    read_config,
)
from analysis.dataset.writer import DatasetWriter, ShardBuilder

FORMATS = ("megatron", "vllm", "sglang")
_MODULES = {"megatron": megatron, "vllm": vllm, "sglang": sglang}

__all__ = ["FORMATS", "ImportOptions", "ImportPlan", "import_traces", "read_import_docs"]


def read_import_docs(
    fmt: str, paths: list[str | os.PathLike], opts: ImportOptions
) -> Callable[[], Iterator[ImportedDoc]]:
    """A function that reads every document of `paths` in format `fmt` afresh (called once per pass)."""
    cfg = read_config(opts.config) if opts.config else None
    if fmt == "megatron":
        return lambda: megatron.read_docs(paths, opts)
    if fmt == "vllm":
        return lambda: vllm.read_docs(paths, opts)
    if fmt == "sglang":
        n_layers, top_k = sglang.shape_from(opts, cfg)
        return lambda: sglang.read_docs(paths, opts, n_layers, top_k)
    raise ValueError(f"unknown trace format {fmt!r}; one of {', '.join(FORMATS)}")


def import_traces(
    fmt: str,
    paths: list[str | os.PathLike],
    out: str | os.PathLike,
    opts: ImportOptions | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Write the traces `paths` (format `fmt`) as a dataset at `out`; returns its manifest.
    progress(docs, tokens) is called after each shard."""
    opts = opts or ImportOptions()
    read = read_import_docs(fmt, paths, opts)
    cfg = read_config(opts.config) if opts.config else None
    plan = plan_from_docs(read(), opts, cfg)
    plan.extra_meta["imported_from"] = fmt
    names = TokenTexts(opts.tokenizer)
    files = expand_paths(paths, _MODULES[fmt].FILE_PATTERN)
    source = {"name": Path(out).name, "kind": f"import:{fmt}", "path": str(files[0])}
    settings = {"import": fmt, "shard_tokens": opts.shard_tokens, "label": opts.label, "moe_layers": plan.layers}
    writer = DatasetWriter(out, source, 0, steps=[None], inputs=_inputs(files), config=settings)
    finished = writer.finished_shards()
    doc_start = tokens = 0
    try:
        for k, batch in enumerate(batches(read(), opts.shard_tokens)):
            shard = layout.shard_id(0, k)
            if shard not in finished:
                writer.write_shard(shard, _shard(batch, doc_start, plan, names), plan.meta())
            doc_start += len(batch)
            tokens += sum(len(d.experts) for d in batch)
            if progress is not None:
                progress(doc_start, tokens)
    except BaseException:
        writer.finalize()  # bad input further on, or Ctrl-C: the finished shards stay listed
        raise
    return writer.finalize(complete=True)


def _shard(batch: list[ImportedDoc], doc_start: int, plan: ImportPlan, names: TokenTexts):
    """One batch as shard tables; the trace's doc_id is str(doc_index), the documents' own ids go to `docs`."""
    index = list(range(doc_start, doc_start + len(batch)))
    keyed = [ImportedDoc(str(i), d.experts, d.token_ids, d.positions, d.label, d.where) for i, d in zip(index, batch)]
    trace = docs_to_trace(keyed, plan, names)
    builder = ShardBuilder([None], max_hidden=0)
    builder.add_docs(
        index,
        [d.doc_id for d in batch],
        [d.label for d in batch],
        [trace.texts[str(i)] for i in index],
        [len(d.experts) for d in batch],
    )
    builder.add_trace(trace, None, with_tokens=True, doc_index=trace.tokens["doc_id"].to_numpy().astype(np.int64))
    return builder.build()


def _inputs(files: list[Path]) -> list[dict[str, Any]]:
    out = []
    for f in files:
        st = f.stat()
        out.append({"path": str(f), "size": st.st_size, "mtime": st.st_mtime})
    return out
