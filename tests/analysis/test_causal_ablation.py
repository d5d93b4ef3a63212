"""Expert ablation on a tiny model, each mode against a hand-built model that does the same thing by its
weights; padding is exact; the Δ loss tables by hand."""

import copy

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import moe_core
from analysis.causal.ablation import (
    Ablation,
    AblationRunner,
    EvalTokens,
    ablation_result,
    doc_deltas,
    domain_deltas,
    intervention,
    padded_batches,
    sweep,
    sweep_ablations,
)
from analysis.recording.pipeline import window_batches

LENGTHS = [40, 7, 33, 1, 20]  # token counts of five documents (windows of 32: some padded, one unscored)
LABELS = ["code", "prose", "code", "prose", "prose"]


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return moe_core.build_model(moe_core.preset("tiny")).eval()


def eval_tokens(pad=True, batch_size=3):
    rng = np.random.default_rng(0)
    doc_id = np.repeat([f"d{i}" for i in range(len(LENGTHS))], LENGTHS)
    tokens = pd.DataFrame(
        {
            "doc_id": doc_id,
            "position": np.concatenate([np.arange(n) for n in LENGTHS]),
            "token_id": rng.integers(0, 320, sum(LENGTHS)),
            "label": np.repeat(LABELS, LENGTHS),
        }
    )
    batches = (padded_batches if pad else window_batches)(LENGTHS, 32, batch_size)
    return EvalTokens(tokens, batches)


def manual_losses(model, data: EvalTokens) -> np.ndarray:
    """Loss of every token, one window at a time through the plain forward."""
    out = np.full(len(data.tokens), np.nan)
    ids = torch.as_tensor(data.tokens["token_id"].to_numpy(copy=True))
    for rows in window_batches(LENGTHS, 32, 1):
        rows = rows[0]
        with torch.no_grad():
            logits = model(ids[rows][None]).logits[0]
        if len(rows) > 1:
            out[rows[1:]] = F.cross_entropy(logits[:-1], ids[rows][1:], reduction="none").double().numpy()
    return out


def test_baseline_matches_plain_forward_and_padding_is_exact():
    model, data = tiny_model(), eval_tokens()
    assert any((b < 0).any() for b in data.batches)  # the test really pads
    padded = AblationRunner(model, data).base
    unpadded = AblationRunner(model, eval_tokens(pad=False)).base
    manual = manual_losses(model, data)
    np.testing.assert_array_equal(np.isnan(padded), np.isnan(manual))
    assert np.isnan(padded).sum() == 7  # the first token of each window (40 = 32 + 8, 7, 33 = 32 + 1, 1, 20)
    np.testing.assert_allclose(padded, manual, rtol=1e-4, atol=1e-5, equal_nan=True)
    np.testing.assert_allclose(unpadded, manual, rtol=1e-4, atol=1e-5, equal_nan=True)


def hand_built(model, layer, edit):
    ref = copy.deepcopy(model)
    with torch.no_grad():
        edit(ref.moe_layers[layer])
    return ref


@pytest.mark.parametrize(
    "ablation,edit",
    [
        # removal = a bias so low the router never picks it; gate weights renormalise over the others
        (Ablation(1, "reroute", 2), lambda moe: moe.router.expert_bias.__setitem__(2, -1e4)),
        # zero its output = zero its down-projection: same choice, the other expert keeps its weight
        (Ablation(0, "zero", 1), lambda moe: moe.experts.w_down[1].zero_()),
        # every routed expert zeroed = the shared expert's output only
        (Ablation(0, "layer"), lambda moe: moe.experts.w_down.zero_()),
        (Ablation(1, "shared"), lambda moe: moe.shared.w_down.weight.zero_()),
    ],
)
def test_each_mode_matches_a_hand_built_model(ablation, edit):
    model, data = tiny_model(1), eval_tokens()
    runner = AblationRunner(model, data)
    got = runner.losses(ablation)
    expected = manual_losses(hand_built(model, ablation.layer, edit), data)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5, equal_nan=True)
    assert np.nanmax(np.abs(got - runner.base)) > 1e-4  # the ablation changed something
    assert all(layer.router.override is None for layer in model.moe_layers)  # restored


def test_ablating_an_expert_never_chosen_changes_nothing():
    model, data = tiny_model(2), eval_tokens()
    with torch.no_grad():
        model.moe_layers[0].router.expert_bias[3] = -1e4  # nobody chooses expert 3 at layer 0
    runner = AblationRunner(model, data)
    for mode in ("reroute", "zero"):
        res = ablation_result(runner, Ablation(0, mode, 3), n_boot=50)
        assert (res.per_token["delta"] == 0).all()
        assert (res.per_domain[["delta", "lo", "hi"]].to_numpy() == 0).all()


def test_intervention_is_restored_after_an_error_and_bad_ablations_are_clear():
    model = tiny_model()
    with pytest.raises(RuntimeError), intervention(model, Ablation(0, "zero", 1)):
        assert model.moe_layers[0].router.override is not None
        raise RuntimeError
    assert model.moe_layers[0].router.override is None
    with pytest.raises(ValueError, match="expert must be in 0..3"), intervention(model, Ablation(0, "zero", 4)):
        pass
    with pytest.raises(ValueError, match="layer must be in 0..1"), intervention(model, Ablation(2, "layer")):
        pass
    with pytest.raises(ValueError, match="needs expert"):
        Ablation(0, "reroute")
    with pytest.raises(ValueError, match="mode must be one of"):
        Ablation(0, "delete", 1)


def test_doc_and_domain_deltas_by_hand():
    per_token = pd.DataFrame(
        {"doc_id": ["a", "a", "b", "c", "c", "c"], "label": ["x", "x", "x", "y", "y", "y"],
         "delta": [0.1, 0.3, 0.5, 1.0, 2.0, 3.0]}
    )  # fmt: skip
    docs = doc_deltas(per_token)
    assert docs["n_tokens"].tolist() == [2, 1, 3]
    np.testing.assert_allclose(docs["delta"], [0.2, 0.5, 2.0])
    dom = domain_deltas(docs, n_boot=200).set_index("label")
    np.testing.assert_allclose(dom.loc["x", "delta"], 0.9 / 3)  # tokens weigh equally: (0.1+0.3+0.5)/3
    np.testing.assert_allclose(dom.loc["all", "delta"], 6.9 / 6)
    assert dom.loc["y", "lo"] == dom.loc["y", "hi"] == dom.loc["y", "delta"]  # one document: no spread
    # resampling docs a, b: the mean is 0.2 (aa), 0.3 (ab/ba) or 0.5 (bb)
    assert 0.2 - 1e-12 <= dom.loc["x", "lo"] <= 0.3 <= dom.loc["x", "hi"] <= 0.5 + 1e-12
    assert dom.loc["x", "n_docs"] == 2 and dom.loc["all", "n_tokens"] == 6


def test_sweep_covers_every_expert_and_the_references():
    model, data = tiny_model(), eval_tokens()
    abls = sweep_ablations(2, 4)
    assert len(abls) == 2 * 4 + 2 * 2
    table = sweep(AblationRunner(model, data), abls[:3] + abls[-2:], n_boot=20)
    assert set(table["label"]) == {"code", "prose", "all"}
    assert len(table) == 5 * 3
    assert table.loc[table["mode"] == "shared", "expert"].eq(-1).all()
