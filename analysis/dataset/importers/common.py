"""What every importer shares: options, one imported document, decoding, layer detection, the trace of a batch.

An importer (megatron, vllm, sglang) turns a foreign file into `ImportedDoc`s: one document's token ids
(or none), and `experts` (n, L_raw, K) as the engine wrote them, where L_raw may include dense layers the engine
left at 0 or -1. `ImportPlan` (from a first pass over the files, `plan_from_docs`) fixes the MoE layers kept,
top-k and the number of experts; `docs_to_trace` turns a batch of documents into a `RoutingTrace` (weights,
scores and entropies NaN: no engine here writes them), which the dataset writer stores as one shard.

Rank: the slot order the engine wrote, which is not always the router's score order (Megatron's routing map
lists a token's experts by ascending expert id), so rank 0 is the top-1 only where the format says so.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from analysis.trace import RoutingTrace, build_trace

# keys of a Hugging Face config.json that hold the number of routed experts, in the families we know
_N_EXPERTS_KEYS = ("n_routed_experts", "num_experts", "num_local_experts", "moe_num_experts")


@dataclass
class ImportOptions:
    """How to read foreign traces; every field may stay at its default."""

    config: str | None = None  # the model's Hugging Face config.json (or its folder): experts, top-k, layers
    tokenizer: str | None = None  # a tokenizer.json (or its folder): token ids -> token text
    n_experts: int | None = None  # routed experts; default: config, else the largest expert id seen + 1
    n_layers: int | None = None  # SGLang only: layers in its flat buffer (default: config num_hidden_layers)
    top_k: int | None = None  # SGLang only: experts per token in its flat buffer (default: config)
    moe_layers: list[int] | None = None  # raw layer indices to keep (default: config, else detected)
    label: str = ""  # label of every imported document (a line's own "label" wins)
    shard_tokens: int = 65536  # tokens per shard: bounds the memory of one batch


@dataclass
class ImportedDoc:
    """One document of a foreign trace, before layer selection."""

    doc_id: str
    experts: np.ndarray  # (n, L_raw, K) int, the engine's slot order
    token_ids: np.ndarray | None = None  # (n,) int64, or None when the format has no token ids
    positions: np.ndarray | None = None  # (n,) positions in the full sequence (default 0..n-1)
    label: str = ""
    where: str = ""  # "FILE:LINE" for errors


@dataclass
class ImportPlan:
    """Shape of the dataset an import writes, fixed before the first shard."""

    layers: list[int]  # raw layer indices kept, in order: dataset layer i is raw layer layers[i]
    top_k: int
    n_experts: int
    config: dict[str, Any] | None = None
    extra_meta: dict[str, Any] = field(default_factory=dict)

    def meta(self) -> dict[str, Any]:
        return {
            "n_layers": len(self.layers),
            "n_experts": self.n_experts,
            "top_k": self.top_k,
            "layer_blocks": list(self.layers),
            "config": self.config,
            **self.extra_meta,
        }


# --- reading ------------------------------------------------------------------------------------------


def expand_paths(paths: Iterable[str | os.PathLike], pattern: str) -> list[Path]:
    """Files named, plus the files matching `pattern` in folders named; sorted; ValueError when none."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(p.glob(pattern)))
        elif p.is_file():
            out.append(p)
        else:
            raise ValueError(f"{p}: no such file or folder")
    if not out:
        raise ValueError(f"no {pattern} files in {', '.join(map(str, paths))}")
    return out


def read_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed JSON) of each non-blank line; a bad line is a one-line error naming file:line."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: not a JSON line ({exc.msg})") from None


def read_responses(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """("FILE:LINE", response) of saved server responses: a .jsonl file holds one response (or a JSON list
    of responses, a batch) per line; a .json file holds one response or a list of them."""
    if path.suffix == ".json":
        try:
            values = [(f"{path}", json.loads(path.read_text(encoding="utf-8")))]
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: not a JSON file ({exc})") from None
    else:
        values = ((f"{path}:{lineno}", value) for lineno, value in read_jsonl(path))
    for where, value in values:
        items = value if isinstance(value, list) else [value]
        for i, item in enumerate(items):
            here = where if len(items) == 1 else f"{where} [{i}]"
            if not isinstance(item, dict):
                raise ValueError(f"{here}: expected a JSON object (a server response), got {type(item).__name__}")
            yield here, item


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """A Hugging Face config.json (or the folder holding one) as a dict."""
    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read the model config ({exc})") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: the model config is not a JSON object")
    return cfg.get("text_config", cfg) if isinstance(cfg.get("text_config"), dict) else cfg


def config_n_experts(cfg: dict[str, Any] | None) -> int | None:
    for key in _N_EXPERTS_KEYS:
        if cfg and isinstance(cfg.get(key), int):
            return int(cfg[key])
    return None


def config_moe_layers(cfg: dict[str, Any] | None) -> list[int] | None:
    """The MoE layers of a config whose family says which layers are dense (DeepSeek: the first
    `first_k_dense_replace`; Qwen-MoE: `mlp_only_layers` and `decoder_sparse_step`); None when it doesn't say."""
    if not cfg or not isinstance(cfg.get("num_hidden_layers"), int):
        return None
    n = cfg["num_hidden_layers"]
    if isinstance(cfg.get("first_k_dense_replace"), int):
        freq = int(cfg.get("moe_layer_freq", 1) or 1)
        return [i for i in range(n) if i >= cfg["first_k_dense_replace"] and i % freq == 0]
    if "mlp_only_layers" in cfg or "decoder_sparse_step" in cfg:
        dense = set(cfg.get("mlp_only_layers") or [])
        step = int(cfg.get("decoder_sparse_step", 1) or 1)
        return [i for i in range(n) if i not in dense and (i + 1) % step == 0]
    return None


def decode_npy_b64(text: str, where: str) -> np.ndarray:
    """base64 of `.npy` bytes (vLLM), read with allow_pickle=False: an object array is refused."""
    try:
        return np.load(io.BytesIO(base64.b64decode(text, validate=True)), allow_pickle=False)
    except (binascii.Error, ValueError, OSError, EOFError) as exc:
        raise ValueError(f"{where}: routed_experts is not base64 .npy data ({exc})") from None


def decode_int32_b64(text: str, where: str) -> np.ndarray:
    """base64 of a flat little-endian int32 buffer (SGLang)."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"{where}: routed_experts is not base64 ({exc})") from None
    if len(raw) % 4:
        raise ValueError(f"{where}: routed_experts holds {len(raw)} bytes, not whole int32 values")
    return np.frombuffer(raw, dtype="<i4").astype(np.int64)


def as_experts(value: Any, where: str) -> np.ndarray:
    """A nested list (tokens, layers, K) of ints as an int64 array; ValueError if ragged or not 3-D."""
    try:
        arr = np.asarray(value, dtype=np.int64)
    except (ValueError, TypeError):
        raise ValueError(f"{where}: routed experts are not a (tokens, layers, top-k) array of integers") from None
    if arr.ndim != 3:
        raise ValueError(f"{where}: routed experts must be (tokens, layers, top-k), got shape {arr.shape}")
    return arr


def align_tokens(rows: int, token_ids: list[int] | None, where: str) -> tuple[np.ndarray | None, np.ndarray]:
    """(token ids, positions) of the `rows` routing rows of a sequence whose ids are `token_ids`.

    vLLM and SGLang return routing for the first T-1 of T tokens (the last sampled token is never fed
    forward), after skipping a requested prompt prefix; so the rows cover ids[T-1-rows : T-1]. With T rows
    they cover every token. Without ids, positions are 0..rows-1."""
    if token_ids is None:
        return None, np.arange(rows, dtype=np.int64)
    ids = np.asarray(token_ids, dtype=np.int64)
    total = len(ids)
    if rows > total:
        raise ValueError(f"{where}: {rows} routing rows but only {total} token ids")
    start = 0 if rows == total else total - 1 - rows
    return ids[start : start + rows], np.arange(start, start + rows, dtype=np.int64)


# --- the plan: which layers, top-k, experts -------------------------------------------------------------


def plan_from_docs(docs: Iterable[ImportedDoc], opts: ImportOptions, cfg: dict[str, Any] | None) -> ImportPlan:
    """Scan every document once: raw layers, top-k, largest expert id; then choose the MoE layers.

    A raw layer is dense (dropped) when the engine left it unwritten: every slot -1 (SGL-JAX), or, with
    top-k >= 2, every token's slots all equal (vLLM and SGLang leave dense layers at 0; a router never picks
    one expert twice). With top-1 a layer of zeros looks routed: then --moe-layers or the config decides,
    else it stays."""
    n_raw = top_k = None
    max_expert = -1
    written: np.ndarray | None = None  # (L_raw,) some token has a real routing in that layer
    for doc in docs:
        n, L, K = doc.experts.shape
        if n_raw is None:
            n_raw, top_k = L, K
            written = np.zeros(L, dtype=bool)
        elif (L, K) != (n_raw, top_k):
            raise ValueError(f"{doc.where}: routing has {L} layers x top-{K}, earlier documents {n_raw} x top-{top_k}")
        if n == 0:
            continue
        max_expert = max(max_expert, int(doc.experts.max()))
        real = doc.experts >= 0
        if K >= 2:
            real &= (doc.experts != doc.experts[:, :, :1]).any(axis=2, keepdims=True)
        written |= real.any(axis=(0, 2))
    if n_raw is None:
        raise ValueError("the files hold no routed tokens")
    layers = opts.moe_layers or config_moe_layers(cfg)
    if layers is None:
        layers = [i for i in range(n_raw) if written[i]]
    bad = [i for i in layers if not 0 <= i < n_raw]
    if bad or not layers:
        raise ValueError(f"MoE layers {bad or layers} are not among the {n_raw} layers of the trace")
    n_experts = opts.n_experts or config_n_experts(cfg) or max_expert + 1
    if max_expert >= n_experts:
        raise ValueError(f"expert id {max_expert} found, but the model has {n_experts} experts")
    return ImportPlan(layers=sorted(layers), top_k=int(top_k), n_experts=int(n_experts), config=cfg)


# --- tokens and the trace of a batch ----------------------------------------------------------------------


class TokenTexts:
    """Token id -> text through a tokenizers tokenizer.json; `<id>` without one, "" for unknown ids."""

    def __init__(self, path: str | os.PathLike | None):
        self._tok = None
        if path is not None:
            from tokenizers import Tokenizer

            p = Path(path)
            p = p / "tokenizer.json" if p.is_dir() else p
            try:
                self._tok = Tokenizer.from_file(str(p))
            except Exception as exc:  # tokenizers raises its own Exception type
                raise ValueError(f"{p}: cannot load the tokenizer ({str(exc).splitlines()[0]})") from None
        self._cache: dict[int, str] = {}

    def texts(self, ids: np.ndarray | None, n: int) -> list[str]:
        if ids is None:
            return [""] * n
        out = []
        for i in ids.tolist():
            text = self._cache.get(i)
            if text is None:
                text = f"<{i}>" if self._tok is None else self._tok.decode([i], skip_special_tokens=False)
                self._cache[i] = text
            out.append(text)
        return out


def docs_to_trace(docs: list[ImportedDoc], plan: ImportPlan, names: TokenTexts) -> RoutingTrace:
    """The trace of a batch of documents: the plan's layers; text = the token texts joined."""
    cols: dict[str, list] = {c: [] for c in ("doc_id", "position", "token_id", "token_text", "char_start", "char_end")}
    labels, texts, experts = [], {}, []
    for doc in docs:
        n = len(doc.experts)
        if doc.experts.shape[2] != plan.top_k:
            raise ValueError(f"{doc.where}: top-{doc.experts.shape[2]} routing, the import is top-{plan.top_k}")
        pieces = names.texts(doc.token_ids, n)
        lengths = np.fromiter((len(p) for p in pieces), dtype=np.int64, count=n)
        ends = np.cumsum(lengths)
        cols["doc_id"] += [doc.doc_id] * n
        cols["position"].append(doc.positions if doc.positions is not None else np.arange(n))
        cols["token_id"].append(doc.token_ids if doc.token_ids is not None else np.full(n, -1))
        cols["token_text"] += pieces
        cols["char_start"].append(ends - lengths)
        cols["char_end"].append(ends)
        labels += [doc.label] * n
        texts[doc.doc_id] = "".join(pieces)
        kept = doc.experts[:, plan.layers, :]
        if (kept < 0).any():
            layer = plan.layers[int(np.argwhere(kept < 0)[0][1])]
            raise ValueError(f"{doc.where}: a token has no routing in layer {layer}, which the import keeps")
        experts.append(kept)
    tokens = {k: (np.concatenate(v) if v and isinstance(v[0], np.ndarray) else v) for k, v in cols.items()}
    tokens["label"] = labels
    ex = np.concatenate(experts) if experts else np.zeros((0, len(plan.layers), plan.top_k), dtype=np.int64)
    n, L, K = ex.shape
    nan3 = np.full((n, L, K), np.nan, dtype=np.float32)
    nan2 = np.full((n, L), np.nan, dtype=np.float32)
    return build_trace(
        tokens=tokens,
        experts=ex,
        weights=nan3,
        scores_k=nan3,
        biased_k=nan3,
        flips=np.zeros((n, L, K), dtype=bool),
        shared_share=nan2,
        entropy=nan2,
        meta=plan.meta(),
        texts=texts,
    )


def batches(docs: Iterable[ImportedDoc], shard_tokens: int) -> Iterator[list[ImportedDoc]]:
    """Documents grouped into batches of about `shard_tokens` tokens (a long document is a batch alone)."""
    batch: list[ImportedDoc] = []
    size = 0
    for doc in docs:
        if batch and size + len(doc.experts) > shard_tokens:
            yield batch
            batch, size = [], 0
        batch.append(doc)
        size += len(doc.experts)
    if batch:
        yield batch
