"""What every model source gives the app: the `ModelSource` protocol, its `Capabilities` and `ModelCard`.

A model source is where routing comes from: one of our run directories (`RunSource`), a local Hugging Face
folder (`HFSource`), a recorded routing dataset (`DatasetSource`). A page asks a source what it can give
(`source.capabilities`) and never which kind it is; an absent capability carries a one-line reason the page
can show.

Documents are (doc_id, label, text) tuples of strings everywhere in this package.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import pandas as pd

if TYPE_CHECKING:
    import numpy as np

    from analysis.causal.target import CausalTarget
    from analysis.sources.aggregates import RoutingAggregates
    from analysis.trace import RoutingTrace

DocTuple = tuple[str, str, str]  # (doc_id, label, text)


@dataclass(frozen=True)
class Capability:
    """One thing a source can or cannot give; `reason` says why not (one line, shown by the app)."""

    available: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.available


YES = Capability(True)


def as_docs(docs: Sequence[DocTuple]) -> list:
    """(doc_id, label, text) tuples -> `moe_core.corpus.Doc`s, what the recorders take."""
    from moe_core.corpus import Doc

    return [Doc(text=text, label=label, source="app", doc_id=doc_id) for doc_id, label, text in docs]


@dataclass(frozen=True)
class Capabilities:
    """What a source can give. Each field is truthy when available; `.reason` explains an absent one."""

    route_text: Capability  # record the routing of new text (needs a model)
    steps: Capability  # several training steps to choose from (with weights, or with a stored trace only)
    history: Capability  # training history (loss, load, bias per step; validation rows)
    stored_traces: Capability  # routing traces recorded ahead of time (at some steps: see `steps`, `model_steps`)
    eval_docs: Capability  # held-out labelled documents
    router_biases: Capability  # the balancing bias of every router
    # interventions on the model: expert ablation, the expert logit lens, what-if routing (`causal_model`)
    causal: Capability = Capability(False, "this model source cannot intervene on its model's routing")
    # stored documents too many for one trace, read a page at a time: `n_pages()`, `stored_trace(step, page)`
    pages: Capability = Capability(False, "this model source keeps no pages of stored documents")


@dataclass(frozen=True)
class ModelCard:
    """The Overview page's model card."""

    title: str
    n_layers: int | None  # MoE layers (None when unknown without loading the model)
    n_experts: int | None
    top_k: int | None
    metrics: tuple[tuple[str, str], ...] = ()  # headline numbers: (label, value)
    rows: tuple[tuple[str, str], ...] = ()  # settings table: (field, value)


@runtime_checkable
class ModelSource(Protocol):
    """A source of routing. Loads its model(s) lazily and keeps them; safe to share between sessions."""

    name: str  # the model's own name (a run's name, a folder name)
    kind: str  # "run" | "hf" | "dataset": for messages and file names only; never branch on it
    path: str  # absolute path of the folder

    @property
    def capabilities(self) -> Capabilities: ...

    def card(self) -> ModelCard: ...

    def steps(self) -> list[int]:
        """Steps that can be viewed, ascending: those with weights and those with a stored trace only;
        [] when the source has no steps (or none yet)."""
        ...

    def model_steps(self) -> list[int]:
        """The steps of `steps()` whose weights are stored: new text can be routed only there (and, for a
        source without steps, at step None when `capabilities.route_text`); [] when there are none."""
        ...

    def default_step(self) -> int | None:
        """The step shown first: the latest with weights (else the latest); None when there is none."""
        ...

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        """Character spans of the tokens of `text` under the source's tokenizer."""
        ...

    def record(
        self,
        docs: Sequence[DocTuple],
        step: int | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> RoutingTrace:
        """The routing of `docs` through the model at `step`."""
        ...

    def history(self) -> pd.DataFrame | None:
        """Training history, one row per optimizer step, by step; None when the source has none."""
        ...

    def eval_history(self) -> pd.DataFrame | None:
        """Validation rows by step; None when the source has none."""
        ...

    def training_config(self) -> dict | None:
        """{"model": ..., "train": ...} the model was trained with (runs differing only in train.seed are seeds
        of one strategy); None when the source was not trained here."""
        ...

    def stored_trace(self, step: int | None) -> RoutingTrace | None:
        """The eval documents' trace recorded ahead of time at `step`; None when there is none."""
        ...

    def eval_docs(self) -> list[DocTuple]:
        """Held-out labelled documents; [] when there are none."""
        ...

    def router_biases(self, step: int | None) -> np.ndarray:
        """(L, E) balancing biases at `step` (zeros where a router has none)."""
        ...

    def causal_model(self, step: int | None = None) -> CausalTarget:
        """The model at `step` for causal analysis (`analysis.causal`); ValueError with `capabilities.causal`'s
        reason when the source has none."""
        ...

    def projection_cache_dir(self) -> Path | None:
        """Folder for cached PCA/UMAP coordinates; None for no disk cache."""
        ...

    def aggregates(self, step: int | None) -> RoutingAggregates | None:
        """Whole-corpus aggregates (load, co-activation, flow, specialization, top tokens) of the source's own
        routing at `step`: DuckDB counts over a dataset, the metric functions over a stored trace; None when
        the source has no routing of its own there (the app then aggregates the eval docs it records)."""
        ...

    def saturation(self) -> pd.DataFrame | None:
        """`tables.saturation_table`: every stored step's routing against the last step's, on the same tokens;
        None without two stored steps. ValueError when the steps hold different tokens."""
        ...


def sorted_frame(rows: Any) -> pd.DataFrame:
    """Rows (a list of dicts or a DataFrame) as a DataFrame sorted by step when it has one."""
    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    return frame.sort_values("step").reset_index(drop=True) if "step" in frame else frame
