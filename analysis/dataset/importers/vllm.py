"""vLLM "return routed experts" responses -> imported documents.

Format (vllm-project/vllm; server flag `--enable-return-routed-experts`):
- OpenAI-compatible server, vllm/entrypoints/openai/completion/protocol.py (`CompletionResponseChoice`) and the
  chat and generate protocols: each choice has `routed_experts`: base64 of `.npy` bytes, decoded with
  `np.load(io.BytesIO(base64.b64decode(s)))`, shape (num_tokens - 1, num_layers, num_experts_per_tok), dtype
  uint8/uint16/int32: the prompt and generated tokens except the last sampled one (never fed forward), after
  the request's `routed_experts_prompt_start` prompt tokens. Token ids come with `return_token_ids: true`:
  `prompt_token_ids` (on the choice for completions, on the response for chat) and the choice's `token_ids`.
- Earlier releases: the choice's `routed_experts` is a nested list (generated tokens) and the response has
  `prompt_routed_experts` (prompt tokens), both (tokens, layers, top-k).
- Offline engine (vllm/outputs.py): `CompletionOutput.routed_experts` is an ndarray [seq_len, layer_num, topk];
  saved as JSON (`RequestOutput` fields: `prompt_token_ids`, `outputs: [{token_ids, routed_experts}]`, the
  array as a nested list) it reads the same way.
`num_layers` is the model's `num_hidden_layers`: dense layers are never captured and stay 0 (see
vllm/model_executor/layers/fused_moe/routed_experts_capturer.py); the plan drops them. Slots are in the order
of the engine's top-k ids. The .npy is read with allow_pickle=False.

A line's own `doc_id` and `label` keys (added by the user) name and label its documents.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from analysis.dataset.importers.common import (
    ImportedDoc,
    ImportOptions,
    align_tokens,
    as_experts,
    decode_npy_b64,
    expand_paths,
    read_responses,
)

FILE_PATTERN = "*.jsonl"  # in a folder; a .json file is read when named


def read_docs(paths: list[str | Path], opts: ImportOptions) -> Iterator[ImportedDoc]:
    """Every choice of every saved response, in file order (folders: their *.jsonl files)."""
    count = 0
    for path in expand_paths(paths, FILE_PATTERN):
        for where, resp in read_responses(path):
            for doc in response_docs(resp, where, opts):
                count += 1
                yield doc
    if count == 0:
        raise ValueError(
            "no vLLM response holds routed_experts (was the server started with --enable-return-routed-experts?)"
        )


def response_docs(resp: dict[str, Any], where: str, opts: ImportOptions) -> Iterator[ImportedDoc]:
    choices = resp.get("choices", resp.get("outputs"))
    if not isinstance(choices, list):
        raise ValueError(f"{where}: not a vLLM response (no 'choices' or 'outputs' list)")
    base = str(resp.get("doc_id") or resp.get("id") or resp.get("request_id") or where)
    label = str(resp.get("label", opts.label))
    prompt_routed = resp.get("prompt_routed_experts")
    for i, choice in enumerate(choices):
        here = f"{where} choice {i}"
        if not isinstance(choice, dict) or choice.get("routed_experts") is None:
            continue  # aborted before a forward pass, or the server did not capture
        routed = _experts(choice["routed_experts"], here)
        prompt_ids = choice.get("prompt_token_ids", resp.get("prompt_token_ids"))
        out_ids = choice.get("token_ids")
        if prompt_routed is not None:  # earlier releases: prompt rows apart from the generated rows
            prompt_rows = _experts(prompt_routed, f"{where} prompt_routed_experts")
            routed = np.concatenate([prompt_rows, routed]) if len(routed) else prompt_rows
        ids = None if prompt_ids is None or out_ids is None else list(prompt_ids) + list(out_ids)
        if ids is None and prompt_ids is not None and prompt_routed is not None and len(routed) == len(prompt_ids):
            ids = list(prompt_ids)  # prompt rows only
        token_ids, positions = align_tokens(len(routed), ids, here)
        yield ImportedDoc(
            doc_id=base if len(choices) == 1 else f"{base}/{choice.get('index', i)}",
            experts=routed,
            token_ids=token_ids,
            positions=positions,
            label=label,
            where=here,
        )


def _experts(value: Any, where: str) -> np.ndarray:
    if isinstance(value, str):
        arr = decode_npy_b64(value, where)
        if arr.dtype.kind not in "iu" or arr.ndim != 3:
            raise ValueError(f"{where}: routed_experts must be a 3-D integer array, got {arr.dtype} {arr.shape}")
        return arr.astype(np.int64)
    return as_experts(value, where)
