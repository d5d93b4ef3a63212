"""Small routing datasets for the query, source and stats tests: random but structured RoutingTraces (a few
labelled documents, repeated token ids, two steps of the same tokens) and a writer of the dataset layout
(analysis.dataset.layout) that tests use to put them on disk."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from analysis.dataset import layout
from analysis.trace import RoutingTrace, build_trace

LABELS = ("code", "prose", "math")


def make_trace(
    seed: int = 0, routing_seed: int = 0, n_docs: int = 9, L: int = 3, E: int = 6, K: int = 2, step: int | None = 100
):
    """A trace of n_docs documents (labels cycling through LABELS, one unlabelled), 8-20 tokens each, whose
    experts lean on the label and the token id (so specialization is not all noise). `seed` draws the tokens,
    `routing_seed` the routing: two traces of one seed hold the same tokens (two steps of one dataset)."""
    rng = np.random.default_rng(seed)
    doc_ids, labels, positions, token_ids, texts = [], [], [], [], {}
    for d in range(n_docs):
        n = int(rng.integers(8, 21))
        label = "" if d == n_docs - 1 else LABELS[d % len(LABELS)]
        ids = rng.integers(0, 12, size=n)
        doc_ids += [f"doc{d}"] * n
        labels += [label] * n
        positions += list(range(n))
        token_ids += ids.tolist()
        texts[f"doc{d}"] = "".join(f"t{i} " for i in ids)
    T = len(doc_ids)
    rng = np.random.default_rng([seed, routing_seed])
    lab = np.array([LABELS.index(x) if x else 3 for x in labels])
    tid = np.array(token_ids)
    experts = np.zeros((T, L, K), np.int64)
    for t in range(T):
        for l in range(L):
            pref = (tid[t] + lab[t] * 2 + l) % E
            others = rng.permutation([e for e in range(E) if e != pref])
            experts[t, l] = [pref, *others[: K - 1]] if rng.random() < 0.6 else rng.permutation(E)[:K]
    starts = np.concatenate([[0], np.cumsum([len(f"t{i} ") for i in token_ids])])
    tokens = {
        "doc_id": doc_ids,
        "position": positions,
        "token_id": token_ids,
        "token_text": [f"t{i}" for i in token_ids],
        "char_start": [],
        "char_end": [],
        "label": labels,
    }
    doc_start = {}
    for t, d in enumerate(doc_ids):
        doc_start.setdefault(d, starts[t])
        tokens["char_start"].append(int(starts[t] - doc_start[d]))
        tokens["char_end"].append(int(starts[t] - doc_start[d]) + len(f"t{token_ids[t]}"))
    weights = rng.random((T, L, K)).astype(np.float32)
    return build_trace(
        tokens=tokens,
        experts=experts,
        weights=weights,
        scores_k=weights,
        biased_k=weights + 0.01,
        flips=rng.random((T, L, K)) < 0.1,
        shared_share=np.zeros((T, L), np.float32),
        entropy=rng.random((T, L)).astype(np.float32),
        meta={"n_layers": L, "n_experts": E, "top_k": K, "step": step, "run": "tiny"},
        texts=texts,
    )


def _write(root: Path, rel: str, table: pa.Table, files: dict) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    files[rel] = {"rows": table.num_rows, "bytes": path.stat().st_size, "sha256": layout.sha256_file(path)}


def write_dataset(root: Path, traces: dict[int | None, RoutingTrace], shards: int = 2) -> Path:
    """Write `traces` (step -> trace of the SAME documents) as a dataset of `shards` shards of documents."""
    root = Path(root)
    first = next(iter(traces.values()))
    doc_order = list(dict.fromkeys(first.tokens["doc_id"].tolist()))
    doc_index = {d: i for i, d in enumerate(doc_order)}
    tok = first.tokens
    di = tok["doc_id"].map(doc_index).to_numpy(np.int64)
    L, K = first.n_layers, first.top_k
    manifest = layout.new_manifest(
        {"name": "tiny", "kind": "run", "path": "tiny"},
        steps=list(traces),
        meta={"n_layers": L, "n_experts": first.n_experts, "top_k": K, "layer_blocks": list(range(L)), "config": None},
    )
    for s, doc_part in enumerate(np.array_split(np.arange(len(doc_order)), shards)):
        sid = layout.shard_id(0, s)
        rows = np.flatnonzero(np.isin(di, doc_part))
        files: dict = {}
        docs = {
            "doc_index": pa.array(doc_part, pa.int64()),
            "doc_id": [doc_order[i] for i in doc_part],
            "label": [str(tok["label"].to_numpy()[di == i][0]) for i in doc_part],
            "text": [first.texts[doc_order[i]] for i in doc_part],
            "n_tokens": pa.array([int((di == i).sum()) for i in doc_part], pa.int32()),
        }
        _write(root, layout.table_path("docs", sid), pa.table(docs, schema=layout.DOCS_SCHEMA), files)
        t = tok.iloc[rows]
        tokens = {"doc_index": di[rows], **{c: t[c].to_numpy() for c in layout.TOKENS_SCHEMA.names[1:]}}
        _write(root, layout.table_path("tokens", sid), pa.table(tokens, schema=layout.TOKENS_SCHEMA), files)
        for step, trace in traces.items():
            r = trace.routing
            for layer in range(L):
                sel = r[(r["layer"] == layer) & np.isin(r["token_row"].to_numpy(), rows)]
                tr = sel["token_row"].to_numpy()
                cols = {"doc_index": di[tr], "position": tok["position"].to_numpy()[tr]}
                cols.update({c: sel[c].to_numpy() for c in layout.ROUTING_SCHEMA.names[2:]})
                rel = layout.table_path("routing", sid, step, layer)
                _write(root, rel, pa.table(cols, schema=layout.ROUTING_SCHEMA), files)
                tl = trace.token_layer
                sel = tl[(tl["layer"] == layer) & np.isin(tl["token_row"].to_numpy(), rows)]
                tr = sel["token_row"].to_numpy()
                cols = {"doc_index": di[tr], "position": tok["position"].to_numpy()[tr]}
                cols.update({c: sel[c].to_numpy() for c in ("shared_share", "entropy")})
                rel = layout.table_path("token_layer", sid, step, layer)
                _write(root, rel, pa.table(cols, schema=layout.TOKEN_LAYER_SCHEMA), files)
        manifest["shards"].append(
            {"id": sid, "worker": 0, "files": files, "docs": len(doc_part), "tokens": len(rows),
             "doc_start": int(doc_part[0]), "doc_end": int(doc_part[-1]) + 1}
        )  # fmt: skip
    manifest["complete"] = True
    (root / layout.MANIFEST).write_text(json.dumps(manifest))
    return root
