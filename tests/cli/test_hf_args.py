"""The --hf-* flags of `moe-explorer route`/`report` (app/cli/hf_args.py) load and record a local HF model."""

import argparse

import pytest

pytest.importorskip("transformers", reason="the HF adapter needs the optional extra: pip install .[hf]")

from app.cli.hf_args import add_hf_arguments, trace_from_hf_args  # noqa: E402
from tests.hf_fixtures import TINY_TEXTS, save_tiny_hf_model  # noqa: E402


def test_flags_load_and_record(tmp_path):
    folder = save_tiny_hf_model(tmp_path / "qwen2_moe", "qwen2_moe")
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--device", default="auto")  # route/report have one: --hf-device falls back to it
    add_hf_arguments(parser)
    args = parser.parse_args(["--hf", str(folder), "--device", "cpu", "--hf-window", "20"])
    assert (args.hf_device, args.hf_dtype, args.hf_device_map) == (None, "auto", None)
    trace = trace_from_hf_args(args, TINY_TEXTS[:2])
    assert trace.meta["block_size"] == 20 and trace.meta["dtype"] == "float32" and trace.meta["device"] == "cpu"
    assert trace.meta["prefix_tokens"] == [0] and trace.meta["family"] == "Qwen2-MoE"
    no_path = argparse.ArgumentParser()
    add_hf_arguments(no_path, path_arg=False)  # a parser with its own --hf (the app's launcher)
    assert not hasattr(no_path.parse_args([]), "hf")
