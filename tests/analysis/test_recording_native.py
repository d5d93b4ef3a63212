"""The native recorder captures exactly what the router computes, removes its hooks, windows long documents."""

import numpy as np
import pytest
import torch

import moe_core
from analysis.recording import RoutingRecorder, record
from moe_core.tokenizer import encode_with_offsets, train_tokenizer

TEXTS = [
    "The quick brown fox jumps over the lazy dog. " * 4,
    "def add(a, b):\n    return a + b\n" * 4,
    "Les experts du routeur choisissent les jetons. " * 4,
]


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(TEXTS, 300)


@pytest.fixture()
def model():
    torch.manual_seed(0)
    cfg = moe_core.preset("tiny")
    cfg.vocab_size = 300  # the tokenizer needs >= 257 ids
    m = moe_core.build_model(cfg)
    with torch.no_grad():  # a non-zero balancing bias, so that biased and unbiased scores differ
        for layer in m.moe_layers:
            layer.router.expert_bias.copy_(torch.tensor([0.0, 0.004, -0.003, 0.001]))
    return m


def capture_router_inputs(model):
    """Plain forward pre-hooks that keep each MoE router's float32 input, per forward."""
    seen = [[] for _ in model.moe_layers]
    handles = [
        layer.router.register_forward_pre_hook(lambda mod, args, i=i: seen[i].append(args[0].clone()))
        for i, layer in enumerate(model.moe_layers)
    ]
    return seen, handles


def test_matches_direct_router_calls(model, tok):
    text = TEXTS[0][:60]
    seen, handles = capture_router_inputs(model)
    trace = record(model, tok, text, max_hidden=1000)
    for h in handles:
        h.remove()
    n = trace.n_tokens
    assert n == len(encode_with_offsets(tok, text)[0]) and n <= model.config.block_size
    for i, layer in enumerate(model.moe_layers):
        x_TD = seen[i][0]
        with torch.no_grad():
            r = layer.router(x_TD)
            routed = layer.experts(x_TD, r.topk_idx_TK, r.weights_TK).norm(dim=-1)
            shared = layer.shared(x_TD).norm(dim=-1)
        np.testing.assert_array_equal(trace.experts_array()[:, i], r.topk_idx_TK.numpy())
        got = trace.routing[trace.routing["layer"] == i]
        np.testing.assert_allclose(got["weight"].to_numpy().reshape(n, -1), r.weights_TK.numpy(), rtol=1e-6)
        np.testing.assert_allclose(got["score"].to_numpy().reshape(n, -1), r.scores_TE.gather(1, r.topk_idx_TK))
        np.testing.assert_allclose(got["biased_score"].to_numpy().reshape(n, -1), r.biased_TE.gather(1, r.topk_idx_TK))
        np.testing.assert_allclose(trace.scores[:, i], r.scores_TE.numpy(), rtol=1e-6)
        tl = trace.token_layer[trace.token_layer["layer"] == i]
        np.testing.assert_allclose(tl["shared_share"], (shared / (shared + routed)).numpy(), rtol=1e-5)
        p = r.scores_TE / r.scores_TE.sum(-1, keepdim=True)
        np.testing.assert_allclose(tl["entropy"], -(p * p.log()).sum(-1).numpy(), rtol=1e-5)
        # all tokens fit under the cap, so every router input is kept (as float16)
        np.testing.assert_array_equal(trace.hidden[:, i], x_TD.half().numpy())
    assert trace.meta["layer_blocks"] == [0, 1] and trace.meta["config"] == model.config.to_dict()
    assert trace.texts == {"0": text}


def test_bias_flip_on_a_hand_built_bias(model, tok):
    big = torch.tensor([0.0, 0.0, 0.0, 5.0])  # expert 3 always wins the biased choice in layer 0
    with torch.no_grad():
        model.moe_layers[0].router.expert_bias.copy_(big)
        model.moe_layers[1].router.expert_bias.zero_()  # no bias: no flips possible
    trace = record(model, tok, TEXTS[1], max_hidden=0)
    experts = trace.experts_array()
    flips = trace.routing["bias_flip"].to_numpy().reshape(experts.shape)
    assert (experts[:, 0, 0] == 3).all()
    unbiased_top2 = np.argsort(-trace.scores[:, 0], axis=1)[:, :2]
    expected = ~(experts[:, 0, :, None] == unbiased_top2[:, None, :]).any(-1)
    np.testing.assert_array_equal(flips[:, 0], expected)
    assert flips[:, 0, 0].any() and not flips[:, 1].any()
    # the other chosen expert is the unbiased best whenever expert 3 flipped in
    layer0 = trace.routing[trace.routing["layer"] == 0]
    np.testing.assert_allclose(
        (layer0["biased_score"] - layer0["score"]).to_numpy(), big.numpy()[layer0["expert"].to_numpy()], atol=1e-6
    )


def test_hooks_removed_after_context_and_on_exception(model):
    def n_hooks():
        return sum(
            len(m._forward_hooks) for layer in model.moe_layers for m in (layer.router, layer.experts, layer.shared)
        )

    with RoutingRecorder(model) as rec:
        assert n_hooks() == 3 * len(model.moe_layers)
        model(torch.zeros(1, 4, dtype=torch.long))
    assert n_hooks() == 0 and rec.result()["experts"].shape == (4, 2, 2)
    with pytest.raises(RuntimeError, match="boom"), RoutingRecorder(model):
        raise RuntimeError("boom")
    assert n_hooks() == 0
    with pytest.raises(ValueError, match="sequence length"), RoutingRecorder(model):
        model(torch.zeros(1, 999, dtype=torch.long))
    assert n_hooks() == 0


def test_windowing_keeps_every_token_once_with_offsets(model, tok):
    text = " ".join(TEXTS) * 2
    ids, spans = encode_with_offsets(tok, text)
    S = model.config.block_size
    assert len(ids) > 3 * S  # several windows, the last one shorter
    trace = record(model, tok, [TEXTS[0][:40], text], labels=["a", "b"], batch_size=2)
    long = trace.tokens[trace.tokens["doc_id"] == "1"]
    assert long["position"].tolist() == list(range(len(ids)))
    assert long["token_id"].tolist() == ids
    assert list(zip(long["char_start"], long["char_end"])) == spans
    assert "".join(text[s:e] for s, e in spans) == text
    assert (long["token_text"] == [text[s:e] for s, e in spans]).all() and set(long["label"]) == {"b"}
    # the second window is routed as if it were run on its own
    with torch.inference_mode(), RoutingRecorder(model) as rec:
        model(torch.tensor([ids[S : 2 * S]]))
    rows = long.index[S : 2 * S]
    np.testing.assert_array_equal(trace.experts_array()[rows], rec.result()["experts"])


def test_batching_does_not_change_routing(model, tok):
    one_by_one = [record(model, tok, t, max_hidden=0, batch_size=1) for t in TEXTS]
    together = record(model, tok, TEXTS, max_hidden=0, batch_size=8)
    np.testing.assert_array_equal(together.experts_array(), np.concatenate([t.experts_array() for t in one_by_one]))
    np.testing.assert_allclose(
        together.routing["weight"], np.concatenate([t.routing["weight"] for t in one_by_one]), rtol=1e-5, atol=1e-6
    )
    assert together.tokens["doc_id"].unique().tolist() == ["0", "1", "2"]


def test_hidden_cap_is_respected_and_deterministic(model, tok):
    a = record(model, tok, TEXTS, max_hidden=7)
    b = record(model, tok, TEXTS, max_hidden=7)
    assert a.hidden.shape == (7, 2, model.config.n_embd) and a.hidden.dtype == np.float16
    assert np.all(np.diff(a.hidden_rows) > 0) and a.hidden_rows.max() < a.n_tokens
    np.testing.assert_array_equal(a.hidden_rows, b.hidden_rows)
    np.testing.assert_array_equal(a.hidden, b.hidden)
    assert record(model, tok, TEXTS[0], max_hidden=0).hidden is None
    # the context manager alone: at most max_hidden inputs over several forwards
    with torch.inference_mode(), RoutingRecorder(model, keep_hidden=True, max_hidden=3) as rec:
        model(torch.zeros(1, 2, dtype=torch.long))
        model(torch.zeros(1, 2, dtype=torch.long))
    assert rec.result()["hidden_rows"].tolist() == [0, 1, 2]


def test_inputs_and_side_effects(model, tok):
    with pytest.raises(ValueError, match="empty"):
        record(model, tok, "")
    with pytest.raises(ValueError, match="no text"):
        record(model, tok, [])
    with pytest.raises(ValueError, match="2 labels for 1"):
        record(model, tok, ["x"], labels=["a", "b"])
    calls = []
    model.train()
    trace = record(model, tok, TEXTS, batch_size=1, progress=lambda done, total: calls.append((done, total)))
    assert model.training  # restored
    assert calls[-1] == (trace.n_tokens, trace.n_tokens) and len(calls) > 1
    assert [b for b, _ in calls] == sorted(b for b, _ in calls)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(model, tok):
    cpu = record(model, tok, TEXTS, max_hidden=0)
    gpu = record(model.to("cuda"), tok, TEXTS, max_hidden=0)
    assert (cpu.experts_array() == gpu.experts_array()).mean() > 0.99


def test_docs_with_ids_and_a_mismatched_tokenizer(model, tok):
    from moe_core.corpus import Doc

    trace = record(model, tok, [Doc("one two", "a", "x", 7), Doc("three", "b", "y", -1)], max_hidden=0)
    assert trace.tokens["doc_id"].unique().tolist() == ["7", "1"]  # -1 = unassigned: its position
    assert trace.texts == {"7": "one two", "1": "three"}
    with pytest.raises(ValueError, match="duplicate"):
        record(model, tok, [Doc("a", "x", "s", 3), Doc("b", "x", "s", 3)])
    torch.manual_seed(0)
    cfg = moe_core.preset("tiny")
    cfg.vocab_size = 200  # byte and merge tokens 200+ of this tokenizer do not fit
    small = moe_core.build_model(cfg)
    with pytest.raises(ValueError, match="tokenizer does not match the model"):
        record(small, tok, "".join(TEXTS))
