"""Record routing: text in, `RoutingTrace` out, for our models (`record`) and Hugging Face ones (`record_hf`),
both through the one pipeline in `analysis.recording.pipeline`."""

from analysis.recording.hf_hooks import HFRoutingRecorder, record_hf
from analysis.recording.native import RoutingRecorder, record
from analysis.recording.pipeline import MAX_TOKENS, model_lock, normalise_docs, window_batches

__all__ = [
    "MAX_TOKENS",
    "HFRoutingRecorder",
    "RoutingRecorder",
    "model_lock",
    "normalise_docs",
    "record",
    "record_hf",
    "window_batches",
]
