"""What-if routing on a tiny model: forcing, top-k and bias change what they must and nothing else."""

import numpy as np
import pandas as pd
import pytest
import torch

import moe_core
from analysis.causal.ablation import AblationRunner, EvalTokens, padded_batches
from analysis.causal.what_if import parse_bias, what_if, what_if_summary
from moe_core.moe import RoutingOverride

LENGTHS = [20, 9]


def setup(seed=0):
    torch.manual_seed(seed)
    model = moe_core.build_model(moe_core.preset("tiny")).eval()
    rng = np.random.default_rng(seed)
    tokens = pd.DataFrame(
        {"doc_id": np.repeat(["a", "b"], LENGTHS), "position": np.concatenate([np.arange(n) for n in LENGTHS]),
         "token_id": rng.integers(0, 320, sum(LENGTHS)), "token_text": "x"}
    )  # fmt: skip
    return model, EvalTokens(tokens, padded_batches(LENGTHS, 32, 2))


def test_no_override_changes_nothing_and_losses_match_the_ablation_baseline():
    model, data = setup()
    table = what_if(model, data, {})
    assert len(table) == sum(LENGTHS) * 2 and not table["changed"].any()
    assert (table["experts_before"] == table["experts_after"]).all()
    np.testing.assert_allclose(table.loc[table["layer"] == 0, "loss_before"], AblationRunner(model, data).base,
                               rtol=1e-5, equal_nan=True)  # fmt: skip
    assert (table["delta_loss"].dropna() == 0).all()


def test_forcing_an_expert_and_top_k():
    model, data = setup(1)
    table = what_if(model, data, {0: RoutingOverride(forced=3), 1: RoutingOverride(top_k=1)})
    l0, l1 = table[table["layer"] == 0], table[table["layer"] == 1]
    assert all(e[0] == 3 for e in l0["experts_after"])
    # changed exactly where expert 3 was not already chosen
    assert (l0["changed"] == [3 not in e for e in l0["experts_before"]]).all()
    np.testing.assert_allclose([sum(w) for w in l0["weights_after"]], 1.0, rtol=1e-5)  # renormalised
    assert all(len(e) == 1 for e in l1["experts_after"]) and all(
        w == (pytest.approx(1.0),) for w in l1["weights_after"]
    )
    assert model.moe_layers[0].router.override is None  # restored
    summary = what_if_summary(table).set_index("layer")
    assert summary.loc[0, "n_changed"] == (~l0["experts_before"].map(lambda e: 3 in e)).sum()
    assert summary.loc[1, "share_changed"] == l1["changed"].mean()
    assert summary.loc[0, "n_scored"] == sum(LENGTHS) - 2  # one unscored first token per window


def test_a_large_bias_behaves_like_forcing_but_keeps_score_weights():
    model, data = setup(2)
    bias = parse_bias("E2:+100", 4)
    forced = what_if(model, data, {1: RoutingOverride(forced=2)})
    biased = what_if(model, data, {1: RoutingOverride(bias=bias)})
    pd.testing.assert_series_equal(forced["experts_after"], biased["experts_after"])
    np.testing.assert_allclose(forced["loss_after"], biased["loss_after"], rtol=1e-5, equal_nan=True)


def test_parse_bias():
    assert parse_bias("3:+0.1, 1:-0.2; 3:0.1", 4) == (0.0, -0.2, 0.0, 0.2)
    assert parse_bias("  ", 4) is None
    with pytest.raises(ValueError, match="'9:1': the expert must be in 0..3"):
        parse_bias("9:1", 4)
    with pytest.raises(ValueError, match="'x': write EXPERT:VALUE"):
        parse_bias("x", 4)
    with pytest.raises(ValueError, match="finite"):
        parse_bias("1:nan", 4)


def test_bad_override_is_a_clear_error():
    model, data = setup()
    with pytest.raises(ValueError, match="top-k must be in 1..4"):
        what_if(model, data, {0: RoutingOverride(top_k=5)})
    with pytest.raises(ValueError, match="layer must be in 0..1"):
        what_if(model, data, {2: RoutingOverride(top_k=1)})
    assert all(layer.router.override is None for layer in model.moe_layers)
