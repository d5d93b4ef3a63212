"""Whole-corpus routing aggregates a page draws (load heatmap, co-activation, flow, specialization, top
tokens), from an in-memory trace or from a routing dataset, behind one interface (`RoutingAggregates`).

`TraceAggregates(trace)` computes them with analysis.metrics / analysis.specialization on the trace;
`DatasetAggregates(queries, step)` counts them with DuckDB (analysis.dataset.queries) and hands the counts to
the same functions, so a page gets the same numbers either way and never materialises a big trace. Both keep
what they computed (a page asks for the same layer again on every rerun).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import numpy as np
import pandas as pd

from analysis import metrics, mi_counts, specialization, tables

if TYPE_CHECKING:
    from analysis.dataset.queries import DatasetQueries
    from analysis.trace import RoutingTrace

N_PERMUTATIONS = 100  # label permutations of the specialization baseline (as the heatmap page has used)
MI_SHUFFLES = 10  # shuffles of each MI baseline (`specialization.mi_summary`'s default, used by TraceAggregates)


class RoutingAggregates(Protocol):
    """Per-layer routing aggregates of one set of tokens (an eval trace, uploaded files, a whole dataset)."""

    n_tokens: int
    n_docs: int
    n_layers: int
    n_experts: int
    top_k: int

    def load(self) -> np.ndarray:
        """(L, E) int64 `metrics.expert_load`."""
        ...

    def top1_load(self) -> np.ndarray:
        """(L, E) int64: tokens whose top-1 is expert i."""
        ...

    def coactivation(self, layer: int) -> metrics.Coactivation:
        """`metrics.coactivation` of `layer` only: arrays of shape (1, E, E)."""
        ...

    def flow(self) -> np.ndarray:
        """(L-1, E, E) `metrics.cross_layer_flow` (top-1)."""
        ...

    def specialization(self) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame] | None:
        """(domain_specialization cells, permutation baseline per layer, MI per layer); None without labels."""
        ...

    def top_tokens(self, layer: int, n: int = 8) -> pd.DataFrame:
        """`tables.top_tokens_table` of `layer`: expert, tokens (top-1 count), top tokens 'tok (count)'."""
        ...

    def projection_trace(self) -> RoutingTrace | None:
        """The trace whose router inputs (`hidden`, `hidden_rows`) Router geometry projects: the trace itself
        (its recorded hidden rows), or a dataset's whole stored stratified sample; None when there is none."""
        ...


class _Memo:
    """Keeps each computed aggregate (thread-safe: sessions share a source's aggregates)."""

    def __init__(self) -> None:
        self._memo: dict = {}
        self._lock = threading.RLock()  # re-entrant: one aggregate may be computed from another

    def _keep(self, key, fn):
        with self._lock:
            if key not in self._memo:
                self._memo[key] = fn()
            return self._memo[key]


class TraceAggregates(_Memo):
    """Aggregates of an in-memory trace, by the in-memory metric functions."""

    def __init__(self, trace: RoutingTrace):
        super().__init__()
        self.trace = trace
        self.n_tokens, self.n_layers, self.n_experts, self.top_k = (
            trace.n_tokens, trace.n_layers, trace.n_experts, trace.top_k,
        )  # fmt: skip
        self.n_docs = len(trace.texts) or int(trace.tokens["doc_id"].nunique())
        self._experts = trace.experts_array()

    def load(self) -> np.ndarray:
        return self._keep("load", lambda: metrics.expert_load(self._experts, self.n_experts))

    def top1_load(self) -> np.ndarray:
        e = self._experts[:, :, 0].astype(np.int64)
        return self._keep("top1", lambda: np.stack([np.bincount(e[:, l], minlength=self.n_experts) for l in
                                                     range(self.n_layers)]))  # fmt: skip

    def coactivation(self, layer: int) -> metrics.Coactivation:
        return self._keep(("co", layer), lambda: metrics.coactivation(self._experts[:, [layer], :], self.n_experts))

    def flow(self) -> np.ndarray:
        return self._keep("flow", lambda: metrics.cross_layer_flow(self._experts, self.n_experts))

    def specialization(self):
        def compute():
            tok = self.trace.tokens
            if not (tok["label"].astype(str) != "").any():
                return None
            E = self.n_experts
            cells = specialization.domain_specialization(self._experts, tok, E)
            base = specialization.specialization_permutation_baseline(
                self._experts, tok, E, n_permutations=N_PERMUTATIONS
            )
            return cells, base.max_ratio, specialization.mi_summary(self._experts, tok, E, n_shuffles=MI_SHUFFLES)

        return self._keep("spec", compute)

    def projection_trace(self) -> RoutingTrace:
        return self.trace

    def top_tokens(self, layer: int, n: int = 8) -> pd.DataFrame:
        return self._keep(("top", layer, n), lambda: tables.top_tokens_table(self.trace.tokens, self.trace.routing,
                                                                            layer, n))  # fmt: skip


class DatasetAggregates(_Memo):
    """Aggregates of every token of a routing dataset at one step, counted by DuckDB."""

    def __init__(
        self, queries: DatasetQueries, step: int | None, sample: Callable[[], RoutingTrace | None] | None = None
    ):
        super().__init__()
        self.q, self.step, self._sample = queries, step, sample  # sample: builds the stored sample's trace
        self.n_layers, self.n_experts, self.top_k = queries.n_layers, queries.n_experts, queries.top_k
        self.n_tokens = queries.n_tokens(step)
        self.n_docs = sum(int(s["docs"]) for s in queries.manifest["shards"])

    def load(self) -> np.ndarray:
        return self._keep("load", lambda: self.q.load(self.step))

    def top1_load(self) -> np.ndarray:
        return self._keep("top1", lambda: self.q.top1_load(self.step))

    def coactivation(self, layer: int) -> metrics.Coactivation:
        return self._keep(("co", layer), lambda: self.q.coactivation(self.step, layer))

    def flow(self) -> np.ndarray:
        return self._keep("flow", lambda: self.q.cross_layer_flow(self.step))

    def specialization(self):
        """Cells and MI (plug-in bits) of every token, with their baselines: label permutations across documents
        (the specialization ratios and I(expert; domain), from per-document counts: NaN when there are too many
        documents for dense counts; the seeds and numbers of permutations of `TraceAggregates`) and the expected MI
        under token-id shuffles (I(expert; token id), exact, from the id counts and the loads)."""

        def compute():
            try:
                cells = self.q.domain_specialization(self.step)
            except ValueError:  # no labels
                return None
            mi = self.q.mutual_information(self.step)
            try:
                docs = self.q.labelled_docs(self.step)
            except ValueError:  # too many documents for dense per-document counts
                docs = None
            if docs is not None:
                base = specialization.permutation_baseline_of(docs, self.n_experts, n_permutations=N_PERMUTATIONS)
                base = base.max_ratio
                mi["mi_domain_baseline"] = mi_counts.mi_label_shuffles_of(docs, self.n_experts, MI_SHUFFLES).mean(0)
            else:
                per_layer = cells.groupby("layer")["ratio"].max()
                base = pd.DataFrame({"layer": per_layer.index, "max_ratio": per_layer.to_numpy()})
                for col in ("perm_mean", "perm_lo", "perm_hi", "p_value"):
                    base[col] = np.nan
                mi["mi_domain_baseline"] = np.nan
            n_X, load = self.q.token_id_counts(), self.load()
            mi["mi_token_baseline"] = [
                mi_counts.mi_token_shuffle_expectation(n_X, load[l], self.top_k) for l in range(self.n_layers)
            ]  # exact: what the in-memory 10 shuffles estimate
            return cells, base, mi[["layer", "mi_domain_bits", "mi_domain_baseline", "mi_token_bits",
                                    "mi_token_baseline"]]  # fmt: skip

        return self._keep("spec", compute)

    def top_tokens(self, layer: int, n: int = 8) -> pd.DataFrame:
        def compute():
            counts = self.q.top1_token_counts(self.step, layer, n)
            top1 = self.top1_load()[layer]
            rows = []
            for expert, group in counts.groupby("expert", sort=True):
                shown = group.assign(token=group["token_text"].map(tables.short_token))
                listed = ", ".join(f"{tok} ({c})" for tok, c in zip(shown["token"], shown["n"]))
                rows.append({"expert": int(expert), "tokens": int(top1[expert]), "top tokens": listed})
            return pd.DataFrame(rows, columns=["expert", "tokens", "top tokens"])

        return self._keep(("top", layer, n), compute)

    def projection_trace(self) -> RoutingTrace | None:
        return self._keep("sample", self._sample) if self._sample is not None else None
