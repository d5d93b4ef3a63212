"""Out-of-core routing metrics over a routing dataset (analysis.dataset.layout), with DuckDB.

DuckDB counts; the formulas stay where they are. Every query returns the COUNTS an in-memory metric is built
from (per (layer, expert) loads, per (layer, i, j) pair counts, per (layer, label, expert) counts, ...) and hands
them to the same functions of `analysis.metrics` / `analysis.specialization` that the in-memory path uses, so
the two agree by construction (tests/analysis/test_dataset_queries.py compares them on small datasets).

    q = DatasetQueries(DIR, QueryConfig(memory_limit="1GB", threads=2))
    q.load(step)                       (L, E) int64: tokens whose top-k contains expert i at layer l
    q.summary(step)                    metrics.load_summary + bias_flip_rate, router_entropy, consecutive_top1
    q.coactivation(step, layer=None)   metrics.Coactivation (all pairs, cond, lift)
    q.domain_specialization(step)      specialization.domain_specialization's table
    q.labelled_docs(step)              specialization.DocCounts (per-doc counts: permutation baselines)
    q.mutual_information(step)         I(expert; domain) and I(expert; token id), plug-in bits, per layer
    q.token_id_counts()                (X,) tokens per token id: with the loads, the token-id MI's shuffle baseline
    q.token_specialization(step)       specialization.token_specialization's table
    q.consecutive(step, mode)          per layer: n_pairs, rate (metrics.consecutive_same_expert's rate)
    q.saturation(steps)                tables.saturation_table: every step's agreement with the last one

Only files listed in the manifest are read (layout.listed_files), one step (and, where the query allows, one
layer) at a time: hive partitions step=S/layer=L mean a per-layer query opens that layer's files only.
Memory stays bounded: DuckDB gets `memory_limit` and spills joins and aggregates to `temp_directory` beyond it;
queries that join tokens with tokens (co-activation, consecutive pairs, saturation) run one layer at a time.
A dataset's token is (doc_index, position); its order (doc_index, position) is the trace's token_row order.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis import metrics, specialization
from analysis.dataset import layout
from analysis.trace import MoEShape


@dataclass(frozen=True)
class QueryConfig:
    """How DuckDB may use the machine."""

    memory_limit: str = "1GB"  # DuckDB's own cap; beyond it joins and aggregates spill to temp_directory
    threads: int = 2  # DuckDB worker threads (the 2-core default machine)
    temp_directory: str | None = None  # spill folder; None: a moe-explorer-duckdb folder in the system temp dir


def connect(config: QueryConfig = QueryConfig()):
    """A DuckDB connection with the config's memory limit, threads and spill folder."""
    import duckdb

    temp = config.temp_directory or os.path.join(tempfile.gettempdir(), "moe-explorer-duckdb")
    Path(temp).mkdir(parents=True, exist_ok=True)
    return duckdb.connect(
        config={
            "memory_limit": config.memory_limit,
            "threads": int(config.threads),
            "temp_directory": temp,
            "preserve_insertion_order": False,  # no ordering kept for unordered results: less memory
        }
    )


def _sql_list(paths: Sequence[str]) -> str:
    return "[" + ", ".join("'" + p.replace("'", "''") + "'" for p in paths) + "]"


class DatasetQueries(MoEShape):
    """Queries over the routing dataset at `root` (its manifest is read once; call `refresh` after a recording
    adds shards)."""

    def __init__(self, root: str | os.PathLike, config: QueryConfig = QueryConfig(), manifest: dict | None = None):
        self.root = Path(root)
        self.config = config
        self.manifest = manifest if manifest is not None else layout.read_manifest(self.root)
        layout.check_files(self.root, self.manifest)  # a listed file missing or of another size: one-line error
        self._con = None
        self._lock = threading.Lock()  # one query at a time on the connection (app sessions share it)

    def refresh(self) -> None:
        self.manifest = layout.read_manifest(self.root)
        layout.check_files(self.root, self.manifest)

    @property
    def con(self):
        if self._con is None:
            self._con = connect(self.config)
        return self._con

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

    # --- shape -------------------------------------------------------------------------------------------

    @property
    def meta(self) -> dict[str, Any]:
        meta = self.manifest.get("meta")
        if not meta:
            raise layout.DatasetError(f"{self.root / layout.MANIFEST}: no shard recorded yet (no model meta)")
        return meta

    def steps(self) -> list[int | None]:
        """The recorded steps (None for a source without steps), in manifest order."""
        return list(self.manifest["steps"])

    # --- reading -----------------------------------------------------------------------------------------

    def files(self, table: str, step: int | None | str = "any", layer: int | None = None) -> list[str]:
        """Absolute paths of the listed files of `table` (narrowed to `step`/`layer`); DatasetError if none."""
        rel = layout.listed_files(self.manifest, table, step, layer)
        if not rel:
            where = "" if step == "any" else f" at step {layout.step_value(step)}" if table in layout.PER_LAYER else ""
            where += f", layer {layer}" if layer is not None else ""
            raise layout.DatasetError(f"{self.root}: the dataset has no {table} files{where}")
        return [str(self.root / r) for r in rel]

    def scan(self, table: str, step: int | None | str = "any", layer: int | None = None) -> str:
        """SQL of a table scan: read_parquet over the listed files; per-layer tables get `layer` (and `step`,
        a string: "none" for a source without steps) from their hive partitions."""
        files = _sql_list(self.files(table, step, layer))
        if table in layout.PER_LAYER:
            return (
                f"read_parquet({files}, hive_partitioning = true, hive_types = {{'step': VARCHAR, 'layer': INTEGER}})"
            )
        return f"read_parquet({files})"

    def query(self, sql: str, params: dict | None = None) -> pd.DataFrame:
        """The result of `sql` ($name placeholders filled from `params`: user strings never enter the SQL)."""
        with self._lock:
            return self.con.execute(sql, params).df()

    def _dense(self, frame: pd.DataFrame, index: Sequence[str], shape: tuple[int, ...], value: str = "n"):
        """Scatter a long count table into a dense int64 array of `shape` (absent cells 0)."""
        out = np.zeros(shape, np.int64)
        if len(frame):
            out[tuple(frame[c].to_numpy(np.int64) for c in index)] = frame[value].to_numpy(np.int64)
        return out

    def token_rows(self, step: int | None, doc_index: np.ndarray, position: np.ndarray) -> dict[str, pd.DataFrame]:
        """The rows of the tokens (doc_index[i], position[i]) (a few thousand: the stored sample) at `step`, each
        with its `i`, ordered by i: "tokens" (token_id, token_text, char_start, char_end, label), "routing" (layer,
        rank, expert, weight, score, biased_score, bias_flip), "token_layer" (layer, shared_share, entropy)."""
        keys = {"d": np.asarray(doc_index).tolist(), "p": np.asarray(position).tolist()}
        k = "(SELECT unnest($d) AS doc_index, unnest($p) AS position, unnest(range(len($d))) AS i) k"  # zipped
        wanted = {
            "tokens": ("token_id, token_text, char_start, char_end, label", "k.i"),
            "routing": ("layer, rank, expert, weight, score, biased_score, bias_flip", "k.i, layer, rank"),
            "token_layer": ("layer, shared_share, entropy", "k.i, layer"),
        }
        scan = {t: self.scan(t, step) if t in layout.PER_LAYER else self.scan(t) for t in wanted}
        return {
            t: self.query(
                f"SELECT k.i, {cols} FROM {scan[t]} JOIN {k} USING (doc_index, position) ORDER BY {order}", keys
            )
            for t, (cols, order) in wanted.items()
        }

    # --- load and balance --------------------------------------------------------------------------------

    def load(self, step: int | None) -> np.ndarray:
        """(L, E) int64 `metrics.expert_load`: tokens whose top-k at layer l contains expert i."""
        frame = self.query(f"SELECT layer, expert, count(*) AS n FROM {self.scan('routing', step)} GROUP BY ALL")
        return self._dense(frame, ("layer", "expert"), (self.n_layers, self.n_experts))

    def top1_load(self, step: int | None) -> np.ndarray:
        """(L, E) int64: tokens whose top-1 (rank 0) at layer l is expert i."""
        sql = f"SELECT layer, expert, count(*) AS n FROM {self.scan('routing', step)} WHERE rank = 0 GROUP BY ALL"
        return self._dense(self.query(sql), ("layer", "expert"), (self.n_layers, self.n_experts))

    def n_tokens(self, step: int | None) -> int:
        """Tokens routed at `step` (those of layer 0)."""
        sql = f"SELECT count(*) AS n FROM {self.scan('routing', step, 0)} WHERE rank = 0"
        return int(self.query(sql)["n"].iloc[0])

    def summary(self, step: int | None, consecutive: bool = True) -> pd.DataFrame:
        """Per layer, `metrics.summary`'s columns: load_summary (layer, n_tokens, max_vio, cv, load_entropy,
        dead_experts, min_share, max_share), bias_flip_rate (per pair), router_entropy (mean over tokens of
        token_layer.entropy, nats) and, with `consecutive`, consecutive_top1 (the rate; no shuffle baseline)."""
        out = metrics.load_summary(self.load(step), self.n_tokens(step))
        flips = self.query(
            f"SELECT layer, avg(bias_flip::DOUBLE) AS bias_flip_rate FROM {self.scan('routing', step)} GROUP BY ALL"
        )
        out = out.merge(flips, on="layer", how="left")
        try:
            entropy = self.query(
                f"SELECT layer, avg(entropy::DOUBLE) AS router_entropy FROM {self.scan('token_layer', step)} "
                "GROUP BY ALL"
            )
            out = out.merge(entropy, on="layer", how="left")
        except layout.DatasetError:  # a dataset without token_layer files: no router entropy
            pass
        if consecutive:
            out["consecutive_top1"] = self.consecutive(step)["rate"].to_numpy()
        return out

    # --- co-activation -----------------------------------------------------------------------------------

    def coactivation(self, step: int | None, layer: int | None = None) -> metrics.Coactivation:
        """`metrics.coactivation` (all ordered pairs of a token's top-k; diagonal = load) of every layer, or of
        `layer` only (arrays of shape (1, E, E)). One self-join per layer, on (doc_index, position)."""
        E = self.n_experts
        layers = range(self.n_layers) if layer is None else [int(layer)]
        counts = np.zeros((len(layers), E, E), np.int64)
        n_tokens = None
        for i, l in enumerate(layers):
            scan = self.scan("routing", step, l)
            frame = self.query(
                f"WITH r AS (SELECT doc_index, position, expert FROM {scan}) "
                "SELECT a.expert AS i, b.expert AS j, count(*) AS n FROM r a JOIN r b "
                "ON a.doc_index = b.doc_index AND a.position = b.position GROUP BY ALL"
            )
            counts[i] = self._dense(frame, ("i", "j"), (E, E))
            if n_tokens is None:
                n_tokens = int(np.trace(counts[i])) // self.top_k  # the diagonal sums to T * K
        return metrics.coactivation_from_counts(counts, n_tokens or 0)

    def cross_layer_flow(self, step: int | None) -> np.ndarray:
        """(L-1, E, E) `metrics.cross_layer_flow` (mode "top1"): tokens going from top-1 expert i at layer l to
        top-1 expert j at layer l+1. One join of two layers' rank-0 rows per transition."""
        L, E = self.n_layers, self.n_experts
        flow = np.zeros((max(L - 1, 0), E, E), np.int64)
        for l in range(L - 1):
            a, b = (f"(SELECT doc_index, position, expert FROM {self.scan('routing', step, x)} WHERE rank = 0)"
                    for x in (l, l + 1))  # fmt: skip
            frame = self.query(
                f"SELECT a.expert AS i, b.expert AS j, count(*) AS n FROM {a} a JOIN {b} b "
                "ON a.doc_index = b.doc_index AND a.position = b.position GROUP BY ALL"
            )
            flow[l] = self._dense(frame, ("i", "j"), (E, E))
        return flow

    def top1_token_counts(self, step: int | None, layer: int, n: int = 8) -> pd.DataFrame:
        """expert, token_text, n: per expert at `layer`, its `n` most frequent top-1 token texts (ties by text)."""
        return self.query(
            f"SELECT expert, token_text, n FROM (SELECT r.expert, t.token_text, count(*) AS n, row_number() OVER "
            "(PARTITION BY r.expert ORDER BY count(*) DESC, t.token_text) AS k "
            f"FROM (SELECT doc_index, position, expert FROM {self.scan('routing', step, layer)} WHERE rank = 0) r "
            f"JOIN (SELECT doc_index, position, token_text FROM {self.scan('tokens')}) t USING (doc_index, position) "
            f"GROUP BY r.expert, t.token_text) WHERE k <= {int(n)} ORDER BY expert, n DESC, token_text"
        )

    # --- domains and tokens ------------------------------------------------------------------------------

    def _label_counts(self, step: int | None) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """(L, D, E) routings of each label's tokens to each expert, (D,) tokens per label, sorted label names
        (unlabelled "" left out, as `specialization._label_codes` does)."""
        docs = self.scan("docs")
        frame = self.query(
            f"SELECT r.layer, d.label, r.expert, count(*) AS n FROM {self.scan('routing', step)} r "
            f"JOIN (SELECT doc_index, label FROM {docs} WHERE label <> '') d USING (doc_index) GROUP BY ALL"
        )
        labels = sorted(frame["label"].unique().tolist())
        if not labels:
            raise ValueError("no labelled tokens: domain specialization needs a 'label' per document")
        frame["d"] = pd.Categorical(frame["label"], categories=labels).codes
        counts = self._dense(frame, ("layer", "d", "expert"), (self.n_layers, len(labels), self.n_experts))
        tokens_D = counts[0].sum(axis=1) // self.top_k  # every token has K routings per layer
        return counts, tokens_D, labels

    def domain_specialization(self, step: int | None) -> pd.DataFrame:
        """`specialization.domain_specialization`'s table (layer, label, expert, count, n_tokens, share, ratio).
        Counted per label: each label is one pseudo-document, which gives the same sums."""
        counts, tokens_D, labels = self._label_counts(step)
        D = len(labels)
        docs = specialization.DocCounts(
            counts_LNE=counts, tokens_N=tokens_D, label_N=np.arange(D), labels=labels, doc_ids=labels,
            top_k=self.top_k,
        )  # fmt: skip
        return specialization.domain_specialization_of(docs, self.n_experts)

    def labelled_docs(self, step: int | None, max_cells: int = 20_000_000) -> specialization.DocCounts:
        """Per labelled document (in doc_index order) routing counts, for the permutation baseline and the
        bootstrap (`specialization.permutation_baseline_of`). ValueError when L * N * E would exceed
        `max_cells` (the dense array would not be small)."""
        docs = self.query(
            f"SELECT doc_index, doc_id, label FROM {self.scan('docs')} WHERE label <> '' ORDER BY doc_index"
        )
        N, L, E = len(docs), self.n_layers, self.n_experts
        if N == 0:
            raise ValueError("no labelled tokens: domain specialization needs a 'label' per document")
        if L * N * E > max_cells:
            raise ValueError(
                f"{N:,} labelled documents x {L} layers x {E} experts is too many cells for per-document counts"
            )
        frame = self.query(
            f"SELECT r.layer, r.doc_index, r.expert, count(*) AS n FROM {self.scan('routing', step)} r "
            f"SEMI JOIN (SELECT doc_index FROM {self.scan('docs')} WHERE label <> '') d USING (doc_index) "
            "GROUP BY ALL"
        )
        frame["n_doc"] = np.searchsorted(docs["doc_index"].to_numpy(), frame["doc_index"].to_numpy())
        counts = self._dense(frame, ("layer", "n_doc", "expert"), (L, N, E))
        labels = sorted(docs["label"].unique().tolist())
        return specialization.DocCounts(
            counts_LNE=counts,
            tokens_N=counts[0].sum(axis=1) // self.top_k,
            label_N=pd.Categorical(docs["label"], categories=labels).codes.astype(np.int64),
            labels=labels,
            doc_ids=docs["doc_id"].astype(str).tolist(),
            top_k=self.top_k,
        )

    def _token_expert_counts(self, step: int | None, layer: int, top1: bool = False) -> pd.DataFrame:
        """token_id, expert, n: routings of each token id to each expert at `layer` (rank 0 only with top1)."""
        where = "WHERE r.rank = 0" if top1 else ""
        return self.query(
            f"SELECT t.token_id, r.expert, count(*) AS n FROM {self.scan('routing', step, layer)} r "
            f"JOIN (SELECT doc_index, position, token_id FROM {self.scan('tokens')}) t "
            f"USING (doc_index, position) {where} GROUP BY ALL"
        )

    def mutual_information(self, step: int | None) -> pd.DataFrame:
        """Per layer: plug-in I(expert; domain label) and I(expert; token id) in bits, as
        `specialization.mi_expert_domain` / `mi_expert_token` (each (token, rank) routing one sample; unlabelled
        tokens left out of the domain MI; NaN for a dataset without labels). Columns: layer, mi_domain_bits,
        mi_token_bits. Their shuffle baselines come from `labelled_docs`, `token_id_counts` and `load`
        (`analysis.mi_counts`; `DatasetAggregates.specialization`)."""
        L, E = self.n_layers, self.n_experts
        try:
            counts, _, _ = self._label_counts(step)
            mi_domain = [specialization.mi_from_counts(counts[l]) for l in range(L)]
        except ValueError:
            mi_domain = [np.nan] * L
        mi_token = []
        for l in range(L):
            frame = self._token_expert_counts(step, l)
            x = pd.factorize(frame["token_id"], sort=True)[0]
            c = np.zeros((int(x.max()) + 1 if len(x) else 0, E), np.int64)
            c[x, frame["expert"].to_numpy(np.int64)] = frame["n"].to_numpy(np.int64)
            mi_token.append(specialization.mi_from_counts(c))
        return pd.DataFrame({"layer": np.arange(L), "mi_domain_bits": mi_domain, "mi_token_bits": mi_token})

    def token_id_counts(self) -> np.ndarray:
        """(X,) int64 tokens per token id, ids ascending: the id margin of the token-id MI's shuffle baseline."""
        frame = self.query(f"SELECT token_id, count(*) AS n FROM {self.scan('tokens')} GROUP BY ALL ORDER BY 1")
        return frame["n"].to_numpy(np.int64)

    def token_specialization(self, step: int | None, *, min_count: int = 10, top1: bool = False) -> pd.DataFrame:
        """`specialization.token_specialization`'s table (layer, token_id, count, top_expert, share): per token
        id seen >= min_count times, the share of its occurrences routed to its most frequent expert."""
        E = self.n_experts
        occ = self.query(f"SELECT token_id, count(*) AS n FROM {self.scan('tokens')} GROUP BY ALL ORDER BY token_id")
        occ = occ[occ["n"] >= min_count]
        ids = occ["token_id"].to_numpy(np.int64)
        frames = []
        for l in range(self.n_layers):
            frame = self._token_expert_counts(step, l, top1)
            frame = frame[frame["token_id"].isin(ids)]
            c = np.zeros((len(ids), E), np.int64)
            c[np.searchsorted(ids, frame["token_id"].to_numpy(np.int64)), frame["expert"].to_numpy(np.int64)] = frame[
                "n"
            ].to_numpy(np.int64)
            frames.append(specialization.token_shares(l, ids, occ["n"].to_numpy(np.int64), c))
        return pd.concat(frames, ignore_index=True)

    # --- consecutive tokens ------------------------------------------------------------------------------

    def consecutive(self, step: int | None, mode: str = "top1") -> pd.DataFrame:
        """Per layer, `metrics.consecutive_same_expert`'s rate: of the token pairs (p, p+1) of one document, the
        share whose top-1 experts are equal (mode="top1") or whose top-k sets share an expert ("any").
        Columns: layer, n_pairs, rate (the shuffle baseline needs the tokens: compute it on a page)."""
        if mode not in ("top1", "any"):
            raise ValueError(f"mode must be 'top1' or 'any', got {mode!r}")
        rows = []
        for l in range(self.n_layers):
            scan = self.scan("routing", step, l)
            top1 = f"(SELECT doc_index, position, expert FROM {scan} WHERE rank = 0)"
            pairs = self.query(
                f"SELECT count(*) AS n, sum((a.expert = b.expert)::BIGINT) AS same FROM {top1} a JOIN {top1} b "
                "ON a.doc_index = b.doc_index AND b.position = a.position + 1"
            ).iloc[0]
            n, same = int(pairs["n"]), int(pairs["same"] or 0)
            if mode == "any":
                r = f"(SELECT doc_index, position, expert FROM {scan})"
                same = int(
                    self.query(
                        f"SELECT count(*) AS n FROM (SELECT DISTINCT a.doc_index, a.position FROM {r} a JOIN {r} b "
                        "ON a.doc_index = b.doc_index AND b.position = a.position + 1 AND a.expert = b.expert)"
                    )["n"].iloc[0]
                )
            rows.append((l, n, same / n if n else np.nan))
        return pd.DataFrame(rows, columns=["layer", "n_pairs", "rate"])

    # --- saturation across steps -------------------------------------------------------------------------

    def saturation(self, steps: Sequence[int] | None = None) -> pd.DataFrame:
        """`tables.saturation_table` over `steps` (default: every recorded step): per (step, layer) the
        agreement of the step's routing with the last step's, on the same tokens (`metrics.router_saturation`):
        top1_agreement = share of tokens with the same top-1; topk_overlap = mean |A ∩ B| / K;
        topk_exact = share of tokens with the same top-k set. ValueError when two steps hold different tokens."""
        columns = ["step", "layer", "top1_agreement", "topk_overlap", "topk_exact"]
        steps = sorted(s for s in (self.steps() if steps is None else steps) if s is not None)
        if not steps:
            return pd.DataFrame(columns=columns)
        final, K = steps[-1], self.top_k
        rows = []
        for s in steps:
            for l in range(self.n_layers):
                a, b = self.scan("routing", s, l), self.scan("routing", final, l)
                n_a, n_b = (int(self.query(f"SELECT count(*) AS n FROM {x}")["n"].iloc[0]) for x in (a, b))
                m = self.query(
                    f"SELECT count(*) AS matches, count(*) FILTER (WHERE x.rank = 0 AND y.rank = 0) AS top1 "
                    f"FROM (SELECT doc_index, position, rank, expert FROM {a}) x "
                    f"JOIN (SELECT doc_index, position, rank, expert FROM {b}) y "
                    "ON x.doc_index = y.doc_index AND x.position = y.position AND x.expert = y.expert"
                ).iloc[0]
                exact = self.query(
                    f"SELECT count(*) AS n FROM (SELECT x.doc_index, x.position FROM {a} x JOIN {b} y "
                    "ON x.doc_index = y.doc_index AND x.position = y.position AND x.expert = y.expert "
                    f"GROUP BY ALL HAVING count(*) = {K})"
                )["n"].iloc[0]
                if n_a != n_b:
                    raise ValueError(
                        f"steps {s} and {final} hold different tokens at layer {l} ({n_a} vs {n_b} routings)"
                    )
                T = n_a // K
                rows.append((s, l, m["top1"] / T, m["matches"] / (T * K), exact / T))
        return pd.DataFrame(rows, columns=columns)
