"""The --hf-* flags of `moe-explorer route` and `report`: a local Hugging Face MoE model instead of a run.

`analysis.hf` loads the model and `analysis.recording.record_hf` records it (docs/HF_MODELS.md); this
module only maps flags to them.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from analysis.hf import DTYPES, load_hf_model
from analysis.recording import record_hf

if TYPE_CHECKING:
    from analysis.hf import HFMoEModel
    from analysis.trace import RoutingTrace


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
