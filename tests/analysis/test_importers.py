"""Importers of other systems' routing traces: small files written in each documented format -> a dataset."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from analysis.dataset import open_dataset
from analysis.dataset.importers import ImportOptions, import_traces

REPO = Path(__file__).resolve().parents[2]


def _write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _npy_b64(arr: np.ndarray) -> str:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=True)
    return base64.b64encode(buf.getvalue()).decode()


# --- Megatron-LM router_trace_rank{r}.jsonl -----------------------------------------------------------------


def _megatron_record(step, layer, top, rank=0, **extra):
    top = np.asarray(top)
    return {
        "step": step,
        "stage": "pre_dispatch",
        "block": "decoder",
        "layer": layer,
        "rank": rank,
        "num_tokens": int(top.shape[0]),
        "topk": int(top.shape[1]),
        "top_indices": top.tolist(),
        **extra,
    }


def _megatron_file(tmp_path: Path) -> tuple[Path, dict]:
    rng = np.random.default_rng(0)

    def top(n):  # distinct experts per token, ascending like a routing map's nonzero()
        return np.sort(np.stack([rng.choice(8, 2, replace=False) for _ in range(n)]), axis=1)

    want = {"s0": {1: top(4), 2: top(4)}, "s1a": {1: top(3), 2: top(3)}, "s1b": {1: top(3), 2: top(3)}}
    rows = [
        _megatron_record(0, 1, want["s0"][1]),
        _megatron_record(0, 2, want["s0"][2]),
        # a multi-token-prediction head: skipped
        {**_megatron_record(0, 1, top(4)), "block": "mtp", "mtp_idx": 0},
        # step 1, two micro-batches (gradient accumulation): call k = the k-th record of each layer
        _megatron_record(1, 1, want["s1a"][1]),
        _megatron_record(1, 2, want["s1a"][2]),
        _megatron_record(1, 1, want["s1b"][1]),
        _megatron_record(1, 2, want["s1b"][2]),
    ]
    return _write_jsonl(tmp_path / "router_trace_rank0.jsonl", rows), want


def test_megatron_trace_becomes_a_dataset(tmp_path):
    path, want = _megatron_file(tmp_path)
    manifest = import_traces("megatron", [tmp_path], tmp_path / "ds", ImportOptions(shard_tokens=5))
    assert manifest["complete"] and len(manifest["shards"]) == 3  # 4 + 3 + 3 tokens, 5 per shard
    ds = open_dataset(tmp_path / "ds")
    ds.verify()
    trace = ds.to_trace()
    assert trace.meta["layer_blocks"] == [1, 2] and trace.n_layers == 2 and trace.top_k == 2
    assert trace.meta["n_experts"] == 8 and trace.meta["imported_from"] == "megatron"
    assert list(dict.fromkeys(trace.tokens["doc_id"])) == [
        "rank0-step0-call0",
        "rank0-step1-call0",
        "rank0-step1-call1",
    ]
    experts = trace.experts_array()
    expected = np.concatenate([np.stack([want[k][1], want[k][2]], axis=1) for k in ("s0", "s1a", "s1b")])
    np.testing.assert_array_equal(experts, expected)
    assert np.isnan(trace.routing["weight"]).all() and (trace.tokens["token_id"] == -1).all()
    assert trace.tokens["position"].tolist() == [0, 1, 2, 3, 0, 1, 2, 0, 1, 2]


def test_megatron_unpaired_layers_and_bad_lines_name_the_file(tmp_path):
    rows = [_megatron_record(0, 1, [[0, 1]]), _megatron_record(0, 2, [[0, 1]]), _megatron_record(0, 1, [[2, 3]])]
    _write_jsonl(tmp_path / "router_trace_rank0.jsonl", rows)
    with pytest.raises(ValueError, match=r"router_trace_rank0.jsonl:1: rank 0 step 0 has a different number"):
        import_traces("megatron", [tmp_path], tmp_path / "ds")
    bad = tmp_path / "bad" / "router_trace_rank0.jsonl"
    bad.parent.mkdir()
    bad.write_text(json.dumps(_megatron_record(0, 1, [[0, 1]])) + "\n" + '{"step": 0, "layer"\n')
    with pytest.raises(ValueError, match=r"bad/router_trace_rank0.jsonl:2: not a JSON line"):
        import_traces("megatron", [bad], tmp_path / "ds2")
    assert not (tmp_path / "ds2").exists()  # the first pass fails before anything is written


# --- vLLM responses -------------------------------------------------------------------------------------------


def _vllm_routed(n_rows: int, rng) -> np.ndarray:
    """(n_rows, 3 layers, top-2): layer 0 dense (left at 0 by the capturer), layers 1-2 routed."""
    out = np.zeros((n_rows, 3, 2), dtype=np.uint8)
    for t in range(n_rows):
        for layer in (1, 2):
            out[t, layer] = rng.choice(16, 2, replace=False)
    return out


def test_vllm_npy_and_nested_list_responses(tmp_path):
    rng = np.random.default_rng(1)
    prompt, output = [11, 12, 13, 14], [21, 22, 23]
    routed = _vllm_routed(len(prompt) + len(output) - 1, rng)  # the last sampled token has no routing
    completion = {
        "id": "cmpl-1",
        "object": "text_completion",
        "label": "math",
        "choices": [
            {
                "index": 0,
                "text": "...",
                "prompt_token_ids": prompt,
                "token_ids": output,
                "routed_experts": _npy_b64(routed),
            }
        ],
    }
    # routed_experts_prompt_start=2: the first two prompt tokens are skipped
    skipped = _vllm_routed(len(prompt) + len(output) - 1 - 2, rng)
    chat = {
        "id": "chatcmpl-2",
        "prompt_token_ids": prompt,
        "choices": [{"index": 0, "message": {}, "token_ids": output, "routed_experts": _npy_b64(skipped)}],
    }
    # an earlier release: prompt rows on the response, generated rows on the choice, nested lists
    old_prompt, old_out = _vllm_routed(len(prompt), rng), _vllm_routed(len(output) - 1, rng)
    legacy = {
        "id": "chatcmpl-3",
        "prompt_routed_experts": old_prompt.tolist(),
        "choices": [{"index": 0, "routed_experts": old_out.tolist()}],
    }
    path = _write_jsonl(tmp_path / "responses.jsonl", [completion, chat, legacy])
    import_traces("vllm", [path], tmp_path / "ds", ImportOptions(n_experts=16))
    trace = open_dataset(tmp_path / "ds").to_trace()
    assert trace.meta["layer_blocks"] == [1, 2] and trace.n_experts == 16  # the dense layer 0 is dropped
    by_doc = {d: trace.select_docs([d]) for d in ("cmpl-1", "chatcmpl-2", "chatcmpl-3")}
    one = by_doc["cmpl-1"]
    assert one.tokens["token_id"].tolist() == [11, 12, 13, 14, 21, 22]
    assert one.tokens["position"].tolist() == list(range(6)) and set(one.tokens["label"]) == {"math"}
    assert one.tokens["token_text"].tolist()[:2] == ["<11>", "<12>"]
    np.testing.assert_array_equal(one.experts_array(), routed[:, 1:, :])
    two = by_doc["chatcmpl-2"]
    assert two.tokens["position"].tolist() == [2, 3, 4, 5] and two.tokens["token_id"].tolist() == [13, 14, 21, 22]
    np.testing.assert_array_equal(two.experts_array(), skipped[:, 1:, :])
    three = by_doc["chatcmpl-3"]
    assert (three.tokens["token_id"] == -1).all() and len(three.tokens) == 6  # no ids asked for
    np.testing.assert_array_equal(three.experts_array(), np.concatenate([old_prompt, old_out])[:, 1:, :])


def test_vllm_refuses_pickled_npy_and_responses_without_routing(tmp_path):
    obj = np.empty((2, 2, 2), dtype=object)
    obj[...] = 1
    resp = {"id": "x", "choices": [{"index": 0, "routed_experts": _npy_b64(obj)}]}
    path = _write_jsonl(tmp_path / "r.jsonl", [resp])
    with pytest.raises(ValueError, match=r"r.jsonl:1 choice 0: routed_experts is not base64 .npy data.*allow_pickle"):
        import_traces("vllm", [path], tmp_path / "ds")
    plain = _write_jsonl(tmp_path / "plain.jsonl", [{"id": "y", "choices": [{"index": 0, "text": "hi"}]}])
    with pytest.raises(ValueError, match="--enable-return-routed-experts"):
        import_traces("vllm", [plain], tmp_path / "ds")
    with pytest.raises(ValueError, match=r"other.jsonl:1: not a vLLM response"):
        import_traces("vllm", [_write_jsonl(tmp_path / "other.jsonl", [{"text": "hi"}])], tmp_path / "ds")


# --- SGLang responses --------------------------------------------------------------------------------------------


def test_sglang_flat_int32_buffer_needs_its_shape(tmp_path):
    rng = np.random.default_rng(2)
    input_ids, output_ids = [5, 6, 7], [8, 9]
    routed = _vllm_routed(4, rng).astype(np.int32)  # seqlen - 1 rows, 3 layers, top-2
    native = {
        "text": "..",
        "output_ids": output_ids,
        "input_ids": input_ids,  # the request's ids, saved with the response
        "meta_info": {
            "id": "req-1",
            "prompt_tokens": 3,
            "completion_tokens": 2,
            "routed_experts": base64.b64encode(routed.tobytes()).decode(),
        },
    }
    routed2 = _vllm_routed(2, rng).astype(np.int32)
    openai = {
        "id": "chat-2",
        "choices": [{"index": 0}],
        "sglext": {"routed_experts": base64.b64encode(routed2.tobytes()).decode()},
    }
    path = _write_jsonl(tmp_path / "sgl.jsonl", [native, openai])
    with pytest.raises(ValueError, match="--n-layers and --top-k"):
        import_traces("sglang", [path], tmp_path / "ds")
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {
                "num_hidden_layers": 3,
                "num_experts_per_tok": 2,
                "num_experts": 16,
                "mlp_only_layers": [0],
                "decoder_sparse_step": 1,
            }
        )
    )
    import_traces("sglang", [path], tmp_path / "ds", ImportOptions(config=str(config)))
    trace = open_dataset(tmp_path / "ds").to_trace()
    assert trace.meta["layer_blocks"] == [1, 2] and trace.n_experts == 16
    one = trace.select_docs(["req-1"])
    assert one.tokens["token_id"].tolist() == [5, 6, 7, 8]
    np.testing.assert_array_equal(one.experts_array(), routed[:, 1:, :])
    np.testing.assert_array_equal(trace.select_docs(["chat-2"]).experts_array(), routed2[:, 1:, :])
    wrong = ImportOptions(n_layers=4, top_k=2)
    with pytest.raises(ValueError, match=r"sgl.jsonl:2: routed_experts holds 12 ids, not a multiple of 4 layers"):
        import_traces("sglang", [path], tmp_path / "ds3", wrong)


# --- the command ------------------------------------------------------------------------------------------------


def test_import_command_writes_and_resumes(tmp_path):
    _megatron_file(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [
        sys.executable,
        "-m",
        "app.cli",
        "import",
        "--format",
        "megatron",
        str(tmp_path),
        "--out",
        str(tmp_path / "ds"),
    ]
    first = subprocess.run(cmd + ["--shard-tokens", "4"], capture_output=True, text=True, env=env, cwd=REPO)
    assert first.returncode == 0, first.stderr
    assert "3 documents, 10 tokens, 2 MoE layers (raw [1, 2]), 8 experts, top-2" in first.stdout
    before = json.loads((tmp_path / "ds" / "manifest.json").read_text())["shards"]
    again = subprocess.run(cmd + ["--shard-tokens", "4"], capture_output=True, text=True, env=env, cwd=REPO)
    assert again.returncode == 0, again.stderr  # finished shards are kept, nothing is duplicated
    assert json.loads((tmp_path / "ds" / "manifest.json").read_text())["shards"] == before
    other = subprocess.run(cmd + ["--shard-tokens", "5"], capture_output=True, text=True, env=env, cwd=REPO)
    assert other.returncode == 2 and "another" in other.stderr and other.stderr.count("\n") == 1


def test_tokenizer_turns_ids_into_text(tmp_path):
    from tokenizers import Tokenizer

    tok_path = REPO / "sample_data" / "default_run" / "tokenizer.json"
    ids = Tokenizer.from_file(str(tok_path)).encode("The cat sat.").ids
    routed = _vllm_routed(len(ids) - 1, np.random.default_rng(3))
    resp = {
        "id": "t",
        "prompt_token_ids": ids[:-1],
        "choices": [{"index": 0, "token_ids": ids[-1:], "routed_experts": _npy_b64(routed)}],
    }
    path = _write_jsonl(tmp_path / "r.jsonl", [resp])
    import_traces("vllm", [path], tmp_path / "ds", ImportOptions(tokenizer=str(tok_path.parent)))
    trace = open_dataset(tmp_path / "ds").to_trace()
    text = trace.texts["t"]
    assert text == "The cat sat"  # every token but the last sampled one (".")
    spans = list(zip(trace.tokens["char_start"], trace.tokens["char_end"]))
    assert "".join(text[a:b] for a, b in spans) == text and trace.tokens["token_text"].tolist()[0] == "The"


def test_bad_document_later_keeps_the_finished_shards(tmp_path):
    rng = np.random.default_rng(4)
    good, bad = _vllm_routed(3, rng), _vllm_routed(3, rng).astype(np.int16)
    bad[1, 1, :] = -1  # no routing for one token in a routed layer
    rows = [
        {"id": f"r{i}", "choices": [{"index": 0, "routed_experts": _npy_b64(a)}]} for i, a in enumerate([good, bad])
    ]
    path = _write_jsonl(tmp_path / "r.jsonl", rows)
    with pytest.raises(ValueError, match=r"r.jsonl:2 choice 0: a token has no routing in layer 1"):
        import_traces("vllm", [path], tmp_path / "ds", ImportOptions(shard_tokens=3, n_experts=16))
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert [s["id"] for s in manifest["shards"]] == ["w000-s000000"] and not manifest["complete"]
    np.testing.assert_array_equal(open_dataset(tmp_path / "ds").to_trace().experts_array(), good[:, 1:, :])


def test_top1_megatron_drops_absent_layers_and_moe_layers_overrides(tmp_path):
    rows = [_megatron_record(0, layer, [[layer], [layer + 1]]) for layer in (1, 3)]
    _write_jsonl(tmp_path / "router_trace_rank0.jsonl", rows)
    import_traces("megatron", [tmp_path], tmp_path / "ds")
    trace = open_dataset(tmp_path / "ds").to_trace()
    assert trace.meta["layer_blocks"] == [1, 3] and trace.experts_array()[:, :, 0].tolist() == [[1, 3], [2, 4]]
    import_traces("megatron", [tmp_path], tmp_path / "ds3", ImportOptions(moe_layers=[3]))
    assert open_dataset(tmp_path / "ds3").to_trace().meta["layer_blocks"] == [3]
