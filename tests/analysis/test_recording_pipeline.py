"""The one recording pipeline: token table, windows, hidden-state sample, stream -> document order; both
recorders (native and Hugging Face) go through it."""

import numpy as np
import pytest
import torch

import moe_core
from analysis.recording import native, pipeline, window_batches
from analysis.recording.pipeline import hidden_sample, normalise_docs, record_with, token_table


def encode_chars(text):
    """One token per character: id = code point, span = the character."""
    return [ord(c) for c in text], [(i, i + 1) for i in range(len(text))], list(text)


class FakeHooks:
    """Hooks of a model with L = 1 layer, K = 1: 'expert' = token id and 'hidden' = token id, per stream row."""

    def __init__(self):
        self.entered = self.exited = False
        self.stream_ids: list[np.ndarray] = []
        self.hidden_ids: list[np.ndarray] = []

    def __enter__(self):
        self.entered = True
        return self

    def __exit__(self, *exc_info):
        self.exited = True
        return False

    def result(self):
        ids = np.concatenate(self.stream_ids)  # (n,) stream order
        n = len(ids)
        out = {
            "experts": ids[:, None, None],
            "weights": np.ones((n, 1, 1), np.float32),
            "scores_k": np.ones((n, 1, 1), np.float32),
            "biased_k": np.ones((n, 1, 1), np.float32),
            "flips": np.zeros((n, 1, 1), bool),
            "scores": None,
            "shared_share": np.zeros((n, 1), np.float32),
            "entropy": np.zeros((n, 1), np.float32),
            "hidden": None,
        }
        if sum(map(len, self.hidden_ids)):  # as the real hooks: None when nothing was kept
            out["hidden"] = np.concatenate(self.hidden_ids)[:, None, None].astype(np.float16)  # (M, 1, 1)
        return out


def run_fake(docs, window=3, batch_size=2, max_hidden=2000, **kw):
    hooks = FakeHooks()
    model = torch.nn.Linear(1, 1)
    model.train()
    shapes = []

    def forward(ids_BS, keep_hidden_BS):
        assert hooks.entered and not hooks.exited and not model.training and torch.is_inference_mode_enabled()
        shapes.append(ids_BS.shape)
        hooks.stream_ids.append(ids_BS.reshape(-1))
        hooks.hidden_ids.append(ids_BS.reshape(-1)[keep_hidden_BS.reshape(-1)])

    trace = record_with(
        hooks,
        encode_chars,
        forward,
        docs,
        model=model,
        vocab_size=1000,
        window=window,
        batch_size=batch_size,
        max_hidden=max_hidden,
        meta={"run": "fake", "n_experts": 1000},
        **kw,
    )
    assert hooks.exited and model.training  # hooks removed, training mode restored
    return trace, shapes


def test_fake_hooks_give_the_token_table_in_document_order():
    trace, shapes = run_fake(["abcde", "xy", "fghij"], labels=["p", "q", "p"])
    # windows of 3: "abc" and "fgh" batched together, then the 2-token windows "de", "xy", "ij" (batch size 2)
    assert shapes == [(2, 3), (2, 2), (1, 2)]
    tok = trace.tokens
    assert "".join(tok["token_text"]) == "abcdexyfghij"
    assert tok["doc_id"].tolist() == ["0"] * 5 + ["1"] * 2 + ["2"] * 5
    assert tok["position"].tolist() == [0, 1, 2, 3, 4, 0, 1, 0, 1, 2, 3, 4]
    assert tok["label"].tolist() == ["p"] * 5 + ["q"] * 2 + ["p"] * 5
    assert list(zip(tok["char_start"], tok["char_end"]))[5:7] == [(0, 1), (1, 2)]
    # the hooks saw the tokens in stream order; the trace has them back in document order
    np.testing.assert_array_equal(trace.experts_array()[:, 0, 0], tok["token_id"].to_numpy())
    np.testing.assert_array_equal(trace.hidden[:, 0, 0], tok["token_id"].to_numpy().astype(np.float16))
    np.testing.assert_array_equal(trace.hidden_rows, np.arange(12))
    assert trace.texts == {"0": "abcde", "1": "xy", "2": "fghij"} and trace.meta["run"] == "fake"


def test_fake_hooks_with_a_hidden_subsample_and_progress():
    calls = []
    trace, _ = run_fake(["abcdefgh", "ijklmnop"], max_hidden=5, progress=lambda d, t: calls.append((d, t)))
    want = hidden_sample(16, 5)
    np.testing.assert_array_equal(trace.hidden_rows, np.flatnonzero(want))
    np.testing.assert_array_equal(trace.hidden[:, 0, 0], trace.tokens["token_id"].to_numpy()[want])
    assert calls[-1] == (16, 16) and [d for d, _ in calls] == sorted(d for d, _ in calls)
    trace, _ = run_fake(["abc"], max_hidden=0)
    assert trace.hidden is None


def test_limits_and_vocab_are_checked_before_the_model_runs():
    with pytest.raises(ValueError, match="more than 4 tokens"):
        run_fake(["abc", "de"], max_tokens=4)
    with pytest.raises(ValueError, match="tokenizer does not match the model"):
        model = torch.nn.Linear(1, 1)
        record_with(FakeHooks(), encode_chars, None, "aé", model=model, vocab_size=200, window=2, batch_size=1)


def test_token_table_by_hand():
    columns, lengths = token_table([("a", "hi", "x"), ("b", "yo!", "")], encode_chars)
    assert lengths == [2, 3] and list(columns) == list(pipeline.TOKEN_COLUMNS)
    assert columns["token_id"] == [104, 105, 121, 111, 33] and list(columns["position"]) == [0, 1, 0, 1, 2]
    assert columns["doc_id"] == ["a", "a", "b", "b", "b"] and columns["label"] == ["x", "x", "", "", ""]
    with pytest.raises(ValueError, match="has no tokens"):
        token_table([("a", "hi", "")], lambda text: ([], [], []))
    assert normalise_docs("one", None) == [("0", "one", "")]


def test_batches_group_equal_windows():
    batches = window_batches([5, 2, 5], block_size=4, batch_size=2)
    # docs at rows 0-4, 5-6, 7-11: windows of 4 (two of them in one batch), then the 2-token doc, then the tails
    assert [b.tolist() for b in batches] == [[[0, 1, 2, 3], [7, 8, 9, 10]], [[5, 6]], [[4], [11]]]
    rows = np.sort(np.concatenate([b.reshape(-1) for b in batches]))
    np.testing.assert_array_equal(rows, np.arange(12))  # every token exactly once


def test_hidden_sample_is_seeded():
    assert hidden_sample(3, 5).all() and not hidden_sample(3, 0).any()
    a = hidden_sample(100, 7)
    assert a.sum() == 7 and np.array_equal(a, hidden_sample(100, 7))


def spy_on_pipeline(monkeypatch, module):
    calls = []

    def spy(hooks, encode, forward, docs, **kw):
        calls.append(type(hooks).__name__)
        return record_with(hooks, encode, forward, docs, **kw)

    monkeypatch.setattr(module, "record_with", spy)
    return calls


def test_native_recording_goes_through_the_pipeline(monkeypatch):
    from moe_core.tokenizer import train_tokenizer

    calls = spy_on_pipeline(monkeypatch, native)
    tok = train_tokenizer(["the quick brown fox " * 4], 300)
    cfg = moe_core.preset("tiny")
    cfg.vocab_size = 300
    torch.manual_seed(0)
    trace = native.record(moe_core.build_model(cfg), tok, ["the fox", "quick"], max_hidden=0)
    assert calls == ["RoutingRecorder"] and trace.tokens["doc_id"].unique().tolist() == ["0", "1"]


def test_hf_recording_goes_through_the_pipeline(monkeypatch, hf_folders):
    from analysis.hf import load_hf_model
    from analysis.recording import hf_hooks

    calls = spy_on_pipeline(monkeypatch, hf_hooks)
    trace = hf_hooks.record_hf(load_hf_model(hf_folders["olmoe"], device="cpu"), ["the fox", "quick"], window=4)
    assert calls == ["HFRoutingRecorder"] and trace.tokens["doc_id"].unique().tolist() == ["0", "1"]
