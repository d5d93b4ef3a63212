"""`HFSource`: a local Hugging Face MoE folder (config.json, safetensors, tokenizer) as a model source.

One set of weights: no steps, no training history, no eval documents, no stored traces. The folder is described
without loading it (`hf_folder_info`); the model (and transformers) load on first routing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from analysis.sources.base import YES, Capabilities, Capability, DocTuple, ModelCard, as_docs

NO_STEPS = "Hugging Face model: one set of weights, no checkpoints or training history."
NO_HISTORY = "Imported Hugging Face models come without training history; choose one of our runs in the sidebar."
NO_STORED = "A Hugging Face folder has no recorded traces: its routing is recorded when a page needs it."
NO_EVAL_DOCS = "A Hugging Face folder has no held-out labelled documents: the built-in samples stand in."


class HFSource:
    """A local Hugging Face MoE folder; loaded with `analysis.hf.load_hf_model(path, device, dtype)` on first use."""

    kind = "hf"

    def __init__(self, path: str | Path, device: str = "auto", dtype: str = "auto"):
        self.path = str(Path(path).resolve())
        self.name = Path(self.path).name
        self.device, self.dtype = device, dtype
        self._info: dict[str, Any] | None = None
        self._hf = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"HFSource({self.path!r})"

    @property
    def info(self) -> dict[str, Any]:
        """hf_folder_info of the folder (read once; never raises: `supported` and `reason` say what is wrong)."""
        if self._info is None:
            from analysis.hf.folder import hf_folder_info  # reads config.json and safetensors headers only

            self._info = hf_folder_info(self.path)
        return self._info

    @property
    def hf(self):
        """The loaded `HFMoEModel` (loaded once, on first use)."""
        with self._lock:
            if self._hf is None:
                from analysis.hf.loading import load_hf_model

                self._hf = load_hf_model(self.path, device=self.device, dtype=self.dtype)
            return self._hf

    @property
    def capabilities(self) -> Capabilities:
        model = YES if self.info["supported"] else Capability(False, f"Cannot load this model: {self.info['reason']}")
        return Capabilities(
            route_text=model,
            steps=Capability(False, NO_STEPS),
            history=Capability(False, NO_HISTORY),
            stored_traces=Capability(False, NO_STORED),
            eval_docs=Capability(False, NO_EVAL_DOCS),
            router_biases=model,
            causal=self._causal(model),
        )

    def _causal(self, model: Capability) -> Capability:
        """Available with the family's hooks (`analysis.causal.hf_interventions`); the reason lists what this
        family cannot do ('' when everything can be done)."""
        if not model:
            return model
        from analysis.causal.hf_interventions import unsupported
        from analysis.hf.families import FAMILIES

        return Capability(True, unsupported(FAMILIES[self.info["model_type"]]))

    def card(self) -> ModelCard:
        info = self.info
        n_params = info.get("n_params")
        metrics = (
            ("Layers", str(info.get("n_layers", "–"))),
            ("Experts × top-k", f"{info.get('n_experts', '–')} × {info.get('top_k', '–')}"),
            ("Parameters", f"{n_params / 1e6:.2f} M" if n_params else "–"),
        )
        rows = tuple((field, str(value)) for field, value in info.items())
        title = f"Hugging Face model: {info['model_id']}"
        return ModelCard(title, None, info.get("n_experts"), info.get("top_k"), metrics, rows)

    def steps(self) -> list[int]:
        return []

    def model_steps(self) -> list[int]:
        return []

    def default_step(self) -> int | None:
        return None

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        from analysis.hf.loading import tokenize

        return tokenize(self.hf.tokenizer, text)[1]

    def record(
        self,
        docs: Sequence[DocTuple],
        step: int | None = None,
        progress: Callable[[int, int], None] | None = None,
    ):
        """The routing of `docs` (`step` must be None: the folder has one set of weights)."""
        if step is not None:
            raise ValueError(f"{self.name} has no checkpoints (asked for step {step})")
        from analysis.recording import record_hf

        return record_hf(self.hf, as_docs(docs), meta={"run": self.name}, progress=progress)

    def router_biases(self, step: int | None) -> np.ndarray:
        """e_score_correction_bias where the family has one; zeros for the other routers."""
        hf = self.hf
        attr = hf.spec.bias_attr
        rows = [getattr(layer.router, attr, None) if attr else None for layer in hf.layers]
        return np.stack([np.zeros(hf.n_experts) if b is None else b.detach().float().cpu().numpy() for b in rows])

    def causal_model(self, step: int | None = None):
        """An `HFCausalTarget` of the loaded model (ablation, logit lens, what-if through forward hooks)."""
        if step is not None:
            raise ValueError(f"{self.name} has no checkpoints (asked for step {step})")
        causal = self.capabilities.causal
        if not causal:
            raise ValueError(causal.reason)
        from analysis.causal.hf_interventions import HFCausalTarget

        return HFCausalTarget(self.hf, self.name)

    def history(self) -> None:
        return None

    def eval_history(self) -> None:
        return None

    def training_config(self) -> None:
        return None

    def stored_trace(self, step: int | None) -> None:
        return None

    def eval_docs(self) -> list[DocTuple]:
        return []

    def aggregates(self, step: int | None) -> None:
        return None  # no routing of its own: the app aggregates the documents it records

    def saturation(self) -> None:
        return None

    def projection_cache_dir(self) -> Path:
        return Path(self.path) / "projections"  # as for runs; ignored when the folder is read-only
