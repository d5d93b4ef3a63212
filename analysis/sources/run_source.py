"""`RunSource`: one of our run directories (moe_core.run.Run) as a model source.

The run is opened on first use; models are loaded per checkpoint step and the last few are kept.
Checkpoints, traces, history and eval docs are read fresh on every call: a training run adds them while the app
runs. Its steps are those with weights (checkpoints/) and those with only a stored eval trace (eval/): the shipped
run keeps weights at its last step and the eval documents' routing at every checkpoint. At a step without
weights, `record` serves the eval documents from the stored trace and refuses other text with a one-line reason.
"""

from __future__ import annotations

import dataclasses
import re
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
TRACE_RE = re.compile(r"^trace_step_(\d+)\.parquet$")  # moe_core.run.Run.trace_path


def no_weights_reason(step: int, model_steps: list[int], has_trace: bool) -> str:
    """Why new text cannot be routed at `step` (one line, with the step to choose instead)."""
    if not model_steps:
        return NO_CHECKPOINT
    nearest = min(model_steps, key=lambda s: (abs(s - step), -s))
    choose = f"choose step {nearest} to route new text"
    if has_trace:
        return f"step {step} has only the recorded eval documents, no weights: {choose}"
    return f"step {step} has no weights: {choose}"


class RunSource:
    """A run directory: its steps are checkpoints and stored traces; it has a training history and eval docs."""

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
        route = YES if self.model_steps() else Capability(False, NO_CHECKPOINT)
        return Capabilities(
            route_text=route,
            steps=YES,
            history=YES,
            stored_traces=YES,
            eval_docs=YES,
            router_biases=route,
            causal=route,
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

    def model_steps(self) -> list[int]:
        """Checkpoint steps (weights on disk), ascending."""
        return sorted(int(s) for s in self.run.checkpoints())

    def trace_steps(self) -> list[int]:
        """Steps with a stored eval trace (eval/trace_step_*.parquet), ascending."""
        folder = Path(self.path) / "eval"
        if not folder.is_dir():
            return []
        return sorted(int(m.group(1)) for p in folder.iterdir() if (m := TRACE_RE.match(p.name)) and p.is_file())

    def steps(self) -> list[int]:
        return sorted(set(self.model_steps()) | set(self.trace_steps()))

    def default_step(self) -> int | None:
        steps = self.model_steps() or self.steps()
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
            if step not in (model_steps := self.model_steps()):
                raise ValueError(no_weights_reason(step, model_steps, self.run.trace_path(step).is_file()))
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
        """The routing of `docs` at `step`; at a step with only a stored trace, the eval documents among `docs`
        come from it (ValueError, one line, when any other text is asked for)."""
        if step is not None and int(step) not in self.model_steps():
            stored = self.stored_trace(int(step))
            if stored is not None:
                return self.from_stored(stored, docs, int(step))
        from analysis.recording import record

        meta = {"run": Path(self.path).name, "step": step}
        return record(self.model(step), self.tokenizer, as_docs(docs), meta=meta, progress=progress)

    def from_stored(self, stored, docs: Sequence[DocTuple], step: int):
        """`docs` cut out of the stored trace at `step` (matched by text; renamed to their doc_id and label)."""
        from analysis.trace import concat

        by_text = {text: doc_id for doc_id, text in stored.texts.items()}
        if not docs or any(text not in by_text for _, _, text in docs):
            raise ValueError(no_weights_reason(step, self.model_steps(), True))
        parts = []
        for doc_id, label, text in docs:
            part = stored.select_docs([by_text[text]])
            tokens = part.tokens.assign(doc_id=str(doc_id), label=str(label))
            parts.append(dataclasses.replace(part, tokens=tokens, texts={str(doc_id): text}))
        trace = parts[0] if len(parts) == 1 else concat(parts)
        trace.meta = {**trace.meta, "run": Path(self.path).name, "step": step}
        return trace

    def router_biases(self, step: int | None) -> np.ndarray:
        return self.model(step).router_biases().detach().cpu().numpy()

    def causal_model(self, step: int | None = None):
        from analysis.causal.target import CausalTarget

        step = self.default_step() if step is None else int(step)
        if not self.model_steps():
            raise ValueError(NO_CHECKPOINT)
        return CausalTarget(self.model(step), self.tokenizer, Path(self.path).name, step)

    # --- what the run directory holds ------------------------------------------------------------------------

    def history(self) -> pd.DataFrame:
        """history/train.jsonl (empty while no step is logged)."""
        return sorted_frame(self.run.history())

    def eval_history(self) -> pd.DataFrame:
        return sorted_frame(self.run.eval_history())

    def training_config(self) -> dict:
        """run.json's model and train settings (and its balancing summary when it has one)."""
        info = self.run.info
        return {key: info[key] for key in ("model", "train", "balance") if key in info}

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

    def aggregates(self, step: int | None):
        """`TraceAggregates` of the stored eval trace at `step`; None when there is none."""
        from analysis.sources.aggregates import TraceAggregates

        trace = self.stored_trace(step)
        return None if trace is None else TraceAggregates(trace)

    def saturation(self) -> pd.DataFrame | None:
        from analysis import tables

        experts = {s: trace.experts_array() for s in self.trace_steps() if (trace := self.stored_trace(s)) is not None}
        return tables.saturation_table(experts) if experts else None

    def projection_cache_dir(self) -> Path:
        return Path(self.path) / "projections"  # precomputed for the shipped run; ignored when read-only
