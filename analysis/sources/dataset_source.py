"""`DatasetSource`: a recorded routing dataset (analysis.dataset, `moe-explorer record`) as a model source.

It has no model: new text cannot be routed (`capabilities.route_text` says why). Its steps are the manifest's.
Whole-corpus views come from DuckDB aggregates (`aggregates(step)`, `saturation()`), never from a trace of every
token; `stored_trace(step, page)` is a bounded page of documents (consecutive ones of the stream, up to
`page_tokens` tokens; `n_pages()` of them) for the token-level views, and the first page's documents are the
`eval_docs()`. Projections take the whole stored sample (`sample_trace`, through `aggregates(step)`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.sources.base import YES, Capabilities, Capability, DocTuple, ModelCard

NO_MODEL = (
    "This is a recorded routing dataset: it holds the routing of its documents, not the model, so new text "
    "cannot be routed. Open the model it was recorded from to route text."
)
NO_STEPS = "This dataset was recorded from a model without training steps."
NO_HISTORY = "A routing dataset holds routing, not a training history."
NO_BIASES = "A routing dataset does not store the routers' balancing biases."
PAGE_TOKENS = 20_000  # tokens of the page of documents that token-level views and projections get


class DatasetSource:
    """A routing dataset directory (manifest.json of format moe-explorer-dataset/1)."""

    kind = "dataset"

    def __init__(self, path: str | Path, memory_limit: str = "1GB", threads: int = 2, page_tokens: int | None = None):
        self.path = str(Path(path).resolve())
        # PAGE_TOKENS read here, not bound as a default: a test can shrink the pages of the sources the app opens
        self.page_tokens = int(page_tokens or PAGE_TOKENS)
        self.memory_limit, self.threads = memory_limit, int(threads)
        self._dataset = None
        self._queries = None
        self._aggregates: dict = {}
        self._pages: dict = {}
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"DatasetSource({self.path!r})"

    @property
    def dataset(self):
        """The opened `analysis.dataset.reader.Dataset` (DatasetError, one line, for a broken one)."""
        if self._dataset is None:
            from analysis.dataset.reader import open_dataset

            self._dataset = open_dataset(self.path)
        return self._dataset

    @property
    def queries(self):
        with self._lock:
            if self._queries is None:
                from analysis.dataset.queries import DatasetQueries, QueryConfig

                config = QueryConfig(memory_limit=self.memory_limit, threads=self.threads)
                self._queries = DatasetQueries(self.path, config, manifest=self.dataset.manifest)
            return self._queries

    @property
    def name(self) -> str:
        return str(self.dataset.manifest["source"].get("name") or Path(self.path).name)

    @property
    def capabilities(self) -> Capabilities:
        steps = YES if self.steps() else Capability(False, NO_STEPS)
        return Capabilities(
            route_text=Capability(False, NO_MODEL),
            steps=steps,
            history=Capability(False, NO_HISTORY),
            stored_traces=YES,
            eval_docs=YES,
            router_biases=Capability(False, NO_BIASES),
            causal=Capability(False, NO_MODEL),
            pages=YES,
        )

    def card(self) -> ModelCard:
        ds, meta = self.dataset, self.dataset.meta
        L, E, K = meta.get("n_layers"), meta.get("n_experts"), meta.get("top_k")
        source = ds.manifest["source"]
        steps = ", ".join("none" if s is None else str(s) for s in ds.steps)
        metrics = (
            ("Documents", f"{ds.n_docs:,}"),
            ("Tokens", f"{ds.n_tokens:,}"),
            ("MoE layers", str(L)),
            ("Experts × top-k", f"{E} × {K}"),
        )
        rows = (
            ("recorded from", f"{source.get('name')} ({source.get('kind')})"),
            ("steps", steps),
            ("shards", str(len(ds.shards))),
            ("complete", "yes" if ds.complete else "no (recording interrupted or running)"),
            ("routing rows per step", f"{ds.n_tokens * (L or 0) * (K or 0):,}"),
            ("created", str(ds.manifest.get("created"))),
        )
        return ModelCard(f"Routing dataset {self.name}", L, E, K, metrics, rows)

    def steps(self) -> list[int]:
        return sorted(int(s) for s in self.dataset.steps if s is not None)

    def model_steps(self) -> list[int]:
        return []

    def default_step(self) -> int | None:
        steps = self.steps()
        return steps[-1] if steps else None

    def _step(self, step: int | None) -> int | None:
        """The dataset's partition step of a page's step (None for a dataset without steps)."""
        return step if self.steps() else None

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        raise ValueError(NO_MODEL)

    def causal_model(self, step: int | None = None):
        raise ValueError(NO_MODEL)

    def record(
        self,
        docs: Sequence[DocTuple],
        step: int | None = None,
        progress: Callable[[int, int], None] | None = None,
    ):
        """`docs` cut out of the page of stored documents that holds them (matched by text: the Token routing
        page routes a page's documents at another step this way); ValueError for any other text."""
        texts = [text for _, _, text in docs]
        found = self.queries.query(
            f"SELECT doc_index FROM {self.queries.scan('docs')} WHERE list_contains($texts, text)", {"texts": texts}
        )["doc_index"].to_numpy(np.int64)
        doc_index, page_of = self._page_table()
        pages = set(page_of[np.isin(doc_index, found)].tolist())
        if not docs or len(pages) != 1:  # a text not stored, or documents of several pages
            raise ValueError(NO_MODEL)
        page = self.stored_trace(step, page=pages.pop())
        by_text = {text: doc_id for doc_id, text in page.texts.items()}
        if any(text not in by_text for text in texts):
            raise ValueError(NO_MODEL)
        return page.select_docs([by_text[text] for text in texts])

    def router_biases(self, step: int | None) -> np.ndarray:
        meta = self.dataset.meta
        return np.zeros((int(meta["n_layers"]), int(meta["n_experts"])))

    def history(self) -> None:
        return None

    def eval_history(self) -> None:
        return None

    def training_config(self) -> None:
        return None

    # --- documents ----------------------------------------------------------------------------------------

    def _page_table(self) -> tuple[np.ndarray, np.ndarray]:
        """(doc_index, page) of every document, in stream order; read once (one small row per document)."""
        with self._lock:
            if "page_of" not in self._pages:
                docs = self.queries.query(
                    f"SELECT doc_index, n_tokens FROM {self.queries.scan('docs')} ORDER BY doc_index"
                )
                page_of = np.zeros(len(docs), np.int64)
                page, filled = 0, 0
                for i, n in enumerate(docs["n_tokens"].tolist()):  # greedy: one pass, ~0.1 s per 100k documents
                    if filled and filled + n > self.page_tokens:  # full: the next page (none is left empty)
                        page, filled = page + 1, 0
                    page_of[i], filled = page, filled + n
                self._pages["page_of"] = (docs["doc_index"].to_numpy(np.int64), page_of)
            return self._pages["page_of"]

    def n_pages(self) -> int:
        """How many pages of documents `stored_trace(step, page)` has (0 for an empty dataset)."""
        page_of = self._page_table()[1]
        return int(page_of[-1]) + 1 if len(page_of) else 0

    def page_docs(self, page: int = 0) -> np.ndarray:
        """doc_index of the documents of page `page`: consecutive documents of the stream holding at most
        `page_tokens` tokens together (a longer document has a page of its own); empty past the last page."""
        doc_index, page_of = self._page_table()
        return doc_index[page_of == page]

    def stored_trace(self, step: int | None, page: int = 0):
        """The trace of page `page` of the documents at `step` (None when the page is empty)."""
        key = (self._step(step), page)
        with self._lock:
            if key not in self._pages:
                wanted = self.page_docs(page)
                self._pages[key] = self.dataset.to_trace(wanted.tolist(), key[0]) if len(wanted) else None
                traces = [k for k in self._pages if k != "page_of"]
                if len(traces) > 4:  # a page is tens of MB at most: keep a few
                    self._pages.pop(traces[0])
            return self._pages[key]

    def sample_trace(self, step: int | None):
        """A trace of the dataset's stored stratified sample at `step` (`Dataset.sample`: router inputs of up to
        the manifest's `max_hidden` tokens per label, drawn from every shard): only the sampled tokens, with
        their routing, labels and their documents' texts (for hovers and context); None without a sample.
        What Router geometry projects: the whole dataset's sample, not the part inside one page."""
        from analysis.trace import build_trace

        key = self._step(step)
        sample = self.dataset.sample(key)
        if not len(sample["doc_index"]):
            return None
        order = np.lexsort((sample["position"], sample["doc_index"]))  # stream order: sorted token rows
        doc_index, position = sample["doc_index"][order], sample["position"][order]
        rows = self.queries.token_rows(key, doc_index, position)
        tok, routing, token_layer = rows["tokens"], rows["routing"], rows["token_layer"]
        M, meta = len(order), self.dataset.meta
        L, K = int(meta["n_layers"]), int(meta["top_k"])
        if len(tok) != M or len(routing) != M * L * K or len(token_layer) != M * L:
            raise ValueError(f"{self.path}: the stored sample at step {key} names tokens the dataset lacks")
        docs = self.dataset.read("docs", columns=["doc_index", "doc_id", "text"], doc_index=doc_index).to_pandas()
        ids = docs["doc_id"].astype(str)
        if not ids.is_unique:  # as `Dataset.to_trace`: the documents' own ids when distinct
            ids = docs["doc_index"].astype(str)
        name_of = dict(zip(docs["doc_index"], ids))
        by_token = {c: routing[c].to_numpy().reshape(M, L, K) for c in ("expert", "weight", "score", "biased_score")}
        columns = {c: tok[c].to_numpy() for c in ("token_id", "token_text", "char_start", "char_end", "label")}
        return build_trace(
            tokens={**columns, "position": position, "doc_id": [name_of[d] for d in doc_index]},
            experts=by_token["expert"],
            weights=by_token["weight"],
            scores_k=by_token["score"],
            biased_k=by_token["biased_score"],
            flips=routing["bias_flip"].to_numpy().reshape(M, L, K),
            shared_share=token_layer["shared_share"].to_numpy().reshape(M, L),
            entropy=token_layer["entropy"].to_numpy().reshape(M, L),
            meta={
                **meta,
                "step": key,
                "run": self.name,
                "sample": int(self.dataset.manifest["sample"].get("max_hidden", M)),
            },
            texts=dict(zip(ids, docs["text"])),
            hidden=sample["hidden"][order],
            hidden_rows=np.arange(M),
        )

    def eval_docs(self) -> list[DocTuple]:
        page = self.stored_trace(self.default_step())
        if page is None:
            return []
        first = page.tokens.groupby("doc_id", sort=False)["label"].first()
        return [(str(d), str(first[d]), page.texts[d]) for d in first.index]

    # --- aggregates ---------------------------------------------------------------------------------------

    def aggregates(self, step: int | None):
        """`DatasetAggregates` of every token at `step` (DuckDB), kept per step."""
        from analysis.sources.aggregates import DatasetAggregates

        key = self._step(step)
        with self._lock:
            if key not in self._aggregates:
                self._aggregates[key] = DatasetAggregates(self.queries, key, sample=lambda: self.sample_trace(key))
            return self._aggregates[key]

    def saturation(self) -> pd.DataFrame | None:
        """`tables.saturation_table` of every recorded step against the last one; None with fewer than two."""
        if len(self.steps()) < 2:
            return None
        with self._lock:
            if "saturation" not in self._aggregates:
                self._aggregates["saturation"] = self.queries.saturation()
            return self._aggregates["saturation"]

    def projection_cache_dir(self) -> None:
        return None
