"""Time every routing metric on a synthetic trace of 1,000,000 (token, layer) rows.

250k tokens x 4 layers, E=16, K=2 (2M routing rows), ~1000 docs of 4 labels, Zipf token ids, skewed routing
(each label and token id prefers some experts). Prints one row per metric and the whole suite.

    python bench/metrics_suite.py [--tokens 250000] [--layers 4] [--experts 16] [--top-k 2] [--docs 1000]
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import pandas as pd

from analysis import capacity, domain_probe
from analysis import metrics as m
from analysis import specialization as s


def synthetic_trace(n_tokens: int, n_layers: int, n_experts: int, top_k: int, n_docs: int, seed: int = 0):
    """(routing, tokens, scores_TLE, experts_b_TLK): a skewed synthetic trace and a second 'checkpoint'."""
    rng = np.random.default_rng(seed)
    T, L, E, K = n_tokens, n_layers, n_experts, top_k
    labels = np.array(["prose", "code", "math", "data"])
    # documents of random lengths that tile the T tokens
    cuts = np.sort(rng.choice(np.arange(1, T), size=n_docs - 1, replace=False))
    doc_T = np.zeros(T, np.int64)
    doc_T[cuts] = 1
    doc_T = np.cumsum(doc_T)
    starts = np.concatenate([[0], cuts])
    position_T = np.arange(T) - starts[doc_T]
    label_T = labels[rng.integers(0, len(labels), size=n_docs)][doc_T]
    vocab = 8000
    token_T = np.minimum(rng.zipf(1.2, size=T), vocab) - 1
    # router logits: global expert skew + label preference + token-id preference + noise
    label_code = pd.factorize(label_T)[0]
    global_LE = rng.normal(0, 0.6, size=(L, E))
    label_DLE = rng.normal(0, 0.3, size=(len(labels), L, E))
    token_VLE = rng.normal(0, 1.0, size=(vocab, L, E)).astype(np.float32)
    logits = (global_LE[None] + label_DLE[label_code] + token_VLE[token_T]).astype(np.float32)  # (T, L, E)
    logits += rng.gumbel(size=logits.shape).astype(np.float32)
    scores = np.exp(logits - logits.max(axis=2, keepdims=True))
    scores /= scores.sum(axis=2, keepdims=True)  # (T, L, E) softmax scores
    experts = np.argsort(-logits, axis=2)[:, :, :K]  # (T, L, K) top-k, rank 0 first
    noisy = logits + rng.gumbel(size=logits.shape).astype(np.float32) * 0.5
    experts_b = np.argsort(-noisy, axis=2)[:, :, :K]  # a 'previous checkpoint' of the same tokens
    t, l, r = np.meshgrid(np.arange(T), np.arange(L), np.arange(K), indexing="ij")
    weight = np.take_along_axis(scores, experts, axis=2)
    routing = pd.DataFrame(
        {
            "token_row": t.ravel().astype(np.int32),
            "layer": l.ravel().astype(np.int8),
            "rank": r.ravel().astype(np.int8),
            "expert": experts.ravel().astype(np.int16),
            "weight": weight.ravel(),
            "score": weight.ravel(),
            "biased_score": weight.ravel(),
            "bias_flip": rng.random(T * L * K) < 0.03,
        }
    )
    tokens = pd.DataFrame(
        {
            "doc_id": pd.Categorical([f"doc{d:05d}" for d in range(n_docs)])[doc_T],
            "position": position_T.astype(np.int32),
            "token_id": token_T.astype(np.int32),
            "label": label_T,
        }
    )
    return routing, tokens, scores.astype(np.float32), experts_b


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=250_000)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--experts", type=int, default=16)
    p.add_argument("--top-k", type=int, default=2)
    p.add_argument("--docs", type=int, default=1000)
    args = p.parse_args()
    E = args.experts
    t0 = time.perf_counter()
    routing, tokens, scores, experts_b = synthetic_trace(args.tokens, args.layers, E, args.top_k, args.docs)
    print(
        f"synthetic trace: {args.tokens:,} tokens x {args.layers} layers = {args.tokens * args.layers:,} "
        f"(token, layer) rows, {len(routing):,} routing rows, E={E}, K={args.top_k}, {args.docs} docs "
        f"(built in {time.perf_counter() - t0:.1f} s)"
    )
    print(f"machine: {platform.processor() or platform.machine()}, numpy {np.__version__}, pandas {pd.__version__}")

    timings: list[tuple[str, float, str]] = []

    def timed(name: str, fn):
        start = time.perf_counter()
        result = fn()
        timings.append((name, time.perf_counter() - start, ""))
        return result

    suite_start = time.perf_counter()
    e, _ = timed("dense_routing (DataFrame -> (T,L,K))", lambda: m.dense_routing(routing))
    load = timed("expert_load", lambda: m.expert_load(e, E))
    timed(
        "load_share/max_vio/cv/entropy/dead",
        lambda: (m.load_share(load), m.max_vio(load), m.load_cv(load), m.load_entropy(load), m.dead_experts(load)),
    )
    timed("router_entropy_per_layer (scores)", lambda: m.router_entropy_per_layer(scores))
    timed("bias_flip_rate (per pair)", lambda: m.bias_flip_rate(routing))
    timed("coactivation (all pairs + lift)", lambda: m.coactivation(e, E))
    timed("cross_layer_flow top1", lambda: m.cross_layer_flow(e, E, mode="top1"))
    timed("cross_layer_flow all top-k pairs", lambda: m.cross_layer_flow(e, E, mode="all"))
    timed("consecutive_same_expert (5 shuffles)", lambda: m.consecutive_same_expert(e, tokens, n_shuffles=5))
    timed("router_saturation", lambda: m.router_saturation(e, experts_b))
    cap = timed("capacity_drop C=1.0", lambda: capacity.capacity_drop(e, E, 1.0))
    timed("drop_rate_by_position", lambda: capacity.drop_rate_by_position(cap.dropped_TLK, tokens, 64))
    timed("summary (incl. dense_routing)", lambda: m.summary(routing, E, tokens=tokens, scores=scores))
    timed("domain_specialization", lambda: s.domain_specialization(e, tokens, E))
    timed("permutation baseline (200 perms)", lambda: s.specialization_permutation_baseline(e, tokens, E))
    timed("bootstrap CI (200 resamples)", lambda: s.specialization_bootstrap_ci(e, tokens, E))
    timed("mi_summary (domain + token id, 10 shuffles each)", lambda: s.mi_summary(e, tokens, E))
    timed(
        "token_specialization + summary",
        lambda: s.token_specialization_summary(s.token_specialization(e, tokens, E, min_count=10)),
    )
    timed("import sklearn (once per process)", lambda: __import__("sklearn.linear_model"))
    probe = timed("domain_probe (5-fold, L+1 fits)", lambda: domain_probe.domain_probe(e, tokens, E))
    total = time.perf_counter() - suite_start

    width = max(len(n) for n, _, _ in timings)
    print(f"\n{'metric':<{width}}  seconds")
    print(f"{'-' * width}  -------")
    for name, sec, _ in timings:
        print(f"{name:<{width}}  {sec:7.3f}")
    print(f"{'-' * width}  -------")
    print(f"{'whole suite':<{width}}  {total:7.3f}")
    print(
        "\nsanity: probe accuracy (all layers) =",
        round(float(probe["accuracy"].iloc[-1]), 3),
        "chance =",
        round(float(probe["chance"].iloc[-1]), 3),
    )


if __name__ == "__main__":
    main()
