"""The HF hooks record exactly what each family's own router computes (through the shared pipeline).

Tiny random-weight models (hidden 32, 2 layers, 4-8 experts, vocab 300) are built from the config classes
by `tests.hf_fixtures.save_tiny_hf_model`, saved with safetensors into temp folders with a locally trained
byte-level BPE tokenizer, and loaded back through `load_hf_model`. No downloads.
"""

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers", reason="the HF adapter needs the optional extra: pip install .[hf]")

from analysis.hf import FAMILIES, load_hf_model  # noqa: E402
from analysis.recording import record_hf  # noqa: E402
from analysis.trace import load  # noqa: E402
from moe_core.moe import choose_experts  # noqa: E402
from tests.hf_fixtures import TINY_TEXTS, save_tiny_hf_model, tiny_hf_config  # noqa: E402

TEXTS = TINY_TEXTS
WINDOW = 12  # text tokens per forward: every document spans several windows, some batched together


def direct_windows(hf, text):
    """Independent reference: each window of `text` run alone (BOS + window tokens), router inputs caught by
    pre-hooks, then each family's router module called directly on them. Per layer one tuple
    (x_TD, logits_TE, weights_TK, idx_TK, routed_norm_T, shared_norm_T), windows concatenated, BOS rows dropped."""
    ids = hf.tokenizer(text, add_special_tokens=False)["input_ids"]
    seen = [[] for _ in hf.layers]
    handles = [
        layer.router.register_forward_pre_hook(lambda m, args, i=i: seen[i].append(args[0].reshape(-1, 32)))
        for i, layer in enumerate(hf.layers)
    ]
    try:
        with torch.no_grad():
            for w in range(0, len(ids), WINDOW):
                hf.model(torch.tensor([[0] + ids[w : w + WINDOW]]))
    finally:
        for h in handles:
            h.remove()
    out = []
    with torch.no_grad():
        for i, layer in enumerate(hf.layers):
            x_TD = torch.cat([x[1:] for x in seen[i]])  # drop the BOS row of every window
            logits, weights, idx = layer.router(x_TD)
            routed = layer.experts(x_TD, idx, weights).norm(dim=-1)
            shared = torch.zeros_like(routed)
            if layer.shared is not None:
                shared = layer.shared(x_TD).norm(dim=-1)
                if layer.shared_gate is not None:
                    shared = shared * torch.sigmoid(layer.shared_gate(x_TD)).reshape(-1)
            out.append((x_TD, logits.float(), weights.float(), idx, routed, shared))
    return out


@pytest.mark.parametrize("family", list(FAMILIES))
def test_records_what_the_router_computes(family, hf_folders):
    hf = load_hf_model(hf_folders[family], device="cpu")
    assert hf.model_type == family and hf.tokenizer.is_fast and not hf.model.training
    trace = record_hf(hf, TEXTS, labels=["prose", "code", "fr"], batch_size=2, window=WINDOW, max_hidden=10_000)
    cfg = tiny_hf_config(family)
    L = 1 if family == "deepseek_v2" else 2
    E, K = hf.n_experts, 2
    n = trace.n_tokens
    assert (trace.n_layers, trace.n_experts, trace.top_k) == (L, E, K)
    assert trace.meta["layer_blocks"] == ([1] if family == "deepseek_v2" else [0, 1])
    assert trace.meta["source"] == "hf" and trace.meta["model_type"] == family and trace.meta["model_id"] == family
    assert trace.scores.shape == (n, L, E) and trace.hidden.shape == (n, L, cfg.hidden_size)
    assert np.array_equal(trace.hidden_rows, np.arange(n))
    assert trace.tokens["label"].tolist()[0] == "prose" and trace.texts[str(1)] == TEXTS[1]
    experts, weights = trace.experts_array(), trace.routing["weight"].to_numpy().reshape(n, L, K)
    biased = trace.routing["biased_score"].to_numpy().reshape(n, L, K)
    assert (np.diff(biased, axis=-1) <= 0).all(), "rank 0 must be the expert with the highest (biased) score"

    row = 0
    for doc_id, text in enumerate(TEXTS):
        ref = direct_windows(hf, text)
        m = len(ref[0][0])
        assert (trace.tokens["doc_id"].to_numpy()[row : row + m] == str(doc_id)).all()
        for i, (x_TD, logits, w_TK, idx_TK, routed, shared) in enumerate(ref):
            rows = slice(row, row + m)
            # the same experts as the model's own router, each with its own gate weight
            got = {(t, int(e)): float(w) for t in range(m) for e, w in zip(experts[rows, i][t], weights[rows, i][t])}
            want = {(t, int(e)): float(w) for t in range(m) for e, w in zip(idx_TK[t], w_TK[t])}
            assert got.keys() == want.keys(), f"{family} layer {i}: chosen experts differ"
            np.testing.assert_allclose([got[k] for k in want], list(want.values()), rtol=1e-5, atol=1e-6)
            score_fn = torch.sigmoid if FAMILIES[family].score_fn == "sigmoid" else lambda z: z.softmax(-1)
            np.testing.assert_allclose(trace.scores[rows, i], score_fn(logits).numpy(), rtol=1e-4, atol=1e-6)
            np.testing.assert_allclose(trace.hidden[rows, i].astype(np.float32), x_TD.half().float(), atol=2e-3)
            tl = trace.token_layer[trace.token_layer["layer"] == i]["shared_share"].to_numpy()[rows]
            np.testing.assert_allclose(tl, (shared / (shared + routed)).numpy(), rtol=1e-4, atol=1e-6)
        row += m
    assert row == n
    has_shared = FAMILIES[family].shared_attr is not None
    share = trace.token_layer["shared_share"].to_numpy()
    assert ((share > 0) & (share < 1)).all() if has_shared else (share == 0).all()
    assert not trace.routing["bias_flip"].any()  # no bias in these checkpoints
    assert len(np.unique(experts)) == E  # sharpened random routers use every expert


def test_deepseek_v3_bias_steers_the_choice(tmp_path):
    bias = torch.tensor([0.0, 0.0, 0.0, 5.0, 0.0, 0.0, 0.0, 0.0])  # expert 3 wins every biased choice
    folder = save_tiny_hf_model(tmp_path / "v3", "deepseek_v3", bias=bias)
    hf = load_hf_model(folder, device="cpu", dtype="float32")
    trace = record_hf(hf, TEXTS, window=WINDOW, max_hidden=0)
    experts = trace.experts_array()
    flips = trace.routing["bias_flip"].to_numpy().reshape(experts.shape)
    assert (experts[:, :, 0] == 3).all()  # the bias is followed: expert 3 chosen, and ranked first, everywhere
    assert trace.hidden is None
    r = trace.routing
    np.testing.assert_allclose((r["biased_score"] - r["score"]).to_numpy(), bias.numpy()[r["expert"]], atol=1e-6)
    # a flip: chosen on score + bias, not among the unbiased group-limited top-2
    router = hf.layers[0].router
    unbiased = choose_experts(torch.from_numpy(trace.scores[:, 0]), 2, router.num_group, router.topk_group)
    expected = ~(experts[:, 0, :, None] == unbiased.numpy()[:, None, :]).any(-1)
    np.testing.assert_array_equal(flips[:, 0], expected)
    assert flips[:, :, 0].any() and not flips.all()
    # gate weights come from the unbiased sigmoid scores: renormalised over the chosen, times the scaling
    w = r["weight"].to_numpy().reshape(experts.shape)
    s = r["score"].to_numpy().reshape(experts.shape)
    np.testing.assert_allclose(w, 2.5 * s / s.sum(-1, keepdims=True), rtol=1e-5)


def test_trace_round_trip_and_prefix(hf_folders, tmp_path):
    hf = load_hf_model(hf_folders["qwen2_moe"], device="cpu")
    trace = record_hf(hf, TEXTS[:2], batch_size=4, window=20)
    assert trace.meta["block_size"] == 20 and trace.meta["dtype"] == "float32" and trace.meta["device"] == "cpu"
    assert trace.meta["prefix_tokens"] == [0] and trace.meta["family"] == "Qwen2-MoE"
    back = load(trace.save(tmp_path / "t.parquet"))
    assert back.content_hash() == trace.content_hash() and back.meta["source"] == "hf"
    # without the BOS prefix the first tokens route differently (each window starts the sequence itself)
    bare = record_hf(hf, TEXTS[:2], window=20, add_prefix=False, max_hidden=0)
    assert bare.n_tokens == trace.n_tokens and bare.meta["prefix_tokens"] == []
    assert not np.allclose(bare.scores, trace.scores)


def test_a_router_that_returns_something_else_is_refused(hf_folders):
    """A transformers version whose router returns another structure (e.g. (indices, weights, logits)) fails
    loudly instead of recording garbage."""
    hf = load_hf_model(hf_folders["granitemoe"], device="cpu")
    swap = hf.layers[0].router.register_forward_hook(lambda m, args, out: (out[2], out[1], out[0]))
    try:
        with pytest.raises(ValueError, match="does not return \\(logits, weights, indices\\)"):
            record_hf(hf, TEXTS[0], window=WINDOW)
    finally:
        swap.remove()
