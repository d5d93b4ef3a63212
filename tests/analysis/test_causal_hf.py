"""Causal analysis on Hugging Face models through hooks (analysis/causal/hf_interventions.py), on tiny random
models of several families: the routing rules reproduce each router, hooks never outlive their context, the
ablation modes agree with each other and with a hand-built re-route, the logit lens adds up, what-if forces,
and what a family cannot do is one clear ValueError."""

from __future__ import annotations

from contextlib import ExitStack

import numpy as np
import pytest
import torch

pytest.importorskip("transformers", reason="Hugging Face models need the optional extra: pip install .[hf]")

from analysis.causal.ablation import Ablation, ablation_result, sweep, sweep_ablations  # noqa: E402
from analysis.causal.hf_interventions import (  # noqa: E402
    HFCausalTarget,
    expert_outputs,
    final_norm,
    hf_ablation,
    hf_routing_override,
    unsupported,
)
from analysis.causal.logit_lens import lens_change  # noqa: E402
from analysis.hf import FAMILIES, HFMoEModel, find_moe_layers, load_hf_model  # noqa: E402
from analysis.recording.hf_hooks import router_tensors  # noqa: E402
from analysis.sources import HFSource  # noqa: E402
from moe_core.moe import RoutingOverride  # noqa: E402
from tests.hf_fixtures import TINY_TEXTS, save_tiny_hf_model, tiny_hf_config  # noqa: E402

DOCS = [(str(i), label, text) for i, (label, text) in enumerate(zip(["prose", "code", "prose"], TINY_TEXTS))]
LOADED = ("olmoe", "qwen2_moe", "deepseek_v3", "mixtral")


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, HFMoEModel]:
    root = tmp_path_factory.mktemp("hf")
    torch.manual_seed(0)
    bias = {"deepseek_v3": torch.randn(8) * 0.1}  # a correction bias that changes choices
    out = {}
    for family in LOADED:
        folder = save_tiny_hf_model(root / family, family, bias=bias.get(family))
        out[family] = load_hf_model(folder, device="cpu", dtype="float32")
    return out


def in_memory(family: str) -> HFMoEModel:
    """A tiny model of `family` without a folder (no tokenizer): for the routers alone."""
    import transformers

    torch.manual_seed(1)
    model = transformers.AutoModelForCausalLM.from_config(tiny_hf_config(family)).eval()
    spec = FAMILIES[family]
    layers = find_moe_layers(model, spec)
    with torch.no_grad():
        for layer in layers:
            layer.router.weight.normal_(0, 1.0)
            if spec.bias_attr:
                getattr(layer.router, spec.bias_attr).copy_(torch.randn(layer.router.num_experts) * 0.1)
    return HFMoEModel(model, None, family, spec, "memory", layers)


def router_io(hf: HFMoEModel, layer: int = 0, T: int = 64):
    router = hf.layers[layer].router
    x_TD = torch.randn(T, hf.model.config.hidden_size)
    with torch.no_grad():
        return router, x_TD, router(x_TD)


def by_expert(idx_TK: torch.Tensor, w_TK: torch.Tensor):
    """Experts and weights of each token sorted by expert id (routers differ in the order they return)."""
    order_TK = idx_TK.argsort(dim=-1)
    return idx_TK.gather(1, order_TK), w_TK.float().gather(1, order_TK)


@pytest.mark.parametrize("family", [f for f, s in FAMILIES.items() if s.routing_rule is not None])
def test_each_rule_reproduces_its_router(family):
    hf = in_memory(family)
    router, x_TD, (logits_TE, w_TK, idx_TK) = router_io(hf)
    w_new, idx_new = hf.spec.routing_rule(router, logits_TE, x_TD.dtype, RoutingOverride())
    assert idx_new.shape == idx_TK.shape and w_new.dtype == w_TK.dtype
    got, want = by_expert(idx_new, w_new), by_expert(idx_TK, w_TK)
    assert torch.equal(got[0], want[0])
    torch.testing.assert_close(got[1], want[1], rtol=0, atol=0)
    # and the rule changes something when an expert is removed (the comparison above can fail)
    removed = int(idx_TK[0, 0])
    _, idx_rm = hf.spec.routing_rule(router, logits_TE, x_TD.dtype, RoutingOverride(removed=(removed,)))
    assert not (idx_rm == removed).any()


def manual_reroute(hf: HFMoEModel, router, logits_TE: torch.Tensor, removed: int):
    """The router's choice without `removed`, written out by hand from the logits (independent of the rules)."""
    K = router.top_k
    if hf.spec.score_fn == "sigmoid":  # DeepSeek-V3: groups by their two best biased scores, then top-k
        scores = logits_TE.sigmoid()
        choice = scores + router.e_score_correction_bias
        choice[:, removed] = float("-inf")
        G = router.num_group
        groups = choice.view(len(choice), G, -1)
        best = groups.topk(2, dim=-1).values.sum(-1).topk(router.topk_group, dim=-1).indices
        mask = torch.ones(len(choice), G, dtype=torch.bool).scatter(1, best, False)
        idx = groups.masked_fill(mask[..., None], float("-inf")).view(len(choice), -1).topk(K, dim=-1).indices
        w = scores.gather(1, idx)
        w = w / (w.sum(-1, keepdim=True) + 1e-20) if router.norm_topk_prob else w
        return idx, w * router.routed_scaling_factor
    probs = logits_TE.float().softmax(-1)
    probs[:, removed] = 0.0  # never among the top-k (every other probability is > 0)
    w, idx = probs.topk(K, dim=-1)
    if getattr(router, "norm_topk_prob", True):  # Mixtral always renormalises
        w = w / w.sum(-1, keepdim=True)
    return idx, w


@pytest.mark.parametrize("family", LOADED)
def test_reroute_matches_a_hand_built_top_k_without_the_expert(models, family):
    hf = models[family]
    router, x_TD, (logits_TE, w_TK, idx_TK) = router_io(hf, layer=1)
    removed = int(idx_TK[:, 0].mode().values)  # an expert many tokens chose
    with hf_ablation(hf, Ablation(1, "reroute", removed)), torch.no_grad():
        _, w_new, idx_new = router(x_TD)
    want_idx, want_w = manual_reroute(hf, router, logits_TE, removed)
    got, want = by_expert(idx_new, w_new), by_expert(want_idx, want_w)
    assert torch.equal(got[0], want[0]) and not (idx_new == removed).any()
    torch.testing.assert_close(got[1], want[1], rtol=1e-6, atol=1e-7)
    assert not torch.equal(by_expert(idx_TK, w_TK)[0], got[0])  # something was re-routed


def logits_of(hf: HFMoEModel) -> torch.Tensor:
    ids = torch.as_tensor([hf.tokenizer(TINY_TEXTS[0])["input_ids"][:40]])
    with torch.no_grad():
        return hf.model(input_ids=ids, use_cache=False).logits


@pytest.mark.parametrize("family", LOADED)
def test_hooks_are_removed_afterwards(models, family):
    hf = models[family]
    before = logits_of(hf)
    for mode in hf.spec.causal_modes:
        ablation = Ablation(0, mode, None if mode in ("layer", "shared") else 1)
        with hf_ablation(hf, ablation):
            changed = logits_of(hf)
        assert not torch.equal(changed, before), mode  # the hook was active inside
        assert torch.equal(logits_of(hf), before), mode
    with pytest.raises(RuntimeError, match="boom"), hf_routing_override(hf, {1: RoutingOverride(forced=0)}):
        raise RuntimeError("boom")  # removed on an exception too
    assert torch.equal(logits_of(hf), before)
    assert all(not layer.router._forward_hooks and not layer.experts._forward_hooks for layer in hf.layers)


@pytest.mark.parametrize("family", LOADED)
def test_zeroing_every_routed_expert_is_the_layer_ablation(models, family):
    hf = models[family]
    with hf_ablation(hf, Ablation(1, "layer")):
        layer_logits = logits_of(hf)
    with ExitStack() as stack:
        for e in range(hf.n_experts):
            stack.enter_context(hf_ablation(hf, Ablation(1, "zero", e)))
        zero_logits = logits_of(hf)
    torch.testing.assert_close(zero_logits, layer_logits, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(layer_logits, logits_of(hf))


@pytest.mark.parametrize("family", LOADED)
def test_tables_are_those_of_our_model(models, family):
    target = HFCausalTarget(models[family], family)
    runner = target.runner(DOCS)
    assert runner.n == sum(len(target.tokenizer(t, add_special_tokens=False)["input_ids"]) for _, _, t in DOCS)
    res = ablation_result(runner, Ablation(0, "zero", 1), n_boot=20)
    assert res.per_token.columns.tolist() == ["doc_id", "label", "position", "token_text", "base_loss", "loss", "delta"]
    assert res.per_domain["label"].tolist() == ["code", "prose", "all"] and res.per_domain["delta"].notna().all()
    # the baseline is the un-hooked model's loss: the first window's second token from a plain forward
    with torch.no_grad():
        ids = [[*runner.forward.prefix.tolist(), *runner.ids[0][0, :2].tolist()]]
        logits = target.model(input_ids=torch.tensor(ids))
    nll = -logits.logits[0, -2].log_softmax(-1)[runner.ids[0][0, 1]]
    row = int(target.tokens(DOCS).batches[0][0, 1])
    np.testing.assert_allclose(runner.base[row], float(nll), rtol=1e-5)
    table = sweep(runner, sweep_ablations(1, 2, "zero", references=False), n_boot=10)
    assert set(table["mode"]) == {"zero"} and len(table) == 2 * 3


@pytest.mark.parametrize("family", LOADED)
def test_logit_lens_adds_up_and_is_norm_then_head(models, family):
    hf = models[family]
    target = HFCausalTarget(hf, family)
    data = target.tokens(DOCS[:1])
    seen = {}
    moe = hf.layers[1]
    hooks = [
        moe.router.register_forward_hook(lambda m, a, out: seen.update(x=a[0].reshape(-1, a[0].shape[-1]), out=out)),
        moe.experts.register_forward_hook(lambda m, a, out: seen.update(routed=out)),
        hf.model.base_model.norm.register_forward_pre_hook(lambda m, a: seen.update(final=a[0])),
    ]
    ids = torch.as_tensor([[*target.runner(DOCS[:1]).forward.prefix.tolist(), *data.tokens["token_id"][:30]]])
    try:
        with torch.no_grad():
            logits = hf.model(input_ids=ids, use_cache=False).logits[0]
    finally:
        for h in hooks:
            h.remove()
    parts = router_tensors(hf.spec, moe.router, seen["out"])
    with torch.no_grad():
        ys = expert_outputs(moe, seen["x"], parts["experts"], parts["weights"])
    torch.testing.assert_close(sum(ys), seen["routed"], rtol=1e-5, atol=1e-6)  # per-expert outputs sum up
    norm, eps, W_VD = final_norm(hf)
    final_TD = seen["final"][0]
    # the projection of the whole final residual is the model's own logits (centred)
    full = lens_change(final_TD, final_TD, norm.weight, eps, W_VD)
    torch.testing.assert_close(full, logits - logits.mean(-1, keepdim=True), rtol=1e-4, atol=1e-4)
    # and the lens table of one token is the manual projection of its rank-0 expert output
    P = ids.shape[1] - 30
    row = 5
    res = target.logit_lens(data, 1, rows=[row], top_n=3)
    mine = res.per_token[(res.per_token["rank"] == 0) & (res.per_token["direction"] == "promotes")]
    t = P + row
    y_D = ys[0][t]
    manual = W_VD @ (norm.weight * y_D * torch.rsqrt(final_TD[t].pow(2).mean() + eps))
    manual = manual - manual.mean()
    assert int(mine["expert"].iloc[0]) == int(parts["experts"][t, 0])
    np.testing.assert_allclose(mine["logit_change"], manual.topk(3).values.detach().numpy(), rtol=1e-4, atol=1e-6)
    assert mine["token_id"].tolist() == manual.topk(3).indices.tolist()
    assert set(res.per_expert["expert"]) <= set(range(hf.n_experts)) | {-1}


@pytest.mark.parametrize("family", LOADED)
def test_what_if_forcing_an_expert_puts_it_in_every_top_k(models, family):
    target = HFCausalTarget(models[family], family)
    data = target.tokens(DOCS[:2])
    table = target.what_if(data, {0: RoutingOverride(forced=3)})
    layer0 = table[table["layer"] == 0]
    assert all(after[0] == 3 for after in layer0["experts_after"])
    assert layer0["changed"].tolist() == [3 not in before for before in layer0["experts_before"]]
    assert layer0["changed"].any()
    np.testing.assert_allclose(layer0["loss_before"], target.runner(DOCS[:2]).base, rtol=1e-5)
    # top-k 1 at layer 1: one expert per token, its weight the rule's
    one = target.what_if(data, {1: RoutingOverride(top_k=1)})
    assert {len(e) for e in one.loc[one["layer"] == 1, "experts_after"]} == {1}


@pytest.mark.parametrize("family,mode", [("olmoe", "shared"), ("mixtral", "shared")])
def test_a_mode_the_family_lacks_is_one_line(models, family, mode):
    hf = models[family]
    with pytest.raises(ValueError, match=f"{hf.spec.name} supports the ablation modes reroute, zero, layer, not"):
        with hf_ablation(hf, Ablation(0, mode)):
            pass


def test_phi_moe_routes_by_a_rule_we_do_not_reproduce():
    hf = in_memory("phimoe")
    assert hf.spec.causal_modes == ("zero", "layer")
    with pytest.raises(ValueError, match="Phi-MoE supports the ablation modes zero, layer, not 'reroute'"):
        with hf_ablation(hf, Ablation(0, "reroute", 1)):
            pass
    with pytest.raises(ValueError, match="Phi-MoE cannot re-route"):
        with hf_routing_override(hf, {0: RoutingOverride(forced=1)}):
            pass
    with pytest.raises(ValueError, match="Phi-MoE has no expert logit lens"):
        final_norm(hf)
    note = unsupported(hf.spec)
    assert "re-routing ablation and what-if routing" in note and "logit lens" in note and "\n" not in note
    with hf_ablation(hf, Ablation(0, "zero", 1)):  # what every family can do
        pass
    assert unsupported(FAMILIES["deepseek_v3"]) == ""


def test_a_hugging_face_source_gives_its_target(models, tmp_path):
    source = HFSource(save_tiny_hf_model(tmp_path / "olmoe", "olmoe"), device="cpu", dtype="float32")
    causal = source.capabilities.causal
    assert causal and "no shared-expert ablation" in causal.reason
    target = source.causal_model()
    assert isinstance(target, HFCausalTarget) and target.model is source.hf.model
    assert (target.n_layers, target.n_experts, target.top_k, target.step) == (2, 8, 2, None)
    with pytest.raises(ValueError, match="no checkpoints"):
        source.causal_model(3)
