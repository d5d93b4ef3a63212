"""Configs: presets are valid and round-trip; invalid values raise errors naming the field."""

import pytest

from moe_core.config import PRESETS, BalanceConfig, ModelConfig, MoEConfig, preset


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_round_trip_through_dict(name):
    cfg = preset(name)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


def test_seed_preset_is_the_tutorials_layer():
    moe = preset("seed").moe
    assert (preset("seed").n_embd, moe.n_experts, moe.expert_hidden, moe.top_k) == (256, 4, 512, 2)
    assert (moe.shared_hidden, moe.score_func, moe.balance.bias_rate) == (768, "softmax", 1e-3)


def test_preset_returns_fresh_copies():
    a = preset("tiny")
    a.moe.top_k = 1
    assert preset("tiny").moe.top_k == 2


@pytest.mark.parametrize(
    "moe_kwargs,field",
    [
        ({"top_k": 5}, "top_k"),
        ({"score_func": "relu"}, "score_func"),
        ({"dispatch": "magic"}, "dispatch"),
        ({"expert_hidden": 30}, "expert_hidden"),  # not a multiple of 8 on the grouped path
        ({"n_groups": 3}, "n_groups"),
        ({"capacity_factor": -1.0}, "capacity_factor"),
        ({"n_experts": 0}, "n_experts"),
        ({"balance": BalanceConfig(switch_alpha=-0.1)}, "switch_alpha"),
    ],
)
def test_invalid_moe_config_names_the_field(moe_kwargs, field):
    base = preset("tiny").moe.__dict__ | moe_kwargs
    with pytest.raises(ValueError, match=field):
        ModelConfig(n_embd=32, n_head=2, moe=MoEConfig(**base))


def test_non_multiple_of_8_allowed_on_loop_path():
    ModelConfig(n_embd=36, n_head=2, moe=MoEConfig(n_experts=4, top_k=2, expert_hidden=30, dispatch="loop"))
    with pytest.raises(ValueError, match="n_embd"):
        ModelConfig(n_embd=36, n_head=2, moe=MoEConfig(n_experts=4, top_k=2, expert_hidden=32))


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"n_embd": 30, "n_head": 4}, "n_head"),
        ({"n_dense_layers": 9}, "n_dense_layers"),
        ({"vocab_size": 0}, "vocab_size"),
    ],
)
def test_invalid_model_config(kwargs, field):
    with pytest.raises(ValueError, match=field):
        ModelConfig(**kwargs)


def test_unknown_fields_and_presets_are_rejected():
    data = preset("tiny").to_dict()
    data["moe"]["top_kk"] = 2
    with pytest.raises(ValueError, match="top_kk"):
        ModelConfig.from_dict(data)
    with pytest.raises(ValueError, match="unknown preset"):
        preset("huge")


def test_strategy_names():
    assert BalanceConfig().strategies == ["aux_free"]
    assert BalanceConfig(bias_rate=0).strategies == ["none"]
    assert BalanceConfig(bias_rate=1e-3, seq_alpha=1e-4).strategies == ["aux_free", "seq"]
