"""The transformer: shapes, causality, tied head, parameter counts, the public API."""

import torch

import moe_core


def tiny_model(seed=0, **moe):
    torch.manual_seed(seed)
    cfg = moe_core.preset("tiny")
    for k, v in moe.items():
        setattr(cfg.moe, k, v)
    return moe_core.build_model(cfg).eval()


def test_forward_shapes_and_public_api():
    model = tiny_model()
    idx = torch.randint(0, 256, (3, 20))
    logits, aux = model(idx)
    assert logits.shape == (3, 20, 320)
    assert aux.shape == () and aux.item() == 0.0  # aux-loss-free only: no aux loss
    assert model.embed.weight is not None and len(model.moe_layers) == 2


def test_causal_future_tokens_do_not_change_the_past():
    model = tiny_model()
    a = torch.randint(0, 256, (1, 16))
    b = a.clone()
    b[0, 10:] = (b[0, 10:] + 7) % 256
    la, lb = model(a).logits, model(b).logits
    torch.testing.assert_close(la[0, :10], lb[0, :10])
    assert not torch.allclose(la[0, 10:], lb[0, 10:])


def test_grouped_and_loop_models_agree():
    idx = torch.randint(0, 256, (2, 12))
    fast = tiny_model(seed=1)
    ref = tiny_model(seed=1, dispatch="loop")
    ref.load_state_dict(fast.state_dict())
    torch.testing.assert_close(fast(idx).logits, ref(idx).logits, rtol=1e-5, atol=1e-5)


def test_aux_loss_reaches_the_output_and_backprops():
    model = tiny_model(seed=2).train()
    model.config.moe.balance.switch_alpha = 0.01
    idx = torch.randint(0, 256, (2, 12))
    out = model(idx)
    assert out.aux_loss.item() > 0
    out.aux_loss.backward()
    assert model.moe_layers[0].router.gate.weight.grad.abs().sum() > 0


def test_pop_loads_and_update_biases():
    model = tiny_model(seed=3).train()
    model(torch.randint(0, 256, (2, 12)))
    loads = model.pop_expert_loads()
    assert loads.shape == (2, 4) and loads.sum(1).tolist() == [2 * 12 * 2] * 2
    model.update_router_biases(loads)
    assert model.router_biases().abs().sum() > 0
    assert model.pop_expert_loads().sum() == 0


def test_parameter_counts():
    cfg = moe_core.preset("tiny")
    counts = moe_core.count_parameters(cfg)
    model = moe_core.build_model(cfg)
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    # tiny: 2 MoE layers x 4 experts x 3 matrices of 32x32; top-2 of 4 -> half inactive
    assert counts["routed_experts"] == 2 * 4 * 3 * 32 * 32
    assert counts["total"] - counts["active"] == counts["routed_experts"] // 2
