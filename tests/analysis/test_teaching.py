"""The toy router of the Learn pages, checked by hand and by brute force."""

import json
import math

import numpy as np
import pytest

from analysis import teaching as t

SIG1 = 1 / (1 + math.exp(-1))  # sigmoid(1) = 0.7311


# --- router and regions ----------------------------------------------------------------------------


@pytest.mark.parametrize("score_func", ["sigmoid", "softmax"])
def test_decision_regions_match_brute_force_argmax(score_func):
    rng = np.random.default_rng(3)
    W = rng.normal(size=(4, 2)) * 2
    bias = rng.normal(size=4) * 0.2
    reg = t.decision_regions(W, bias, score_func, lim=2.0, n=15)
    for i, y in enumerate(reg.ys):
        for j, x in enumerate(reg.xs):
            logits = [W[e, 0] * x + W[e, 1] * y for e in range(4)]
            if score_func == "sigmoid":
                scores = [1 / (1 + math.exp(-v)) for v in logits]
            else:
                z = [math.exp(v) for v in logits]
                scores = [v / sum(z) for v in z]
            biased = [s + b for s, b in zip(scores, bias)]
            order = sorted(range(4), key=lambda e: -biased[e])
            assert reg.top1[i, j] == order[0]
            assert reg.pairs[reg.pair[i, j]] == tuple(sorted(order[:2]))
    assert len(set(reg.top1.ravel().tolist())) > 1  # the grid really is partitioned


def test_regions_of_default_router_are_the_four_quadrant_directions():
    reg = t.decision_regions(t.default_weights(), np.zeros(4), lim=2.0, n=5)
    # at (2, 0) expert 0 (pointing at +x) wins, at (0, 2) expert 1, at (-2, 0) expert 2, at (0, -2) expert 3
    assert reg.top1[2, 4] == 0 and reg.top1[4, 2] == 1 and reg.top1[2, 0] == 2 and reg.top1[0, 2] == 3
    assert reg.pairs == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]


def test_gate_steps_by_hand_sigmoid_with_bias_flip():
    W = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    experts = np.array([np.eye(2), 2 * np.eye(2), [[0.0, -1.0], [1.0, 0.0]]])
    s = t.explain_token([1.0, 0.0], W, [0.0, 0.0, 0.3], top_k=2, score_func="sigmoid", experts_E22=experts)
    np.testing.assert_allclose(s.logits, [1, 0, -1])
    np.testing.assert_allclose(s.scores, [SIG1, 0.5, 1 - SIG1])
    np.testing.assert_allclose(s.biased, [SIG1, 0.5, 1.3 - SIG1])  # 0.5689 beats 0.5: the bias picks expert 2
    assert s.chosen.tolist() == [0, 2] and s.bias_flip
    # gates from the unbiased scores 0.7311 and 0.2689, which already sum to 1
    np.testing.assert_allclose(s.gates, [SIG1, 1 - SIG1])
    np.testing.assert_allclose(s.expert_out, [[1, 0], [0, 1]])
    np.testing.assert_allclose(s.routed, [SIG1, 1 - SIG1])
    np.testing.assert_allclose(s.shared, [0.5, 0])
    np.testing.assert_allclose(s.output, [SIG1 + 0.5, 1 - SIG1])


def test_gate_steps_by_hand_softmax_no_renormalisation_no_shared():
    W = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    s = t.explain_token([1.0, 0.0], W, np.zeros(3), top_k=2, score_func="softmax", shared_22=None)
    z = np.exp([1.0, 0.0, -1.0])
    np.testing.assert_allclose(s.scores, z / z.sum())  # 0.6652, 0.2447, 0.0900
    assert s.chosen.tolist() == [0, 1] and not s.bias_flip
    np.testing.assert_allclose(s.gates, [0.66524096, 0.24472847], rtol=1e-6)
    np.testing.assert_allclose(s.shared, [0, 0])
    np.testing.assert_allclose(s.output, s.routed)


def test_sigmoid_gates_renormalised():
    topk, gates, _ = t.route([[0.3, -0.2], [1.0, 1.0]], t.default_weights(), np.zeros(4), 2, "sigmoid")
    np.testing.assert_allclose(gates.sum(axis=1), [1.0, 1.0])
    assert topk.shape == (2, 2)


# --- balancing metrics -----------------------------------------------------------------------------


def test_load_maxvio_and_helpers_by_hand():
    assert t.expert_load(np.array([[0, 1], [0, 2]]), 4).tolist() == [2, 1, 1, 0]
    assert t.maxvio([3, 1]) == pytest.approx(0.5)  # mean 2, max 3
    assert t.maxvio([2, 2, 2]) == 0.0
    assert t.maxvio([0, 0, 0]) == 0.0  # nothing routed: 0, as moe_core.routing_stats.max_violation
    assert t.expert_load(np.zeros((0, 2), np.int64), 3).tolist() == [0.0, 0.0, 0.0]
    assert t.steps_to_balance([1, 1, 0.01, 0.01, 0.2], threshold=0.05, window=2) == 2
    assert t.steps_to_balance([1, 1], window=2) is None
    assert t.sign_flip_rate(np.array([[0.0], [1.0], [0.0], [1.0]])) == 1.0  # +, -, +
    assert t.sign_flip_rate(np.array([[0.0], [1.0], [2.0], [3.0]])) == 0.0


def test_bias_rule_one_step_by_hand():
    W = np.array([[1.0, 0.0], [-1.0, 0.0]])
    batches = np.array([[[1.0, 0.0], [2.0, 0.0], [-1.0, 0.0]]])  # loads (2, 1) with top-1
    run = t.simulate_bias_rule(batches, W, np.zeros(2), rate=0.1, top_k=1)
    assert run.loads.tolist() == [[2, 1]]
    np.testing.assert_allclose(run.biases[-1], [-0.1, 0.1])  # overloaded expert 0 goes down
    assert run.maxvio[0] == pytest.approx(1 / 3)


STEPS, BATCH = 600, 4096  # the Lesson 3 stream: skewed, tight cloud, top-2 of 4 experts, sigmoid


@pytest.fixture(scope="module")
def stream():
    return t.token_batches(seed=0, n_steps=STEPS, batch_size=BATCH)


def test_stream_is_skewed_and_seeded(stream):
    assert stream.shape == (STEPS, BATCH, 2)
    np.testing.assert_array_equal(stream[:2], t.token_batches(0, 2, BATCH))
    topk, _, _ = t.route(stream[0], t.default_weights(), np.zeros(4), 2)
    assert t.maxvio(t.expert_load(topk, 4)) > 0.9  # without balancing: experts 0 and 1 take everything


def test_bias_rule_rates_slow_good_oscillating(stream):
    """Measured (seeds 0-4, batch 4096): u=1e-3 balances at step 223-224 (window of 20 below 0.05);
    u=1e-2 never settles (tail MaxVio 0.11-0.16); u=1e-4 is still at MaxVio ~1 after 800 steps."""
    W, b0 = t.default_weights(), np.zeros(4)
    good = t.simulate_bias_rule(stream, W, b0, 1e-3)
    reached = t.steps_to_balance(good.maxvio, threshold=0.05, window=20)
    assert reached is not None and reached <= 300
    assert good.maxvio[-200:].mean() < 0.04

    fast = t.simulate_bias_rule(stream, W, b0, 1e-2)
    assert t.steps_to_balance(fast.maxvio, threshold=0.05, window=20) is None  # never settles
    assert fast.maxvio[-200:].mean() > 0.08  # oscillation floor: twice the good rate's tail
    assert t.sign_flip_rate(fast.biases[-200:]) > t.sign_flip_rate(good.biases[-200:])

    slow = t.simulate_bias_rule(stream[:300], W, b0, 1e-4)
    assert slow.maxvio[-20:].mean() > 0.5  # still far from balanced where u=1e-3 has arrived


# --- aux loss vs aux-loss-free ---------------------------------------------------------------------


def test_switch_loss_value_and_gradient():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 2))
    W = rng.normal(size=(4, 2))
    loss, grad = t.switch_loss_grad(x, W, top_k=2)
    # f is a count (no gradient): compare with finite differences of E * sum f_i P_i at fixed f
    p = t.scores_from_logits(x @ W.T, "softmax")
    f = t.expert_load(np.argsort(-p, axis=1, kind="stable")[:, :2], 4) / (64 * 2)

    def at_fixed_f(Wp):
        return 4 * (f * t.scores_from_logits(x @ Wp.T, "softmax").mean(axis=0)).sum()

    assert loss == pytest.approx(at_fixed_f(W))
    eps = 1e-6
    for e in range(4):
        for d in range(2):
            Wp = W.copy()
            Wp[e, d] += eps
            assert grad[e, d] == pytest.approx((at_fixed_f(Wp) - at_fixed_f(W)) / eps, abs=1e-5)
    # uniform probabilities give the minimum value 1
    loss_uniform, _ = t.switch_loss_grad(x, np.zeros((4, 2)), top_k=2)
    assert loss_uniform == pytest.approx(1.0)


def test_aux_loss_bends_the_router_the_bias_rule_does_not():
    """Measured (spread 0.6, 400 steps): bias rule MaxVio 0.026 with W untouched; Switch alpha=1
    MaxVio 0.16 with ||W - W0|| = 2.8; alpha=0.001 barely moves (MaxVio 0.6)."""
    batches = t.token_batches(0, 400, 2048, spread=0.6)
    W0 = t.default_weights()
    bias = t.train_bias(batches, W0, rate=1e-3)
    weak = t.train_switch(batches, W0, alpha=0.001)
    strong = t.train_switch(batches, W0, alpha=1.0)
    assert bias.maxvio < 0.05 and bias.weight_change == 0 and bias.score_change == 0
    assert bias.top1_changed > 0  # balancing does reroute some tokens
    assert weak.maxvio > 0.5 and weak.weight_change < 0.05
    assert strong.maxvio < weak.maxvio - 0.3
    assert strong.weight_change > 1.0 and strong.score_change > 0.05


# --- capacity ----------------------------------------------------------------------------------------


def test_capacity_drop_by_hand():
    topk = np.array([[0], [0], [0], [1]])  # T=4, K=1, E=2
    assert t.capacity(4, 1, 2, 1.0) == 2  # ceil(1 * 4 * 1 / 2)
    assert t.capacity_keep(topk, 2, 1.0).ravel().tolist() == [True, True, False, True]  # 3rd token dropped
    assert t.capacity_keep(topk, 2, 1.5).all()  # capacity 3
    topk2 = np.array([[0, 1], [1, 0], [0, 2]])  # T=3, K=2, E=3, C=1 -> capacity 2
    assert t.capacity_keep(topk2, 3, 1.0).tolist() == [[True, True], [True, True], [False, True]]


def test_capacity_matches_the_real_layer():
    torch = pytest.importorskip("torch")
    from moe_core.moe import capacity_keep_mask

    rng = np.random.default_rng(1)
    topk = np.stack([rng.permutation(4)[:2] for _ in range(40)])
    cap = t.capacity(40, 2, 4, 0.8)
    expected = capacity_keep_mask(torch.from_numpy(topk), 4, cap).numpy()
    np.testing.assert_array_equal(t.capacity_keep(topk, 4, 0.8), expected)


def test_last_history_row_skips_a_torn_line(tmp_path):
    assert t.last_history_row(tmp_path) is None
    (tmp_path / "history").mkdir()
    rows = [{"step": 1, "load": [[1, 2]]}, {"step": 2, "load": [[2, 1]]}]
    text = "\n".join(json.dumps(r) for r in rows) + '\n{"step": 3, "lo'
    (tmp_path / "history" / "train.jsonl").write_text(text)
    assert t.last_history_row(tmp_path)["step"] == 2
