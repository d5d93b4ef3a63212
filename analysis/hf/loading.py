"""Load a local Hugging Face MoE checkpoint (optional extra `hf`: transformers, accelerate) and find its MoE
layers; tokenize text with character offsets.

Nothing is downloaded: every load uses `local_files_only=True`, `use_safetensors=True` (no pickle is ever read)
and `trust_remote_code=False` (no code from the folder runs).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from analysis.hf.families import MIN_TRANSFORMERS, FamilySpec
from analysis.hf.folder import DTYPES, family_of, read_config, safetensors_params
from moe_core.devices import resolve_device


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
    device: str = "cpu"  # "cpu", "cuda:i" or "device_map=auto"

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

    device: "cpu", "cuda", "cuda:i" or "auto" (cuda when available), resolved by `moe_core.devices.resolve_device`
        ("cuda" is cuda:0); ignored when `device_map` is given.
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
        placement = str(resolve_device(device))  # ValueError for an unknown name or CUDA without a GPU
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


def prefix_tokens(tokenizer) -> list[int]:
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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
