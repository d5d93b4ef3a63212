"""The expert logit lens against a projection written out by hand on a tiny model."""

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import moe_core
from analysis.causal.ablation import EvalTokens, padded_batches
from analysis.causal.logit_lens import SHARED, expert_logit_lens

LENGTHS = [12, 5]


def setup(seed=0):
    torch.manual_seed(seed)
    model = moe_core.build_model(moe_core.preset("tiny")).eval()
    rng = np.random.default_rng(seed)
    tokens = pd.DataFrame({"doc_id": np.repeat(["a", "b"], LENGTHS), "token_id": rng.integers(0, 320, sum(LENGTHS))})
    return model, EvalTokens(tokens, padded_batches(LENGTHS, 32, 4))


def hand_projection(model, ids, layer, pos):
    """Per chosen expert of token `pos` (and the shared expert): its centred Δlogits, by hand."""
    seen = {}
    moe = model.moe_layers[layer]
    h1 = moe.router.register_forward_hook(lambda m, a, o: seen.update(x=a[0], r=o))
    h2 = model.norm.register_forward_pre_hook(lambda m, a: seen.update(final=a[0]))
    with torch.no_grad():
        model(ids[None])
    h1.remove(), h2.remove()
    x, final = seen["x"][pos], seen["final"][0, pos]
    scale = torch.rsqrt(final.pow(2).mean() + model.config.norm_eps)
    ex, out = moe.experts, {}
    for k in range(2):
        e, w = int(seen["r"].topk_idx_TK[pos, k]), seen["r"].weights_TK[pos, k]
        y = w * ((F.silu(x @ ex.w_gate[e]) * (x @ ex.w_up[e])) @ ex.w_down[e])
        out[e] = (y * model.norm.weight * scale) @ model.embed.weight.T
    y = moe.shared.w_down(F.silu(moe.shared.w_gate(x)) * moe.shared.w_up(x))
    out[SHARED] = (y * model.norm.weight * scale) @ model.embed.weight.T
    return {e: v - v.mean() for e, v in out.items()}


@pytest.mark.parametrize("layer", [0, 1])
def test_per_token_lens_matches_a_hand_projection(layer):
    model, data = setup()
    row = 3 + LENGTHS[0]  # token 3 of document b (a padded window)
    res = expert_logit_lens(model, data, layer, token_text=lambda t: f"t{t}", rows=[row], top_n=4)
    ids = torch.as_tensor(data.tokens["token_id"].to_numpy(copy=True)[LENGTHS[0] :])
    expected = hand_projection(model, ids, layer, 3)
    got = res.per_token[res.per_token["token_row"] == row]
    assert set(got["expert"]) == set(expected)
    for e, vec in expected.items():
        mine = got[got["expert"] == e]
        up = mine[mine["direction"] == "promotes"].sort_values("n")
        down = mine[mine["direction"] == "suppresses"].sort_values("n")
        np.testing.assert_allclose(up["logit_change"], vec.topk(4).values.detach(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(down["logit_change"], (-vec).topk(4).values.neg().detach(), rtol=1e-4, atol=1e-5)
        assert up["token_id"].tolist() == vec.topk(4).indices.tolist()
        assert up["token_text"].tolist() == [f"t{t}" for t in vec.topk(4).indices.tolist()]


def test_per_expert_means_cover_every_chosen_expert():
    model, data = setup(1)
    res = expert_logit_lens(model, data, 0, token_text=str, top_n=3)
    assert res.per_token.empty
    table = res.per_expert
    shared = table[table["expert"] == SHARED]
    assert (shared["n_tokens"] == sum(LENGTHS)).all()  # the shared expert sees every token
    routed = table[table["expert"] != SHARED].drop_duplicates("expert")
    assert routed["n_tokens"].sum() == 2 * sum(LENGTHS)  # top-2: each token counted for both experts
    up = table[table["direction"] == "promotes"].groupby("expert")["logit_change"].apply(list)
    assert all(v == sorted(v, reverse=True) for v in up)


def test_bad_layer():
    model, data = setup()
    with pytest.raises(ValueError, match="layer must be in 0..1"):
        expert_logit_lens(model, data, 2, token_text=str)
