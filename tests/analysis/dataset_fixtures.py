"""Small routing datasets for the query, source and stats tests: random but structured RoutingTraces (a few
labelled documents, repeated token ids, two steps of the same tokens) and a writer of the dataset layout
(analysis.dataset.layout) that tests use to put them on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from analysis.dataset import layout
from analysis.dataset.writer import DatasetWriter, ShardBuilder
from analysis.trace import RoutingTrace, build_trace

LABELS = ("code", "prose", "math")


def make_trace(
    seed: int = 0,
    routing_seed: int = 0,
    n_docs: int = 9,
    L: int = 3,
    E: int = 6,
    K: int = 2,
    step: int | None = 100,
    D: int = 0,
):
    """A trace of n_docs documents (labels cycling through LABELS, one unlabelled), 8-20 tokens each, whose
    experts lean on the label and the token id (so specialization is not all noise). `seed` draws the tokens,
    `routing_seed` the routing: two traces of one seed hold the same tokens (two steps of one dataset). With
    D > 0, every token has a random D-dim router input per layer (`hidden`), for the stored sample."""
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
        hidden=rng.standard_normal((T, L, D)).astype(np.float16) if D else None,
        hidden_rows=np.arange(T) if D else None,
    )


def write_dataset(root: Path, traces: dict[int | None, RoutingTrace], shards: int = 2, max_hidden: int = 4) -> Path:
    """Write `traces` (step -> trace of the SAME documents) with the dataset writer, as `shards` shards of
    documents (doc_index = order of appearance); the sample keeps up to `max_hidden` router inputs per label."""
    first = next(iter(traces.values()))
    doc_order = list(dict.fromkeys(first.tokens["doc_id"].tolist()))
    index_of = {d: i for i, d in enumerate(doc_order)}
    writer = DatasetWriter(
        root, {"name": "tiny", "kind": "run", "path": None}, steps=list(traces), sample={"max_hidden": max_hidden}
    )
    for s, part in enumerate(np.array_split(np.arange(len(doc_order)), shards)):
        ids = [doc_order[i] for i in part]
        builder = ShardBuilder(list(traces), max_hidden=max_hidden)
        sub = first.select_docs(ids)
        builder.add_docs(
            [int(i) for i in part],
            ids,
            [str(sub.tokens["label"][sub.tokens["doc_id"] == d].iloc[0]) for d in ids],
            [first.texts[d] for d in ids],
            [int((sub.tokens["doc_id"] == d).sum()) for d in ids],
        )
        for k, (step, trace) in enumerate(traces.items()):
            sub = trace.select_docs(ids)
            doc_index = sub.tokens["doc_id"].map(index_of).to_numpy(np.int64)
            builder.add_trace(sub, step, with_tokens=k == 0, doc_index=doc_index)
        writer.write_shard(layout.shard_id(0, s), builder.build(), builder.meta)
    writer.finalize(complete=True)
    return Path(root)
