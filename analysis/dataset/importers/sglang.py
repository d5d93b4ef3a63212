"""SGLang "return routed experts" responses -> imported documents.

Format (sgl-project/sglang; server flag `--enable-return-routed-experts`, request field
`return_routed_experts: true`): python/sglang/srt/layers/moe/routed_experts_capturer.py writes, per request,
the host buffer rows of its first seqlen - 1 tokens, shape (seqlen - 1, num_hidden_layers, num_experts_per_tok)
int32, and the response carries them in `meta_info["routed_experts"]` as base64 of the flat int32 buffer
(`extract_routed_experts_from_meta_info`: `np.frombuffer(b64decode(s), dtype=np.int32)`), ordered by token,
layer, top-k slot. The buffer does not say its layers or top-k: they come from the model config
(`--config`, keys num_hidden_layers / num_experts_per_tok) or `--n-layers` / `--top-k`. Dense layers stay 0
(the buffer starts zeroed; SGL-JAX writes -1) and the plan drops them.
Token ids: the native /generate response has `output_ids`; prompt ids are the request's `input_ids` (add them
to the saved line) or come from `meta_info["input_token_logprobs"]` / `["output_token_logprobs"]`
((logprob, token_id, text) triples, with return_logprob). The OpenAI-compatible server puts the same base64
string in the response's `sglext.routed_experts` (seen in clients, e.g. a `data["sglext"]["routed_experts"]`
reader; not in SGLang's docs), which is read the same way.
This is not vLLM's format: vLLM sends a base64 `.npy` (with its shape), SGLang a bare int32 buffer.

A line's own `doc_id` and `label` keys (added by the user) name and label its documents.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from analysis.dataset.importers.common import (
    ImportedDoc,
    ImportOptions,
    align_tokens,
    decode_int32_b64,
    expand_paths,
    read_responses,
)

FILE_PATTERN = "*.jsonl"  # in a folder; a .json file is read when named


def read_docs(paths: list[str | Path], opts: ImportOptions, n_layers: int, top_k: int) -> Iterator[ImportedDoc]:
    """Every saved response with routed experts, in file order (folders: their *.jsonl files)."""
    count = 0
    for path in expand_paths(paths, FILE_PATTERN):
        for where, resp in read_responses(path):
            doc = response_doc(resp, where, opts, n_layers, top_k)
            if doc is not None:
                count += 1
                yield doc
    if count == 0:
        raise ValueError(
            "no SGLang response holds routed_experts (server flag --enable-return-routed-experts, "
            "request field return_routed_experts)"
        )


def response_doc(
    resp: dict[str, Any], where: str, opts: ImportOptions, n_layers: int, top_k: int
) -> ImportedDoc | None:
    meta = resp.get("meta_info") if isinstance(resp.get("meta_info"), dict) else {}
    ext = resp.get("sglext") if isinstance(resp.get("sglext"), dict) else {}
    encoded = meta.get("routed_experts", ext.get("routed_experts"))
    if encoded is None:
        if not meta and not ext:
            raise ValueError(f"{where}: not an SGLang response (no meta_info or sglext)")
        return None
    if not isinstance(encoded, str):
        raise ValueError(f"{where}: routed_experts must be a base64 string, got {type(encoded).__name__}")
    flat = decode_int32_b64(encoded, where)
    per_token = n_layers * top_k
    if flat.size % per_token:
        raise ValueError(
            f"{where}: routed_experts holds {flat.size} ids, not a multiple of {n_layers} layers x top-{top_k} "
            "(check --config / --n-layers / --top-k)"
        )
    experts = flat.reshape(-1, n_layers, top_k)
    token_ids, positions = align_tokens(len(experts), _token_ids(resp, meta, ext), where)
    doc_id = resp.get("doc_id") or meta.get("id") or resp.get("id") or where
    return ImportedDoc(
        doc_id=str(doc_id),
        experts=experts,
        token_ids=token_ids,
        positions=positions,
        label=str(resp.get("label", opts.label)),
        where=where,
    )


def _token_ids(resp: dict[str, Any], meta: dict[str, Any], ext: dict[str, Any]) -> list[int] | None:
    """Prompt + output token ids when the saved line has both, else None."""
    prompt = resp.get("input_ids", ext.get("input_ids"))
    if prompt is None and meta.get("input_token_logprobs"):
        prompt = [entry[1] for entry in meta["input_token_logprobs"]]
    output = resp.get("output_ids", ext.get("output_ids"))
    if isinstance(output, list) and output and isinstance(output[0], list):
        output = output[0]  # sglext.output_ids is one list per choice
    if output is None and meta.get("output_token_logprobs"):
        output = [entry[1] for entry in meta["output_token_logprobs"]]
    if prompt is None or output is None:
        return None
    return [int(t) for t in prompt] + [int(t) for t in output]


def shape_from(opts: ImportOptions, cfg: dict[str, Any] | None) -> tuple[int, int]:
    """(layers, top-k) of the flat buffer: flags first, then the config; ValueError naming what is missing."""
    n_layers = opts.n_layers or (cfg or {}).get("num_hidden_layers")
    top_k = opts.top_k or (cfg or {}).get("num_experts_per_tok")
    if not isinstance(n_layers, int) or not isinstance(top_k, int):
        raise ValueError(
            "SGLang's routed_experts is a flat int32 buffer: give the model's --config (config.json) or "
            "--n-layers and --top-k to shape it"
        )
    return n_layers, top_k
