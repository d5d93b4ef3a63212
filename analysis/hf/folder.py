"""A Hugging Face model folder before anything is loaded: its config.json, family, safetensors headers and
what the app's model picker shows. No transformers import (and nothing is unpickled)."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

import torch

from analysis.hf.families import FAMILIES, FamilySpec, supported_families

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


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
