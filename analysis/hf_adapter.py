"""Hugging Face MoE checkpoints from a local folder -> the same `RoutingTrace` as our own models.

Optional extra `hf` (transformers, accelerate); nothing is downloaded: every load uses `local_files_only=True`,
`use_safetensors=True` (no pickle is ever read) and `trust_remote_code=False` (no code from the folder runs).

How routing is captured. In the installed transformers (>= 5) every supported family routes through a small
router module that returns `(router_logits_TE, weights_TK, indices_TK)` and whose input is the router input
hidden state; the MoE block then calls `experts(x, indices, weights)` and, where it has them, shared experts.
A forward hook on the router records the experts and gate weights exactly as the model chose them (after any
selection bias such as DeepSeek-V3's `e_score_correction_bias`); nothing is re-chosen from the logits. From the
logits we derive, per family (`FAMILIES`):
- scores over all experts: softmax(logits) or sigmoid(logits) (DeepSeek-V3). For GPT-OSS and GraniteMoE, which
  choose on raw logits and softmax only the chosen ones, scores are softmax over all logits (same order).
- biased scores: scores + e_score_correction_bias (DeepSeek-V3), else the scores.
- bias_flip (DeepSeek-V3 only): the chosen expert is not among those the family's own selection code
  (`deepseek_v3_choice`, group-limited) would choose on the unbiased scores.
- shared_share = ||shared|| / (||routed|| + ||shared||) per token, from hooks on the experts module (weighted
  routed output) and the shared expert(s) (Qwen2-MoE: times sigmoid(shared_expert_gate(x))); 0 without one.
- rank: a token's chosen experts are ordered by biased score, highest first (DeepSeek routers return them
  unsorted); each weight stays with its expert.

Text is cut into non-overlapping windows of at most `window` tokens (as `analysis.recorder.record` does); the
prefix tokens the tokenizer adds itself (e.g. BOS) are fed in front of every window, so each window looks like
a fresh sequence to the model, but are left out of the trace.
"""

from __future__ import annotations

import argparse
import json
import math
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from analysis.recorder import model_lock, normalise_docs, window_batches
from analysis.trace import RoutingTrace, build_trace

# routers return (logits, weights, indices) in every supported family only from this version on (5.20 still
# differs for GraniteMoE; 5.12 for DeepSeek/GLM/Granite); tested with 5.23.0
MIN_TRANSFORMERS = (5, 23)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
FP16_MAX = 65504.0  # router inputs are stored as float16; clamp so outliers don't become inf


# --- per-family specs -------------------------------------------------------------------------------------------


def deepseek_v3_choice(scores_TE: torch.Tensor, n_group: int, topk_group: int, top_k: int) -> torch.Tensor:
    """DeepSeek-V3's expert choice (transformers' DeepseekV3TopkRouter): keep the `topk_group` groups whose two
    best scores sum highest, then the top_k experts inside them. Returns (T, K) indices, unsorted.
    Used only for the bias-flip counterfactual (choice on unbiased scores); tested against the model's router."""
    T, E = scores_TE.shape
    group_scores_TG = scores_TE.view(T, n_group, E // n_group).topk(2, dim=-1)[0].sum(dim=-1)
    group_idx = torch.topk(group_scores_TG, k=topk_group, dim=-1, sorted=False)[1]
    group_mask_TG = torch.zeros_like(group_scores_TG).scatter_(1, group_idx, 1)
    mask_TE = group_mask_TG.unsqueeze(-1).expand(-1, n_group, E // n_group).reshape(T, E)
    return torch.topk(scores_TE.masked_fill(~mask_TE.bool(), float("-inf")), k=top_k, dim=-1, sorted=False)[1]


def _v3_unbiased(router: torch.nn.Module, scores_TE: torch.Tensor) -> torch.Tensor:
    return deepseek_v3_choice(scores_TE, router.num_group, router.topk_group, router.top_k)


@dataclass(frozen=True)
class FamilySpec:
    """How one transformers MoE family routes; every router returns (logits_TE, weights_TK, indices_TK)."""

    name: str  # shown to users
    router_class: str  # class name of the router module inside each MoE block
    experts_key: str  # config.json key holding the number of routed experts
    score_fn: str = "softmax"  # "softmax" | "sigmoid": scores over all experts from the router logits
    bias_attr: str | None = None  # router buffer added to the scores only to choose experts
    unbiased_choice: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor] | None = None  # for bias flips
    shared_attr: str | None = None  # shared-expert module on the MoE block
    shared_gate_attr: str | None = None  # its scalar gate: shared output = sigmoid(gate(x)) * shared(x)
    notes: str = ""  # what the scores mean, for docs and the app


FAMILIES: dict[str, FamilySpec] = {  # key: config.json "model_type"
    "mixtral": FamilySpec("Mixtral", "MixtralTopKRouter", "num_local_experts", notes="softmax, top-k renormalised"),
    "qwen2_moe": FamilySpec(
        "Qwen2-MoE",
        "Qwen2MoeTopKRouter",
        "num_experts",
        shared_attr="shared_expert",
        shared_gate_attr="shared_expert_gate",
        notes="softmax; one sigmoid-gated shared expert",
    ),
    "qwen3_moe": FamilySpec("Qwen3-MoE", "Qwen3MoeTopKRouter", "num_experts", notes="softmax"),
    "olmoe": FamilySpec("OLMoE", "OlmoeTopKRouter", "num_experts", notes="softmax"),
    "deepseek_v3": FamilySpec(
        "DeepSeek-V3",
        "DeepseekV3TopkRouter",
        "n_routed_experts",
        score_fn="sigmoid",
        bias_attr="e_score_correction_bias",
        unbiased_choice=_v3_unbiased,
        shared_attr="shared_experts",
        notes="sigmoid; choice on score + e_score_correction_bias, group-limited; shared experts",
    ),
    "glm4_moe": FamilySpec(
        "GLM-4-MoE",
        "Glm4MoeTopkRouter",
        "n_routed_experts",
        score_fn="sigmoid",
        bias_attr="e_score_correction_bias",
        unbiased_choice=_v3_unbiased,  # the router is DeepSeek-V3's, line for line
        shared_attr="shared_experts",
        notes="as DeepSeek-V3",
    ),
    "deepseek_v2": FamilySpec(
        "DeepSeek-V2",
        "DeepseekV2TopkRouter",
        "n_routed_experts",
        shared_attr="shared_experts",
        notes="softmax, greedy or group-limited; shared experts",
    ),
    "gpt_oss": FamilySpec(
        "GPT-OSS", "GptOssTopKRouter", "num_local_experts", notes="top-k on logits; scores = softmax(all logits)"
    ),
    "granitemoe": FamilySpec(
        "GraniteMoE", "GraniteMoeTopKRouter", "num_local_experts", notes="top-k on logits; scores = softmax(logits)"
    ),
    "phimoe": FamilySpec("Phi-MoE", "PhimoeTopKRouter", "num_local_experts", notes="sparsemixer top-2; softmax"),
}


def supported_families() -> str:
    return ", ".join(f"{s.name} ({key})" for key, s in FAMILIES.items())


# --- the folder, before loading anything ----------------------------------------------------------------------


def read_config(path: str | Path) -> dict[str, Any]:
    """config.json of a model folder as a dict; ValueError (one line) for a missing folder/file or bad JSON."""
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"Hugging Face model folder not found: {path}")
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise ValueError(f"{path} has no config.json: not a Hugging Face model folder")
    try:
        cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{cfg_file} is corrupted (not valid JSON: {exc})") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{cfg_file} is corrupted (expected a JSON object)")
    return cfg


def family_of(cfg: dict[str, Any], path: str | Path = "") -> tuple[str, FamilySpec]:
    """(model_type, spec) of a config dict; ValueError naming the architecture and the supported ones."""
    model_type = cfg.get("model_type")
    arch = ", ".join(cfg.get("architectures") or []) or "unknown architecture"
    if model_type not in FAMILIES:
        where = f"{path}: " if path else ""
        raise ValueError(
            f"{where}{arch} (model_type {model_type!r}) is not a supported MoE architecture; "
            f"supported: {supported_families()}"
        )
    return model_type, FAMILIES[model_type]


def safetensors_params(path: str | Path) -> tuple[int, int]:
    """(parameters, bytes) of the *.safetensors files in a folder, read from their headers only.
    ValueError for a folder without safetensors weights or with a truncated/corrupted file."""
    path = Path(path)
    files = sorted(path.glob("*.safetensors"))
    index = path / "model.safetensors.index.json"
    if index.is_file():  # count only the shards the model uses (some folders also hold consolidated copies)
        try:
            used = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        except (UnicodeDecodeError, ValueError, KeyError, AttributeError):
            raise ValueError(f"{index} is corrupted (not a safetensors index)") from None
        missing = sorted(used - {f.name for f in files})
        if missing:
            raise ValueError(f"{path} lacks weight shard(s) listed in its index: {', '.join(missing[:3])}")
        files = [f for f in files if f.name in used]
    if not files:
        raise ValueError(
            f"{path} has no .safetensors weights (pickled .bin checkpoints are never loaded; convert them first)"
        )
    n_params = n_bytes = 0
    for f in files:
        size = f.stat().st_size
        try:
            with open(f, "rb") as fh:
                (n_header,) = struct.unpack("<Q", fh.read(8))
                if n_header > size - 8:
                    raise ValueError("header longer than the file")
                header = json.loads(fh.read(n_header))
        except (struct.error, ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"{f} is corrupted or truncated ({exc})") from None
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            start, end = entry["data_offsets"]
            if 8 + n_header + end > size:
                raise ValueError(f"{f} is truncated: tensor {name} ends past the end of the file")
            n_params += math.prod(entry["shape"])
            n_bytes += end - start
    return n_params, n_bytes


def hf_folder_info(path: str | Path) -> dict[str, Any]:
    """What the app's model picker shows, without loading weights or transformers:
    {path, model_id, model_type, family, architecture, n_layers, n_experts, top_k, n_params, weights_gb,
    supported, reason}. Never raises for a bad folder: `supported` is False and `reason` says why."""
    path = Path(path).expanduser()
    info: dict[str, Any] = {"path": str(path), "model_id": path.name, "supported": False, "reason": ""}
    try:
        cfg = read_config(path)
        info.update(
            model_type=cfg.get("model_type"),
            architecture=", ".join(cfg.get("architectures") or []),
            n_layers=cfg.get("num_hidden_layers"),
            top_k=cfg.get("num_experts_per_tok"),
        )
        model_type, spec = family_of(cfg, path)
        info.update(family=spec.name, n_experts=cfg.get(spec.experts_key))
        n_params, n_bytes = safetensors_params(path)
        info.update(n_params=n_params, weights_gb=n_bytes / 1e9, supported=True)
    except ValueError as exc:
        info["reason"] = str(exc)
    return info


def memory_gb(n_params: int, dtype: str = "bfloat16") -> float:
    """Weights in memory: params x bytes per param (activations for a few thousand tokens come on top)."""
    return n_params * DTYPES[dtype].itemsize / 1e9


# --- the loaded model -----------------------------------------------------------------------------------------


@dataclass
class HFMoELayer:
    """One MoE block of a loaded model and the modules the recorder hooks."""

    block: int  # decoder block index
    router: torch.nn.Module  # returns (logits_TE, weights_TK, indices_TK); its input is the router input
    experts: torch.nn.Module  # returns the weighted routed output (T, D)
    shared: torch.nn.Module | None = None  # shared expert(s) output (..., D)
    shared_gate: torch.nn.Module | None = None  # Qwen2-MoE: logit of the shared expert's sigmoid gate (T, 1)


@dataclass
class HFMoEModel:
    """A loaded Hugging Face MoE model: the transformers model, its tokenizer and its MoE layers."""

    model: torch.nn.Module  # a transformers *ForCausalLM, eval mode
    tokenizer: Any  # a fast tokenizer (offsets are needed)
    model_type: str  # config.json model_type, a key of FAMILIES
    spec: FamilySpec
    path: str
    layers: list[HFMoELayer] = field(default_factory=list)
    dtype: str = "float32"
    device: str = "cpu"  # "cpu", "cuda[:i]" or "device_map=auto"

    @property
    def model_id(self) -> str:
        return Path(self.path).name

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def n_experts(self) -> int:
        return int(self.layers[0].router.num_experts)

    @property
    def top_k(self) -> int:
        return int(self.layers[0].router.top_k)

    @property
    def layer_blocks(self) -> list[int]:
        return [layer.block for layer in self.layers]

    @property
    def input_device(self) -> torch.device:
        """Where input ids go (the embedding's device; with device_map="auto" the first shard)."""
        return self.model.get_input_embeddings().weight.device

    def meta(self) -> dict[str, Any]:
        """Trace meta: labels for the app plus the model config (JSON-able)."""
        import transformers

        cfg = self.model.config
        return {
            "source": "hf",
            "model_id": self.model_id,
            "path": self.path,
            "family": self.spec.name,
            "model_type": self.model_type,
            "architecture": ", ".join(cfg.architectures or []),
            "run": self.model_id,  # reports and caches label a trace by its run; an HF model has no steps
            "step": None,
            "config": json.loads(cfg.to_json_string(use_diff=False)),
            "n_layers": self.n_layers,
            "n_experts": self.n_experts,
            "top_k": self.top_k,
            "layer_blocks": self.layer_blocks,
            "dtype": self.dtype,
            "device": self.device,
            "transformers": transformers.__version__,
        }


def load_hf_model(
    path: str | Path,
    device: str = "auto",
    dtype: str = "auto",
    device_map: str | dict | None = None,
) -> HFMoEModel:
    """Load a local Hugging Face MoE folder (config.json, *.safetensors, tokenizer files), eval mode.

    device: "cpu", "cuda", "cuda:i" or "auto" (cuda when available); ignored when `device_map` is given.
    dtype: "auto" (bfloat16 on GPU, float32 on CPU), "float32", "bfloat16" or "float16".
    device_map: e.g. "auto" to spread a model larger than one card over all GPUs (and CPU) with accelerate.
    ValueError (one line) for a missing/corrupted folder, a non-MoE or unsupported architecture, missing
    safetensors weights, weights that do not match the config, or a tokenizer without offsets.
    """
    path = Path(path).expanduser().resolve()
    cfg_dict = read_config(path)
    model_type, spec = family_of(cfg_dict, path)
    safetensors_params(path)  # fail early and clearly on missing/truncated weights
    try:
        import transformers
    except ImportError:
        raise ValueError("loading Hugging Face models needs transformers: pip install 'moe-explorer[hf]'") from None
    found = tuple(int(p) for p in transformers.__version__.split(".")[:2] if p.isdigit())
    if found < MIN_TRANSFORMERS:
        need = ".".join(map(str, MIN_TRANSFORMERS))
        raise ValueError(f"the HF adapter needs transformers>={need} (found {transformers.__version__})")

    if device_map is None:
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: no CUDA device is available")
        placement = device
    else:
        placement = f"device_map={device_map}" if isinstance(device_map, str) else "device_map"
    if dtype == "auto":
        dtype = "float32" if placement == "cpu" else "bfloat16"
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be auto, {', '.join(DTYPES)}; got {dtype!r}")

    local = {"local_files_only": True, "trust_remote_code": False}
    try:
        config = transformers.AutoConfig.from_pretrained(path, **local)
    except Exception as exc:  # transformers raises many kinds here; the user needs one line
        raise ValueError(f"{path}: cannot read the model config ({_first_line(exc)})") from None
    try:
        model, info = transformers.AutoModelForCausalLM.from_pretrained(
            path,
            config=config,
            use_safetensors=True,
            dtype=DTYPES[dtype],
            device_map=device_map if device_map is not None else (None if placement == "cpu" else placement),
            output_loading_info=True,
            **local,
        )
    except Exception as exc:
        raise ValueError(f"{path}: cannot load the weights ({_first_line(exc)})") from None
    missing = sorted(info.get("missing_keys") or [])
    if missing:  # transformers would silently initialise them randomly: the routing would be noise
        shown = ", ".join(missing[:3]) + (" ..." if len(missing) > 3 else "")
        raise ValueError(f"{path}: the weights lack {len(missing)} tensor(s) ({shown}): incomplete checkpoint")
    model.eval()
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(path, **local)
    except Exception as exc:
        raise ValueError(f"{path}: cannot load the tokenizer ({_first_line(exc)})") from None
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"{path}: the tokenizer has no fast (tokenizer.json) version, needed for character offsets")

    layers = find_moe_layers(model, spec)
    if not layers:
        raise ValueError(f"{path}: no {spec.router_class} modules found: not a {spec.name} MoE model")
    return HFMoEModel(model, tokenizer, model_type, spec, str(path), layers, dtype=dtype, device=placement)


def find_moe_layers(model: torch.nn.Module, spec: FamilySpec) -> list[HFMoELayer]:
    """The MoE blocks of `model` in block order: the parents of the family's router modules."""
    modules = dict(model.named_modules())
    layers = []
    for name, module in modules.items():
        if type(module).__name__ != spec.router_class:
            continue
        parent_name = name.rsplit(".", 1)[0]
        parent = modules[parent_name]
        numbers = [int(part) for part in parent_name.split(".") if part.isdigit()]
        if not numbers or not hasattr(parent, "experts"):
            raise ValueError(f"unexpected module layout around {name}: cannot find its block index and experts")
        layers.append(
            HFMoELayer(
                block=numbers[-1],
                router=module,
                experts=parent.experts,
                shared=getattr(parent, spec.shared_attr) if spec.shared_attr else None,
                shared_gate=getattr(parent, spec.shared_gate_attr) if spec.shared_gate_attr else None,
            )
        )
    return sorted(layers, key=lambda layer: layer.block)


# --- recording ------------------------------------------------------------------------------------------------


def router_tensors(spec: FamilySpec, router: torch.nn.Module, out: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
    """From a router's output (logits_TE, weights_TK, indices_TK), the per-token arrays of one layer:
    experts/weights/scores_k/biased_k/flips (T, K) in rank order, scores (T, E) float32."""
    if not (isinstance(out, tuple) and len(out) >= 3 and out[2].ndim == 2 and not out[2].is_floating_point()):
        raise ValueError(  # a transformers version that routes differently: never record garbage
            f"{type(router).__name__} does not return (logits, weights, indices) as this adapter expects "
            f"(tested with transformers {'.'.join(map(str, MIN_TRANSFORMERS))})"
        )
    logits_TE, weights_TK, idx_TK = (t.detach() for t in out[:3])
    logits_TE = logits_TE.reshape(idx_TK.shape[0], -1).float()
    scores_TE = logits_TE.sigmoid() if spec.score_fn == "sigmoid" else logits_TE.softmax(dim=-1)
    biased_TE = scores_TE
    if spec.bias_attr is not None:
        biased_TE = scores_TE + getattr(router, spec.bias_attr).float()
    # rank order: highest biased score first (stable, so already-sorted routers keep their order)
    order_TK = biased_TE.gather(1, idx_TK).argsort(dim=-1, descending=True, stable=True)
    idx_TK = idx_TK.gather(1, order_TK)
    weights_TK = weights_TK.float().gather(1, order_TK)
    flips_TK = torch.zeros_like(idx_TK, dtype=torch.bool)
    if spec.unbiased_choice is not None:
        unbiased_TK = spec.unbiased_choice(router, scores_TE)
        flips_TK = ~(idx_TK.unsqueeze(-1) == unbiased_TK.unsqueeze(-2)).any(dim=-1)
    return {
        "experts": idx_TK,
        "weights": weights_TK,
        "scores_k": scores_TE.gather(1, idx_TK),
        "biased_k": biased_TE.gather(1, idx_TK),
        "flips": flips_TK,
        "scores": scores_TE,
    }


class HFRoutingRecorder:
    """Forward hooks on the routers, experts and shared experts of an `HFMoEModel`.

    Before each forward, `next_forward(keep, hidden)` says which of its T = B*S tokens (row-major) to keep
    (the others are prefix tokens such as BOS) and of which to keep the router input; `result()` stacks
    everything over forwards and layers, on the CPU."""

    def __init__(self, hf: HFMoEModel, keep_scores: bool = True):
        self.hf = hf
        self.keep_scores = keep_scores
        n = hf.n_layers
        self._router: list[list[dict[str, torch.Tensor]]] = [[] for _ in range(n)]
        self._routed_norm: list[list[torch.Tensor]] = [[] for _ in range(n)]  # (T,) per forward
        self._shared_norm: list[list[torch.Tensor]] = [[] for _ in range(n)]
        self._shared_gate: list[list[torch.Tensor]] = [[] for _ in range(n)]
        self._hidden: list[list[torch.Tensor]] = [[] for _ in range(n)]  # (m, D) float16 per forward
        self._keep: dict[torch.device, torch.Tensor] = {}
        self._keep_hidden: dict[torch.device, torch.Tensor] = {}
        self._keep_cpu = self._hidden_cpu = torch.zeros(0, dtype=torch.long)
        self._handles: list[Any] = []

    def __enter__(self) -> HFRoutingRecorder:
        try:
            for i, layer in enumerate(self.hf.layers):
                self._handles.append(layer.router.register_forward_hook(partial(self._on_router, i)))
                self._handles.append(layer.experts.register_forward_hook(partial(self._on_norm, self._routed_norm, i)))
                if layer.shared is not None:
                    hook = partial(self._on_norm, self._shared_norm, i)
                    self._handles.append(layer.shared.register_forward_hook(hook))
                if layer.shared_gate is not None:
                    self._handles.append(layer.shared_gate.register_forward_hook(partial(self._on_gate, i)))
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc_info) -> bool:
        self.remove()
        return False

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def next_forward(self, keep: np.ndarray, keep_hidden: np.ndarray) -> None:
        """Local token rows (0..T-1) of the next forward to record, and the subset whose router inputs to keep."""
        self._keep_cpu = torch.as_tensor(keep, dtype=torch.long)
        self._hidden_cpu = torch.as_tensor(keep_hidden, dtype=torch.long)
        self._keep.clear()
        self._keep_hidden.clear()

    def _rows(self, cache: dict, rows: torch.Tensor, device: torch.device) -> torch.Tensor:
        if device not in cache:  # with device_map="auto" layers live on different devices
            cache[device] = rows.to(device)
        return cache[device]

    def _on_router(self, i: int, module, args, out) -> None:
        x_TD = args[0].detach()
        x_TD = x_TD.reshape(-1, x_TD.shape[-1])
        keep = self._rows(self._keep, self._keep_cpu, x_TD.device)
        parts = router_tensors(self.hf.spec, module, out)
        if not self.keep_scores:
            parts["entropy"] = _entropy(parts["scores"])
            del parts["scores"]
        # to the CPU at once: a long text through a big model would otherwise pile up GBs on the GPU
        self._router[i].append({k: v.index_select(0, keep).cpu() for k, v in parts.items()})
        if len(self._hidden_cpu):
            rows = self._rows(self._keep_hidden, self._hidden_cpu, x_TD.device)
            self._hidden[i].append(x_TD.index_select(0, rows).float().clamp(-FP16_MAX, FP16_MAX).half().cpu())

    def _on_norm(self, store: list[list[torch.Tensor]], i: int, module, args, out) -> None:
        out = out[0] if isinstance(out, tuple) else out
        out_TD = out.detach().reshape(-1, out.shape[-1])
        keep = self._rows(self._keep, self._keep_cpu, out_TD.device)
        store[i].append(torch.linalg.vector_norm(out_TD.index_select(0, keep).float(), dim=-1).cpu())  # (T,)

    def _on_gate(self, i: int, module, args, out) -> None:
        g_T = out.detach().reshape(-1).float().sigmoid()
        self._shared_gate[i].append(g_T.index_select(0, self._rows(self._keep, self._keep_cpu, g_T.device)).cpu())

    def result(self) -> dict[str, np.ndarray | None]:
        """experts/weights/scores_k/biased_k/flips (n, L, K), scores (n, L, E) or None, shared_share/entropy
        (n, L), hidden (M, L, D) float16 or None, in stream order (forward after forward)."""
        if not self._router[0]:
            raise ValueError("the recorder saw no forward pass")
        per_layer = [self._layer_result(i) for i in range(self.hf.n_layers)]
        out: dict[str, np.ndarray | None] = {k: np.stack([p[k] for p in per_layer], axis=1) for k in per_layer[0]}
        out.setdefault("scores", None)
        out["hidden"] = None
        if self._hidden[0]:
            out["hidden"] = np.stack([torch.cat(chunks).numpy() for chunks in self._hidden], axis=1)
        return out

    def _layer_result(self, i: int) -> dict[str, np.ndarray]:
        parts = {k: torch.cat([p[k] for p in self._router[i]]) for k in self._router[i][0]}
        if "scores" in parts:
            parts["entropy"] = _entropy(parts["scores"])
        routed_T = torch.cat(self._routed_norm[i])
        shared_T = torch.zeros_like(routed_T)
        if self._shared_norm[i]:
            shared_T = torch.cat(self._shared_norm[i])
            if self._shared_gate[i]:
                shared_T = shared_T * torch.cat(self._shared_gate[i])
        total_T = routed_T + shared_T
        parts["shared_share"] = torch.where(total_T > 0, shared_T / total_T.clamp_min(1e-30), 0.0)
        return {k: v.numpy() for k, v in parts.items()}


def _entropy(scores_TE: torch.Tensor) -> torch.Tensor:
    """Router entropy per token, as analysis.recorder: H(p) with p = scores normalised over all experts."""
    p_TE = scores_TE / scores_TE.sum(dim=-1, keepdim=True).clamp_min(1e-30)
    return -(p_TE * p_TE.clamp_min(1e-30).log()).sum(dim=-1)


def _prefix_tokens(tokenizer) -> list[int]:
    """The ids the tokenizer puts before a text by itself (e.g. [BOS]; [] for most Qwen tokenizers)."""
    with_special = tokenizer("a", add_special_tokens=True)["input_ids"]
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    for start in range(len(with_special) - len(plain) + 1):
        if with_special[start : start + len(plain)] == plain:
            return list(with_special[:start])
    return []


def tokenize(tokenizer, text: str) -> tuple[list[int], list[tuple[int, int]], list[str]]:
    """ids, character spans and display texts of `text` (no special tokens)."""
    # verbose=False: a long document is fine here (it is windowed), no "longer than max length" warning
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    ids, spans = list(enc["input_ids"]), [tuple(s) for s in enc["offset_mapping"]]
    texts = [text[s:e] if e > s else tokenizer.decode([t]) for t, (s, e) in zip(ids, spans)]
    return ids, spans, texts


def record_hf(
    hf: HFMoEModel,
    docs: str | Sequence[str] | Sequence[Any],
    *,
    labels: Sequence[str] | None = None,
    batch_size: int = 8,
    window: int = 512,
    max_hidden: int = 2000,
    keep_scores: bool = True,
    add_prefix: bool = True,
    meta: dict[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> RoutingTrace:
    """Route `docs` through a loaded HF model and return their `RoutingTrace` (meta["source"] = "hf").

    docs/labels as `analysis.recorder.record`. window: text tokens per forward sequence (plus the tokenizer's
    prefix tokens such as BOS when `add_prefix`); capped at the model's max_position_embeddings.
    max_hidden: router inputs kept (0 = none), a seeded random subsample when there are more tokens.
    keep_scores: keep the (n, L, E) scores over all experts (n*L*E*4 bytes). progress(done, total) per batch.
    """
    entries = normalise_docs(docs, labels)
    tok = hf.tokenizer
    prefix = _prefix_tokens(tok) if add_prefix else []
    max_pos = getattr(hf.model.config, "max_position_embeddings", None) or window + len(prefix)
    window = min(window, max_pos - len(prefix))
    if window < 1:
        raise ValueError(f"window must be >= 1 token, got {window}")

    columns: dict[str, list] = {c: [] for c in ("doc_id", "position", "token_id", "token_text")}
    columns.update(char_start=[], char_end=[], label=[])
    doc_lengths = []
    for doc_id, text, label in entries:
        ids, spans, texts = tokenize(tok, text)
        if not ids:
            raise ValueError(f"document {doc_id!r} has no tokens")
        doc_lengths.append(len(ids))
        columns["doc_id"] += [doc_id] * len(ids)
        columns["position"] += range(len(ids))
        columns["token_id"] += ids
        columns["token_text"] += texts
        columns["char_start"] += [s for s, _ in spans]
        columns["char_end"] += [e for _, e in spans]
        columns["label"] += [label] * len(ids)
    token_ids = np.asarray(columns["token_id"], dtype=np.int64)
    n = len(token_ids)
    vocab = hf.model.config.vocab_size
    if max(token_ids.max(), max(prefix, default=0)) >= vocab:
        raise ValueError(f"the tokenizer does not match the model: token id {token_ids.max()} >= vocab_size {vocab}")

    batches = window_batches(doc_lengths, window, batch_size)
    want_hidden = np.zeros(n, dtype=bool)
    if max_hidden > 0:
        keep = np.arange(n) if n <= max_hidden else np.random.default_rng(0).choice(n, max_hidden, replace=False)
        want_hidden[keep] = True
    order = np.concatenate([rows.reshape(-1) for rows in batches])  # stream row -> global token row
    device = hf.input_device
    P = len(prefix)
    done = 0
    lock = model_lock(hf.model)  # one recording of a shared model at a time (two app sessions, one model)
    lock.acquire()
    was_training = hf.model.training
    hf.model.eval()  # no router jitter or dropout: the routing of the checkpoint
    try:
        with torch.inference_mode(), HFRoutingRecorder(hf, keep_scores=keep_scores) as rec:
            for rows_BS in batches:
                B, S = rows_BS.shape
                prefix_BP = np.tile(np.asarray(prefix, dtype=np.int64), (B, 1))
                ids_BS = np.concatenate([prefix_BP, token_ids[rows_BS]], axis=1)  # (B, P + S)
                local = (np.arange(B)[:, None] * (S + P) + P + np.arange(S)).reshape(-1)  # text rows of B*(P+S)
                rec.next_forward(local, local[want_hidden[rows_BS.reshape(-1)]])
                # the base model: no LM head, so no (B, S, vocab) logits
                hf.model.base_model(input_ids=torch.as_tensor(ids_BS, device=device), use_cache=False)
                done += rows_BS.size
                if progress is not None:
                    progress(done, n)
            res = rec.result()
    finally:
        hf.model.train(was_training)
        lock.release()

    # stream order -> document order
    inverse = np.empty(n, dtype=np.int64)
    inverse[order] = np.arange(n)
    arrays = {k: res[k][inverse] for k in ("experts", "weights", "scores_k", "biased_k", "flips")}
    arrays.update(shared_share=res["shared_share"][inverse], entropy=res["entropy"][inverse])
    scores = None if res["scores"] is None else res["scores"][inverse]
    hidden = hidden_rows = None
    if res["hidden"] is not None:
        global_rows = order[want_hidden[order]]  # stream order of the kept rows
        by_row = np.argsort(global_rows)
        hidden, hidden_rows = res["hidden"][by_row], global_rows[by_row]
    trace_meta = {
        **hf.meta(),
        "block_size": int(window),
        "windowing": "non-overlapping",
        "prefix_tokens": [int(t) for t in prefix],
        **(meta or {}),
    }
    return build_trace(
        tokens=columns,
        texts={doc_id: text for doc_id, text, _ in entries},
        meta=trace_meta,
        scores=scores,
        hidden=hidden,
        hidden_rows=hidden_rows,
        **arrays,
    )


# --- CLI hooks (wired by analysis/cli.py and app/launch.py) -----------------------------------------------------


def add_hf_arguments(parser: argparse.ArgumentParser, path_arg: bool = True) -> None:
    """--hf PATH (unless path_arg is False, e.g. when the parser has its own --hf), --hf-device, --hf-dtype,
    --hf-device-map, --hf-window."""
    if path_arg:
        parser.add_argument("--hf", default=None, metavar="PATH", help="a local Hugging Face MoE model folder")
    parser.add_argument(
        "--hf-device", default=None, help="cpu, cuda, cuda:N or auto (default: --device when given, else auto)"
    )
    parser.add_argument("--hf-dtype", default="auto", choices=["auto", *DTYPES], help="auto: bfloat16 on GPU")
    parser.add_argument(
        "--hf-device-map", default=None, help='accelerate device map, e.g. "auto" to spread the model over all GPUs'
    )
    parser.add_argument("--hf-window", type=int, default=512, help="tokens per forward sequence")


def load_from_args(args: argparse.Namespace, path: str | None = None) -> HFMoEModel:
    """`load_hf_model` with the --hf-* options (path defaults to args.hf)."""
    device = getattr(args, "hf_device", None) or getattr(args, "device", None) or "auto"
    return load_hf_model(
        path or args.hf,
        device=device,
        dtype=getattr(args, "hf_dtype", "auto"),
        device_map=getattr(args, "hf_device_map", None),
    )


def trace_from_hf_args(args: argparse.Namespace, docs: Any) -> RoutingTrace:
    """Load args.hf with the --hf-* options and record `docs` (batch size from --batch-size when present)."""
    hf = load_from_args(args)
    return record_hf(
        hf, docs, batch_size=getattr(args, "batch_size", None) or 8, window=getattr(args, "hf_window", 512)
    )


# --- tiny random checkpoints (tests and demos, e.g. the app's AppTest; nothing downloaded) -----------------------

TINY_TEXTS = [
    "The quick brown fox jumps over the lazy dog. " * 3,
    "def add(a, b):\n    return a + b\n" * 3,
    "Les experts du routeur choisissent les jetons, déjà vu. " * 2,
]
_TINY_COMMON: dict[str, Any] = {
    "vocab_size": 300,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 48,
    "max_position_embeddings": 64,
    "tie_word_embeddings": False,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "pad_token_id": 1,
    "num_experts_per_tok": 2,
}
_TINY_MLA = {"num_key_value_heads": 4, "kv_lora_rank": 16, "q_lora_rank": 16, "qk_rope_head_dim": 8}
_TINY_MLA.update(qk_nope_head_dim=8, v_head_dim=8)
_TINY_SHARED = {"moe_intermediate_size": 16, "n_shared_experts": 1, "n_group": 4, "topk_group": 2}
TINY_CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {  # family -> (transformers config class, overrides)
    "mixtral": ("MixtralConfig", {"num_local_experts": 4}),
    "qwen2_moe": (
        "Qwen2MoeConfig",
        {"num_experts": 6, "moe_intermediate_size": 16, "shared_expert_intermediate_size": 24},
    ),
    "qwen3_moe": ("Qwen3MoeConfig", {"num_experts": 6, "moe_intermediate_size": 16, "head_dim": 8}),
    "olmoe": ("OlmoeConfig", {"num_experts": 8}),
    "deepseek_v3": (
        "DeepseekV3Config",
        {
            **_TINY_MLA,
            **_TINY_SHARED,
            "n_routed_experts": 8,
            "first_k_dense_replace": 0,
            "routed_scaling_factor": 2.5,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
        },
    ),  # fmt: skip
    "glm4_moe": (
        "Glm4MoeConfig",
        {**_TINY_SHARED, "head_dim": 8, "n_routed_experts": 8, "first_k_dense_replace": 0},
    ),
    "deepseek_v2": (  # a dense first block: one MoE layer
        "DeepseekV2Config",
        {
            **_TINY_MLA,
            **_TINY_SHARED,
            "n_routed_experts": 8,
            "first_k_dense_replace": 1,
            "topk_method": "group_limited_greedy",
        },
    ),  # fmt: skip
    "gpt_oss": ("GptOssConfig", {"num_local_experts": 4, "head_dim": 8}),
    "granitemoe": ("GraniteMoeConfig", {"num_local_experts": 4}),
    "phimoe": ("PhimoeConfig", {"num_local_experts": 4}),
}


def tiny_hf_config(family: str):
    """A tiny config of a supported family: hidden 32, 2 blocks, 4-8 experts, top-2, vocab 300."""
    import transformers

    cls_name, overrides = TINY_CONFIGS[family]
    return getattr(transformers, cls_name)(**{**_TINY_COMMON, **overrides})


def save_tiny_hf_model(
    folder: str | Path,
    family: str = "olmoe",
    *,
    seed: int = 0,
    bias: torch.Tensor | None = None,
    texts: Sequence[str] = TINY_TEXTS,
) -> Path:
    """Write a random-weight model of `family` (safetensors) and a byte-level BPE tokenizer trained on `texts`
    (vocab 300, puts <s> before every text) into `folder`. Routers get N(0, 1) weights so top-k choices are far
    from ties; `bias` sets DeepSeek-V3's e_score_correction_bias in every MoE layer."""
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    folder = Path(folder)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(list(texts), trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")

    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(tiny_hf_config(family)).eval()
    spec = FAMILIES[family]
    with torch.no_grad():
        for layer in find_moe_layers(model, spec):
            layer.router.weight.normal_(0, 1.0)
            if bias is not None:
                getattr(layer.router, spec.bias_attr).copy_(bias)
    model.save_pretrained(folder, safe_serialization=True)
    fast.save_pretrained(folder)
    return folder


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
