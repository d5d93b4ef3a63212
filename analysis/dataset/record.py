"""The streaming recorder: input documents -> shards of a routing dataset, in bounded memory, resumable.

`record_dataset(source, inputs, out, config)` streams the documents of `inputs` (`analysis.dataset.inputs`),
cuts them into shards of about `shard_tokens` tokens (counted with the source's tokenizer, so the cut is a
function of the inputs alone: a resume or another worker finds the same shards), routes each shard in
batches of about `batch_tokens` tokens through `source.record` (any model source: a run, a Hugging Face
folder) at every recorded step, and writes the shard with `DatasetWriter` (atomic files, then a progress
line). Memory holds one shard's tables and one batch's trace, whatever the corpus size.

Resume: the shards in the worker's progress log are finished and skipped (documents before the last of an
unbroken run of finished shards are not even tokenized again); files of an unfinished shard are removed.
Router inputs are kept for a stratified sample: per shard and step at most `max_hidden` tokens, equal
shares per label, chosen by a hash of (doc_index, position) among the tokens whose inputs the recorder kept
(every token of a batch of <= 2000 tokens, else a seeded 2000 of them); `Dataset.sample` combines the
shards' samples into one of `max_hidden` tokens the same way.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analysis.dataset import layout
from analysis.dataset.inputs import InputDoc, fingerprint, iter_docs, list_inputs, total_bytes
from analysis.dataset.layout import DatasetError
from analysis.dataset.writer import DatasetWriter, ShardBuilder, ShardData

Step = int | None


@dataclass
class RecordConfig:
    """How `record_dataset` cuts and samples; a resume must use the same settings (the manifest keeps them)."""

    batch_tokens: int = 2000  # tokens per source.record call: bounds the in-memory trace (~1 KB a token);
    # <= 2000 keeps every token's router input as a sample candidate (the recorders keep at most 2000 a call)
    shard_tokens: int = 100_000  # tokens per shard: the unit of atomic writes and of resume (~MBs of Parquet)
    max_hidden: int = 2000  # router inputs kept: the stratified sample's size (0 = none)
    steps: list[Step] | None = None  # steps to record at (None: the source's default step)

    def __post_init__(self) -> None:
        for name in ("batch_tokens", "shard_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_hidden < 0:
            raise ValueError(f"the sample size must be >= 0, got {self.max_hidden}")

    def cutting(self) -> dict[str, int]:
        """The settings that decide the shards' content (recorded in the manifest's `config`)."""
        return {"batch_tokens": self.batch_tokens, "shard_tokens": self.shard_tokens}


@dataclass
class PlannedShard:
    index: int  # position in the stream of shards
    docs: list[InputDoc] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)  # counted tokens per document


@dataclass
class RecordResult:
    out: Path
    status: str  # "complete" (recorded to the end now), "already complete", "partial" (a worker's share)
    shards_written: int
    shards_skipped: int
    tokens_written: int
    manifest: dict[str, Any]


def source_info(source) -> dict[str, Any]:
    return {"name": source.name, "kind": source.kind, "path": source.path}


def resolve_steps(source, steps: list[Step] | None) -> list[Step]:
    """The steps to record at: the given ones (each must have weights) or the source's default step."""
    if not steps:
        return [source.default_step()]
    have = source.model_steps()
    for step in steps:
        if step is not None and step not in have:
            shown = ", ".join(map(str, have)) or "none"
            raise ValueError(f"step {step} has no weights in {source.path} (steps with weights: {shown})")
    if len(set(steps)) != len(steps):
        raise ValueError("a step is given twice")
    return list(steps)


def plan_shards(
    docs: Iterator[InputDoc], count: Callable[[str], int], shard_tokens: int, start_index: int = 0
) -> Iterator[PlannedShard]:
    """Cut the document stream into shards: a shard closes once it holds >= shard_tokens tokens. Documents
    without tokens are dropped. Starting at a shard boundary (start_index, its first document) continues the
    same cut."""
    shard, total = PlannedShard(start_index), 0
    for doc in docs:
        n = count(doc.text)
        if n == 0:
            continue
        shard.docs.append(doc)
        shard.tokens.append(n)
        total += n
        if total >= shard_tokens:
            yield shard
            shard, total = PlannedShard(shard.index + 1), 0
    if shard.docs:
        yield shard


def record_shard(
    source,
    shard: PlannedShard,
    steps: list[Step],
    config: RecordConfig,
    on_batch: Callable[[int], None] = lambda tokens: None,
) -> tuple[ShardData, dict]:
    """Route one shard's documents at every step, batch by batch; (its tables, the model meta).
    on_batch(tokens) after each batch (for a progress bar)."""
    builder = ShardBuilder(steps, config.max_hidden)
    start = 0
    while start < len(shard.docs):
        end, tokens = start, 0
        while end < len(shard.docs) and (end == start or tokens + shard.tokens[end] <= config.batch_tokens):
            tokens += shard.tokens[end]
            end += 1
        batch = shard.docs[start:end]
        tuples = [(str(d.doc_index), d.label, d.text) for d in batch]
        counts = None
        for i, step in enumerate(steps):
            trace = source.record(tuples, step)
            builder.add_trace(trace, step, with_tokens=i == 0)
            if i == 0:  # the recorder's own token counts (the plan's are the tokenizer's: the same for our runs)
                counts = trace.tokens.groupby("doc_id", sort=False).size()
        builder.add_docs(
            [d.doc_index for d in batch],
            [d.doc_id for d in batch],
            [d.label for d in batch],
            [d.text for d in batch],
            [int(counts.get(str(d.doc_index), 0)) for d in batch],
        )
        on_batch(tokens)
        start = end
    return builder.build(), builder.meta or {}


def record_dataset(
    source,
    inputs: list[str | os.PathLike],
    out: str | os.PathLike,
    config: RecordConfig | None = None,
    *,
    resume: bool = False,
    worker: int = 0,
    n_workers: int = 1,
    progress: bool = False,
    log: Callable[[str], None] = lambda line: None,
) -> RecordResult:
    """Record the routing of every document of `inputs` through `source` into the dataset `out`.

    resume: continue a dataset recorded with the same source, inputs and settings (without it, an existing
    unfinished dataset is an error). worker/n_workers: record only shards with index % n_workers == worker
    (each worker into its own progress log; the manifest merges them). progress: a tqdm bar with tokens/s
    and an ETA from the input bytes. log(line): one-line notes (kept, skipped, finished).
    """
    config = config or RecordConfig()
    out = Path(out)
    files = list_inputs(inputs)
    steps = resolve_steps(source, config.steps)
    if (out / layout.MANIFEST).is_file() and not resume:
        existing = layout.read_manifest(out)
        if not existing.get("complete"):
            raise DatasetError(
                f"{out} already holds a dataset ({len(existing['shards'])} shards, unfinished); "
                "add --resume to continue it, or choose another --out"
            )
    writer = DatasetWriter(
        out,
        source_info(source),
        worker,
        steps=steps,
        inputs=fingerprint(files),
        config=config.cutting(),
        sample={"max_hidden": config.max_hidden},
    )
    if writer.complete:
        manifest = writer.manifest
        tokens = sum(s["tokens"] for s in manifest["shards"])
        log(f"{out}: already complete ({len(manifest['shards'])} shards, {tokens:,} tokens): nothing to do")
        return RecordResult(out, "already complete", 0, len(manifest["shards"]), 0, manifest)
    finished = writer.finished_shards()
    start_index, start_doc = 0, 0
    if n_workers == 1:  # skip an unbroken run of finished shards without reading their documents again
        while layout.shard_id(worker, start_index) in finished:
            start_doc = finished[layout.shard_id(worker, start_index)]["doc_end"]
            start_index += 1
    if finished:
        kept = sum(r["tokens"] for r in finished.values())
        log(f"{out}: resuming: {len(finished)} finished shard(s) ({kept:,} tokens) kept")

    kept_before = sum(finished[layout.shard_id(worker, i)]["tokens"] for i in range(start_index))
    bar = RecordProgress(progress, total_bytes(files), out.name, kept_before)
    written = tokens_written = 0
    skipped = start_index  # the unbroken run of finished shards, not read again
    try:
        docs = (d for d in iter_docs(files) if d.doc_index >= start_doc or bar.skip(d))
        for shard in plan_shards(docs, lambda text: len(source.token_spans(text)), config.shard_tokens, start_index):
            shard_name = layout.shard_id(worker, shard.index)
            if shard.index % n_workers != worker or shard_name in finished:
                skipped += shard_name in finished
                bar.advance(shard, counted=False)
                continue
            bar.planned(shard)  # its documents are tokenized: a better total before the first batch
            data, meta = record_shard(source, shard, steps, config, bar.update)
            writer.write_shard(shard_name, data, meta)
            if n_workers == 1:
                writer.finalize()  # the manifest lists each finished shard: readable while recording
            written += 1
            tokens_written += data.n_tokens
            bar.advance(shard, counted=True)
        manifest = writer.finalize(complete=True if n_workers == 1 else None)
    except BaseException:
        writer.finalize()  # Ctrl-C or an input error: the finished shards stay listed
        raise
    finally:
        bar.close()
    status = "complete" if n_workers == 1 else "partial"
    log(f"{out}: {status}: {written} shard(s) ({tokens_written:,} tokens) recorded, {skipped} kept from before")
    return RecordResult(out, status, written, skipped, tokens_written, manifest)


class RecordProgress:
    """tqdm bar in tokens; the total is estimated from the input bytes at the tokens per byte seen so far."""

    def __init__(self, enabled: bool, input_bytes: int, name: str, initial: int = 0):
        self.input_bytes = max(1, input_bytes)
        self.bytes_done = 0
        self.tokens_seen = 0  # tokens counted (recorded or skipped), for the tokens-per-byte estimate
        self.bytes_seen = 0
        self.bar = None
        if enabled:
            from tqdm import tqdm

            total = max(initial, self.input_bytes // 4)  # ~4 bytes a token until the first shard tells
            self.bar = tqdm(total=total, initial=initial, unit="tok", unit_scale=True, desc=name, smoothing=0.05)

    def skip(self, doc: InputDoc) -> bool:
        self.bytes_done += doc.nbytes  # a document of an earlier run's finished shards
        return False

    def update(self, tokens: int) -> None:
        """A batch is recorded."""
        if self.bar is not None:
            self.bar.update(tokens)

    def planned(self, shard: PlannedShard) -> None:
        """A shard about to be recorded is tokenized: its tokens per byte refine the estimated total."""
        self.bytes_seen += sum(d.nbytes for d in shard.docs)
        self.tokens_seen += sum(shard.tokens)
        self._estimate()

    def advance(self, shard: PlannedShard, counted: bool) -> None:
        """A shard is done (counted: recorded now, its batches already shown and `planned`; else kept from
        before)."""
        nbytes, ntokens = sum(d.nbytes for d in shard.docs), sum(shard.tokens)
        self.bytes_done += nbytes
        if not counted:
            self.bytes_seen += nbytes
            self.tokens_seen += ntokens
            if self.bar is not None:  # move the bar without counting the shard in the speed
                self.bar.n += ntokens
        self._estimate()

    def _estimate(self) -> None:
        if self.bar is None or not self.bytes_seen:
            return
        rate = self.tokens_seen / self.bytes_seen
        self.bar.total = int(self.bar.n + max(0, self.input_bytes - self.bytes_done) * rate)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
