"""analysis.metrics against values computed by hand on a 6-token, 2-layer, E=4, K=2 trace."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from analysis import capacity
from analysis import metrics as m
from moe_core import routing_stats

E = 4
# experts[t][l] = top-k of token t at layer l, rank 0 first
EXPERTS = [
    [[0, 1], [1, 0]],  # t0  doc d0 pos 0
    [[0, 1], [1, 2]],  # t1  doc d0 pos 1
    [[1, 0], [2, 1]],  # t2  doc d0 pos 2
    [[2, 0], [0, 1]],  # t3  doc d1 pos 0
    [[2, 3], [0, 1]],  # t4  doc d1 pos 1
    [[0, 2], [1, 0]],  # t5  doc d1 pos 2
]
# by hand: layer 0 load = [5, 3, 3, 1]; layer 1 load = [4, 6, 2, 0] (expert 3 dead); each row sums to 12
LOAD = np.array([[5, 3, 3, 1], [4, 6, 2, 0]])


def make_routing(experts=EXPERTS, flips=None) -> pd.DataFrame:
    e = np.asarray(experts)
    T, L, K = e.shape
    t, l, r = np.meshgrid(np.arange(T), np.arange(L), np.arange(K), indexing="ij")
    df = pd.DataFrame(
        {
            "token_row": t.ravel(),
            "layer": l.ravel(),
            "rank": r.ravel(),
            "expert": e.ravel(),
            "weight": np.full(T * L * K, 1.0 / K),
        }
    )
    if flips is not None:
        df["bias_flip"] = np.asarray(flips, bool).ravel()
    return df


def make_tokens(docs=("d0",) * 3 + ("d1",) * 3, positions=(0, 1, 2, 0, 1, 2)) -> pd.DataFrame:
    return pd.DataFrame({"doc_id": list(docs), "position": list(positions)})


# --- dense view ----------------------------------------------------------------------------------------


def test_dense_routing_reshape_and_scatter_agree():
    df = make_routing()
    e, w = m.dense_routing(df)
    assert e.shape == (6, 2, 2) and np.array_equal(e, np.asarray(EXPERTS))
    assert np.allclose(w, 0.5)
    e2, _ = m.dense_routing(df.sample(frac=1.0, random_state=3))  # any row order
    assert np.array_equal(e2, e)


def test_dense_routing_rejects_missing_and_duplicate_rows():
    df = make_routing()
    with pytest.raises(ValueError, match="rows"):
        m.dense_routing(df.iloc[1:])
    dup = df.copy()
    dup.loc[1, "rank"] = 0  # (token 0, layer 0, rank 0) twice, rank 1 missing
    with pytest.raises(ValueError, match="exactly once"):
        m.dense_routing(dup.iloc[::-1])


# --- load and balance -----------------------------------------------------------------------------------


def test_expert_load_from_array_and_dataframe():
    assert np.array_equal(m.expert_load(np.asarray(EXPERTS), E), LOAD)
    assert np.array_equal(m.expert_load(make_routing(), E), LOAD)


def test_load_share_max_vio_cv():
    share = m.load_share(LOAD)
    assert np.allclose(share[0], [5 / 12, 3 / 12, 3 / 12, 1 / 12])
    # mean load 3: layer 0 (5-3)/3, layer 1 (6-3)/3
    assert np.allclose(m.max_vio(LOAD), [2 / 3, 1.0])
    # population variance: layer 0 (4+0+0+4)/4 = 2, layer 1 (1+9+1+9)/4 = 5
    assert np.allclose(m.load_cv(LOAD), [math.sqrt(2) / 3, math.sqrt(5) / 3])


def test_max_vio_of_an_empty_layer_is_zero_and_comes_from_routing_stats():
    """One copy: metrics calls moe_core.routing_stats on the numpy load. A layer with no load has MaxVio 0
    (it was NaN before the one copy; routing_stats returns 0 when the mean load is 0)."""
    load = np.array([[4, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]])  # by hand: (4-1)/1, empty, balanced
    np.testing.assert_array_equal(m.max_vio(load), [3.0, 0.0, 0.0])
    assert m.max_vio(load).dtype == np.float64
    np.testing.assert_array_equal(m.max_vio(load), routing_stats.max_violation(torch.tensor(load)).numpy())


def test_expert_load_counts_per_layer_by_hand():
    e_TLK = np.array([[[0, 1], [2, 3]], [[1, 0], [2, 1]], [[1, 3], [0, 2]]])  # T=3, L=2, K=2, E=4
    load = m.expert_load(e_TLK, 4)
    # layer 0: expert 0 in tokens 0,1; expert 1 in 0,1,2; expert 3 in 2. layer 1: 2 in all three; 3, 1, 0 once
    np.testing.assert_array_equal(load, [[2, 3, 0, 1], [1, 1, 3, 1]])
    assert load.dtype == np.int64
    per_layer = [routing_stats.expert_counts(torch.from_numpy(e_TLK[:, l]), 4).numpy() for l in range(2)]
    np.testing.assert_array_equal(load, per_layer)


def test_load_entropy_by_hand_and_extremes():
    h0 = -(5 / 12 * math.log(5 / 12) + 2 * 3 / 12 * math.log(3 / 12) + 1 / 12 * math.log(1 / 12)) / math.log(4)
    h1 = -(1 / 3 * math.log(1 / 3) + 1 / 2 * math.log(1 / 2) + 1 / 6 * math.log(1 / 6)) / math.log(4)  # 0 log 0 = 0
    assert np.allclose(m.load_entropy(LOAD), [h0, h1])
    assert np.allclose(m.load_entropy(np.array([[3, 3, 3, 3], [12, 0, 0, 0]])), [1.0, 0.0])


def test_dead_experts():
    dead = m.dead_experts(LOAD)
    assert dead.tolist() == [[False] * 4, [False, False, False, True]]
    assert dead.sum(axis=1).tolist() == [0, 1]


# --- router scores and bias ------------------------------------------------------------------------------


def test_router_entropy_per_token_and_layer():
    scores = np.array(
        [
            [[0.5, 0.5, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]],  # ln 2 ; sigmoid-like scores renormalised: ln 4
            [[2.0, 0.0, 0.0, 0.0], [0.3, 0.3, 0.3, 0.3]],  # 0    ; ln 4
        ]
    )
    h = m.router_entropy(scores)
    assert np.allclose(h, [[math.log(2), math.log(4)], [0.0, math.log(4)]])
    assert np.allclose(m.router_entropy(scores, normalise=True), [[0.5, 1.0], [0.0, 1.0]])
    assert np.allclose(m.router_entropy(scores.astype(np.float32)), h, atol=1e-6)  # float32 path, no NaN at p=0
    assert np.allclose(m.router_entropy_per_layer(scores), [math.log(2) / 2, math.log(4)])
    with pytest.raises(ValueError, match="non-negative"):
        m.router_entropy(-scores)
    # one copy: the same numbers as moe_core.routing_stats, and 0 for an all-zero row (0 ln 0 = 0)
    np.testing.assert_allclose(h, routing_stats.router_entropy(torch.from_numpy(scores)).numpy())
    assert m.router_entropy(np.zeros((1, 1, 4))).tolist() == [[0.0]]


def test_bias_flip_rate_per_pair_and_per_token():
    flips = np.zeros((6, 2, 2), bool)
    flips[0, 0, 1] = flips[1, 0, 1] = flips[1, 0, 0] = True  # layer 0: 3 of 12 pairs, 2 of 6 tokens
    flips[5, 1, 1] = True  # layer 1: 1 of 12 pairs, 1 of 6 tokens
    df = make_routing(flips=flips)
    assert np.allclose(m.bias_flip_rate(df), [3 / 12, 1 / 12])
    assert np.allclose(m.bias_flip_rate(df, per="token"), [2 / 6, 1 / 6])


# --- co-activation and flow -------------------------------------------------------------------------------


def test_coactivation_all_pairs_with_lift():
    co = m.coactivation(np.asarray(EXPERTS), E)
    c0 = co.counts_LEE[0]
    # layer 0 sets: {0,1} x3, {0,2} x2, {2,3} x1
    assert c0[0, 1] == c0[1, 0] == 3 and c0[0, 2] == 2 and c0[2, 3] == 1 and c0[1, 2] == 0
    assert np.array_equal(np.diagonal(co.counts_LEE, axis1=1, axis2=2), LOAD)
    assert co.cond_LEE[0, 0, 1] == pytest.approx(3 / 5)  # P(1 | 0)
    assert co.cond_LEE[0, 1, 0] == pytest.approx(1.0)  # P(0 | 1): expert 1 always comes with 0
    assert co.cond_LEE[0, 2, 3] == pytest.approx(1 / 3)
    assert co.lift_LEE[0, 0, 1] == pytest.approx(3 * 6 / (5 * 3))
    assert co.lift_LEE[0, 2, 3] == pytest.approx(1 * 6 / (3 * 1))
    assert np.isnan(co.cond_LEE[1, 3]).all()  # dead expert: P(. | 3) undefined


def test_coactivation_counts_non_adjacent_ranks():
    e = np.array([[[0, 1, 2]]])  # K=3: (0,2) are not adjacent ranks but co-activate
    co = m.coactivation(e, 3)
    assert co.counts_LEE[0, 0, 2] == 1 and co.counts_LEE[0, 2, 0] == 1


def test_cross_layer_flow_top1_and_all():
    flow = m.cross_layer_flow(np.asarray(EXPERTS), E, mode="top1")
    assert flow.shape == (1, 4, 4)
    # top-1 at layer 0: 0 0 1 2 2 0 ; at layer 1: 1 1 2 0 0 1
    expected = np.zeros((4, 4), int)
    expected[0, 1], expected[1, 2], expected[2, 0] = 3, 1, 2
    assert np.array_equal(flow[0], expected)
    flow_all = m.cross_layer_flow(np.asarray(EXPERTS), E, mode="all")
    assert flow_all.sum() == 6 * 2 * 2
    assert flow_all[0, 0, 0] == 3  # tokens with 0 in both top-k sets: t0, t3, t5
    assert flow_all[0, 3, 0] == 1 and flow_all[0, 3, 1] == 1  # t4: {2,3} -> {0,1}
    assert m.cross_layer_flow(np.asarray(EXPERTS)[:, :1], E).shape == (0, 4, 4)
    with pytest.raises(ValueError):
        m.cross_layer_flow(np.asarray(EXPERTS), E, mode="adjacent")


# --- consecutive tokens -------------------------------------------------------------------------------------


def test_consecutive_same_expert_rate_and_pairs():
    out = m.consecutive_same_expert(np.asarray(EXPERTS), make_tokens(), n_shuffles=1)
    # pairs (t0,t1) (t1,t2) (t3,t4) (t4,t5); never (t2,t3) across documents
    assert out["n_pairs"].tolist() == [4, 4]
    assert np.allclose(out["rate"], [2 / 4, 2 / 4])
    any_ = m.consecutive_same_expert(np.asarray(EXPERTS), make_tokens(), mode="any", n_shuffles=1)
    assert np.allclose(any_["rate"], [1.0, 1.0])


def test_consecutive_uses_positions_not_row_order():
    # rows of doc d0 stored out of order: position says t0 -> t2 -> t1
    tokens = make_tokens(positions=(0, 2, 1, 0, 1, 2))
    out = m.consecutive_same_expert(np.asarray(EXPERTS), tokens, n_shuffles=0)
    # layer 0 top-1 in order: d0 = 0, 1, 0 (no match), d1 = 2, 2, 0 (one match)
    assert out["rate"][0] == pytest.approx(1 / 4)


def test_consecutive_shuffled_baseline():
    # layer 0 top-1: d0 = (0, 0, 1), d1 = (2, 2, 0): any within-doc order has on average 2/3 matches of 2 pairs
    out = m.consecutive_same_expert(np.asarray(EXPERTS), make_tokens(), n_shuffles=3000, seed=1)
    assert out["baseline"][0] == pytest.approx(1 / 3, abs=0.02)
    assert out["ratio"][0] == pytest.approx(0.5 / out["baseline"][0])
    # two-token docs: every shuffle gives the same pair, so baseline == rate exactly
    e = np.asarray(EXPERTS)[:4]
    two = m.consecutive_same_expert(e, make_tokens(("a", "a", "b", "b"), (0, 1, 0, 1)), n_shuffles=4)
    assert np.allclose(two["baseline"], two["rate"]) and np.allclose(two["baseline_std"], 0.0)
    # same seed, same answer
    again = m.consecutive_same_expert(np.asarray(EXPERTS), make_tokens(), n_shuffles=3, seed=5)
    same = m.consecutive_same_expert(EXPERTS, make_tokens(), n_shuffles=3, seed=5)
    assert np.array_equal(again["baseline"], same["baseline"])


def test_consecutive_single_doc_k1():
    e = np.array([[[0]], [[0]], [[1]], [[1]]])  # K=1, one layer, one doc
    out = m.consecutive_same_expert(e, make_tokens(("x",) * 4, (0, 1, 2, 3)), mode="any", n_shuffles=0)
    assert out["rate"][0] == pytest.approx(2 / 3)  # (0,0) yes, (0,1) no, (1,1) yes


# --- saturation ---------------------------------------------------------------------------------------------


def test_router_saturation_by_hand():
    a = np.asarray(EXPERTS)
    b = a.copy()
    b[0, 0] = [1, 0]  # same set, different top-1
    b[1, 0] = [0, 3]  # same top-1, overlap 1 of 2
    b[2, 1] = [3, 0]  # nothing in common
    out = m.router_saturation(a, b)
    assert np.allclose(out["top1_agreement"], [5 / 6, 5 / 6])
    assert np.allclose(out["topk_overlap"], [(4 * 1 + 1 + 0.5) / 6, (5 * 1 + 0) / 6])
    assert np.allclose(out["topk_exact"], [5 / 6, 5 / 6])
    k1 = m.router_saturation(a[:, :, :1], b[:, :, :1])  # K=1: overlap == top-1 agreement
    assert np.allclose(k1["topk_overlap"], k1["top1_agreement"])
    with pytest.raises(ValueError, match="shape"):
        m.router_saturation(a, b[:5])


# --- capacity --------------------------------------------------------------------------------------------------


def test_capacity_drop_by_hand():
    res = capacity.capacity_drop(np.asarray(EXPERTS), E, capacity_factor=1.0)
    assert res.capacity.tolist() == [3]  # ceil(1 * 6 * 2 / 4)
    got = set(map(tuple, res.dropped[["token_row", "layer", "rank"]].to_numpy().tolist()))
    # layer 0: expert 0 gets t0 t1 t2 then t3 (4th) and t5 (5th) are dropped
    # layer 1: expert 1 gets t0 t1 t2, drops t3 t4 t5; expert 0 gets t0 t3 t4, drops t5
    assert got == {(3, 0, 1), (5, 0, 0), (3, 1, 1), (4, 1, 1), (5, 1, 0), (5, 1, 1)}
    assert np.allclose(res.drop_rate, [2 / 12, 4 / 12])
    assert res.dropped_TLK.sum() == 6
    assert not capacity.capacity_drop(np.asarray(EXPERTS), E, capacity_factor=10.0).dropped_TLK.any()


def test_capacity_drop_per_group():
    res = capacity.capacity_drop(np.asarray(EXPERTS)[:, :1], E, 1.0, groups=make_tokens()["doc_id"].to_numpy())
    assert res.capacity.tolist() == [2, 2]  # ceil(1 * 3 * 2 / 4) per doc
    got = set(map(tuple, res.dropped[["token_row", "layer", "rank"]].to_numpy().tolist()))
    assert got == {(2, 0, 1), (2, 0, 0), (5, 0, 1)}


def test_capacity_drop_matches_moe_core():
    torch = pytest.importorskip("torch")
    from moe_core.moe import capacity_keep_mask

    rng = np.random.default_rng(0)
    e = np.argsort(rng.random((50, 1, 8)) ** np.linspace(1, 3, 8), axis=2)[:, :, :2]  # skewed, distinct top-2
    res = capacity.capacity_drop(e, 8, 0.8)
    keep = capacity_keep_mask(torch.as_tensor(e[:, 0]), 8, int(res.capacity[0])).numpy()
    assert np.array_equal(~keep, res.dropped_TLK[:, 0]) and res.dropped_TLK.any()


def test_drop_rate_by_position():
    res = capacity.capacity_drop(np.asarray(EXPERTS), E, capacity_factor=1.0)
    out = capacity.drop_rate_by_position(res.dropped_TLK, make_tokens(), bucket_size=1)
    assert np.allclose(out[out.layer == 0]["drop_rate"], [1 / 4, 0, 1 / 4])
    assert np.allclose(out[out.layer == 1]["drop_rate"], [1 / 4, 1 / 4, 2 / 4])
    wide = capacity.drop_rate_by_position(res.dropped_TLK, make_tokens(), bucket_size=2)
    assert wide["position_start"].tolist() == [0, 2, 0, 2]
    assert np.allclose(wide["drop_rate"], [1 / 8, 1 / 4, 2 / 8, 2 / 4])


# --- summary ----------------------------------------------------------------------------------------------------


def test_summary_per_layer_table():
    flips = np.zeros((6, 2, 2), bool)
    flips[0, 1, 0] = True
    scores = np.ones((6, 2, E))
    out = m.summary(make_routing(flips=flips), E, tokens=make_tokens(), scores=scores)
    assert out["layer"].tolist() == [0, 1]
    assert np.allclose(out["max_vio"], [2 / 3, 1.0])
    assert np.allclose(out["cv"], [math.sqrt(2) / 3, math.sqrt(5) / 3])
    assert out["dead_experts"].tolist() == [0, 1]
    assert np.allclose(out["min_share"], [1 / 12, 0.0]) and np.allclose(out["max_share"], [5 / 12, 6 / 12])
    assert np.allclose(out["bias_flip_rate"], [0.0, 1 / 12])
    assert np.allclose(out["router_entropy"], math.log(4))
    assert np.allclose(out["consecutive_top1"], 0.5)
    assert "router_entropy" not in m.summary(make_routing(), E).columns
