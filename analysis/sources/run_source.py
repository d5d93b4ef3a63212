"""`RunSource`: one of our run directories (moe_core.run.Run) as a model source.

The run is opened on first use; models are loaded per checkpoint step and the last few are kept.
Checkpoints, history and eval docs are read fresh on every call: a training run adds them while the app runs.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.sources.base import YES, Capabilities, Capability, DocTuple, ModelCard, as_docs, sorted_frame

NO_CHECKPOINT = (
    "This run has no checkpoint: it is still training (the first one appears when training reaches it), "
    "or it ships as history only, like the balancing-strategy study. Its curves are on Training dynamics."
)


class RunSource:
    """A run directory: checkpoints are its steps; it has a training history, eval docs and stored traces."""

    kind = "run"

    def __init__(self, path: str | Path, torch_threads: int | None = None, max_models: int = 4):
        self.path = str(Path(path).resolve())
        self.torch_threads = torch_threads  # torch.set_num_threads before loading a model (None: leave it)
        self.max_models = max_models  # models kept, one per checkpoint step
        self._run = None
        self._tokenizer = None
        self._models: OrderedDict[int, object] = OrderedDict()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RunSource({self.path!r})"

    @property
    def run(self):
        """The `moe_core.run.Run`, opened on first use; ValueError for a broken run (tried again next time)."""
        if self._run is None:
            from moe_core.run import load_run

            self._run = load_run(self.path)
        return self._run

    @property
    def name(self) -> str:
        return self.run.name

    @property
    def capabilities(self) -> Capabilities:
        route = YES if self.steps() else Capability(False, NO_CHECKPOINT)
        return Capabilities(
            route_text=route, steps=YES, history=YES, stored_traces=YES, eval_docs=YES, router_biases=route
        )

    def card(self) -> ModelCard:
        from moe_core import count_parameters

        cfg, moe = self.run.config, self.run.config.moe
        params = count_parameters(cfg)
        balance = ", ".join(moe.balance.strategies)
        if moe.balance.bias_rate:
            balance += f" (bias rate {moe.balance.bias_rate:g})"
        metrics = (
            ("Layers (MoE)", f"{cfg.n_layer} ({len(cfg.moe_layers)})"),
            ("Experts × top-k", f"{moe.n_experts} × {moe.top_k}"),
            ("Parameters", f"{params['total'] / 1e6:.2f} M"),
            ("Active per token", f"{params['active'] / 1e6:.2f} M"),
        )
        rows = (
            ("model width", str(cfg.n_embd)),
            ("shared experts", f"{moe.n_shared} (hidden {moe.shared_hidden})" if moe.n_shared else "none"),
            ("score function", moe.score_func),
            ("balancing", balance),
            ("context", f"{cfg.block_size} tokens"),
            ("vocabulary", f"{cfg.vocab_size} BPE tokens"),
        )
        return ModelCard(f"Run {self.name}", len(cfg.moe_layers), moe.n_experts, moe.top_k, metrics, rows)

    def steps(self) -> list[int]:
        return sorted(int(s) for s in self.run.checkpoints())

    def default_step(self) -> int | None:
        steps = self.steps()
        return steps[-1] if steps else None

    # --- the model ---------------------------------------------------------------------------------------

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = self.run.tokenizer()
        return self._tokenizer

    def model(self, step: int | None):
        """The model at checkpoint `step` (latest if None), eval mode on the CPU; the last `max_models` are kept."""
        step = self.default_step() if step is None else int(step)
        with self._lock:
            if step in self._models:
                self._models.move_to_end(step)
                return self._models[step]
            if self.torch_threads:
                import torch

                torch.set_num_threads(self.torch_threads)
            model = self.run.load_model(step=step, device="cpu")
            model.eval()
            self._models[step] = model
            while len(self._models) > self.max_models:
                self._models.popitem(last=False)
            return model

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        from moe_core.tokenizer import encode_with_offsets

        return encode_with_offsets(self.tokenizer, text)[1]

    def record(
        self,
        docs: Sequence[DocTuple],
        step: int | None = None,
        progress: Callable[[int, int], None] | None = None,
    ):
        from analysis.recording import record

        meta = {"run": Path(self.path).name, "step": step}
        return record(self.model(step), self.tokenizer, as_docs(docs), meta=meta, progress=progress)

    def router_biases(self, step: int | None) -> np.ndarray:
        return self.model(step).router_biases().detach().cpu().numpy()

    # --- what the run directory holds ------------------------------------------------------------------------

    def history(self) -> pd.DataFrame:
        """history/train.jsonl (empty while no step is logged)."""
        return sorted_frame(self.run.history())

    def eval_history(self) -> pd.DataFrame:
        return sorted_frame(self.run.eval_history())

    def stored_trace(self, step: int | None):
        if step is None:
            return None
        trace_file = Path(self.run.trace_path(step))
        if not trace_file.is_file():
            return None
        from analysis.trace import load

        return load(trace_file)

    def eval_docs(self) -> list[DocTuple]:
        return [(str(d.doc_id), str(d.label), str(d.text)) for d in self.run.eval_docs()]

    def projection_cache_dir(self) -> Path:
        return Path(self.path) / "projections"  # precomputed for the shipped run; ignored when read-only
