"""Streamlit caches over model sources: the sources themselves, routing traces, derived tables, projections.

- `st.cache_resource` for what is shared and never mutated: the sources (each keeps its own models).
- `st.cache_data` for traces and derived tables, keyed by (source path, step, layer, params); texts are keyed
  by their SHA-256, so a rerun on the same 2,000 tokens is a cache hit. Cached data comes back as a copy:
  a page that changes a trace does not change the cache.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pandas as pd
import streamlit as st

from analysis import figures, sources, tables
from app import settings, uploads

RECORDED = "moe_recorded_eval"  # session key: (source, step, docs) whose eval traces were recorded in this session
PROJECTED = "moe_projected"  # session key: (source, step, layer, method) projected in this session


# --- sources ---------------------------------------------------------------------------------------------------


def discover_sources() -> dict[str, str]:
    """{display name: path} of every source (see analysis.sources.discovery), from the app's settings.
    Cached for 3 s only, so a run started on the Train page appears quickly."""
    runs_dir = str(settings.runs_dir().resolve())
    return _discover(settings.run_path(), settings.hf_folders(), runs_dir, settings.datasets())


@st.cache_data(ttl=3, show_spinner=False)
def _discover(run: str | None, hf_folders: tuple[str, ...], runs_dir: str, datasets: tuple[str, ...] = ()):
    return sources.discover_sources(run, hf_folders, runs_dir, datasets)


@st.cache_resource(show_spinner=False, max_entries=8)
def get_source(path: str) -> sources.ModelSource:
    """The source at `path`, shared by every session; it loads its model(s) on first use and keeps them."""
    return sources.open_source(
        path,
        torch_threads=settings.torch_threads(),
        hf_device=settings.hf_device(),
        hf_dtype=settings.hf_dtype(),
        duckdb_memory=settings.duckdb_memory(),
        duckdb_threads=settings.duckdb_threads(),
    )


# --- routing traces ----------------------------------------------------------------------------------------------


def docs_key(docs: tuple[tuple[str, str, str], ...]) -> str:
    h = hashlib.sha256()
    for d in docs:
        h.update("\0".join(d).encode("utf-8", "surrogatepass") + b"\1")
    return h.hexdigest()


@st.cache_data(show_spinner="Routing…", max_entries=8)  # a 20k-token trace is tens of MB: keep a few
def route_docs(path: str, step: int | None, key: str, _source, _docs: tuple[tuple[str, str, str], ...]):
    """RoutingTrace of docs (doc_id, label, text) through the source at `step`; cached by (path, step, key)."""
    return _source.record(_docs, step)


def route_trace(source: sources.ModelSource, step: int | None, docs: list[tuple[str, str, str]]):
    """Trace of (doc_id, label, text) docs, cached by their hash: a rerun on the same text is instant."""
    docs_t = tuple(tuple(d) for d in docs)
    return route_docs(source.path, step, docs_key(docs_t), source, docs_t)


def warm_model(source: sources.ModelSource, step: int | None) -> None:
    """Load the model at `step` and route a few words through it in a background thread, once per (source,
    step), when a page that routes text opens: the first route of the user's text then finds the model loaded
    and torch and the figures' modules imported (about 0.5 s of a first route on the shipped run). Failures are
    left for the real route to report."""
    if source.capabilities.route_text and (step is None or step in source.model_steps()):
        _warm_model(source.path, step, source)


@st.cache_resource(show_spinner=False, max_entries=8)
def _warm_model(path: str, step: int | None, _source) -> threading.Thread:
    def warm() -> None:
        try:
            trace = _source.record((("warm-up", "", "Warm up the router."),), step)
            figures.colors.expert_colors(trace.n_experts)  # the palette is computed once per process
            import plotly.subplots  # noqa: F401  (the step-by-step figure)
        except Exception:  # noqa: BLE001  (a broken checkpoint is reported by the real route)
            pass

    thread = threading.Thread(target=warm, name="warm-model", daemon=True)
    thread.start()
    return thread


@st.cache_data(show_spinner=False, max_entries=16)
def stored_trace(path: str, step: int | None, _source):
    """The trace the source recorded ahead of time at `step` (None when there is none)."""
    return _source.stored_trace(step)


def eval_docs(source: sources.ModelSource) -> tuple[tuple[str, str, str], ...]:
    """The documents pages measure a source on: its held-out eval documents, else the built-in labelled samples
    (a Hugging Face folder has none). `eval_trace` records them; causal numbers are measured on them."""
    return tuple(source.eval_docs()) if source.capabilities.eval_docs else uploads.labelled_samples()


def eval_docs_note(source: sources.ModelSource) -> str:
    """Which documents `eval_docs` are, for a caption: 'the 64 held-out eval documents' or the samples."""
    docs = eval_docs(source)
    if source.capabilities.eval_docs:
        return f"the {len(docs)} held-out eval documents"
    names = ", ".join(label for _, label, _ in docs)
    return f"the {len(docs)} built-in samples ({names}; one document per domain: this source has no eval documents)"


def eval_trace(source: sources.ModelSource, step: int | None):
    """The source's eval trace at `step`: the stored one when there is one, else its eval docs recorded now
    (inside st.status). A source without eval docs is recorded on the built-in labelled samples."""
    trace = stored_trace(source.path, step, source) if source.capabilities.stored_traces else None
    if trace is not None:
        return trace
    docs = eval_docs(source)
    if not docs:
        return None
    key = docs_key(docs)
    done = st.session_state.setdefault(RECORDED, set())
    if (source.path, step, key) in done:
        return route_docs(source.path, step, key, source, docs)
    with st.status(f"Recording the routing of {len(docs)} documents at step {step}…") as status:
        trace = route_docs(source.path, step, key, source, docs)
        status.update(label=f"Recorded {trace.n_tokens:,} tokens of {len(docs)} eval documents", state="complete")
    done.add((source.path, step, key))
    return trace


# --- training history, saturation, run comparison ---------------------------------------------------------------


def file_stamp(*paths: Path) -> tuple[tuple[int, int], ...]:
    """(mtime in ns, size) of each file ((0, 0) when missing): a cache key that changes when a file does."""
    out = []
    for p in paths:
        try:
            st_ = p.stat()
            out.append((st_.st_mtime_ns, st_.st_size))
        except OSError:
            out.append((0, 0))
    return tuple(out)


def histories(path: str) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """(training history, validation history) of the source at `path` (None where it has none). Read and parsed
    once per version of history/*.jsonl: a run in training appends to them, which changes the key."""
    folder = Path(path) / "history"
    return _histories(path, file_stamp(folder / "train.jsonl", folder / "eval.jsonl"))


@st.cache_resource(show_spinner=False, max_entries=32)  # not copied per rerun: pages only read them
def _histories(path: str, stamp: tuple) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    source = get_source(path)
    return source.history(), source.eval_history()


def card(source: sources.ModelSource) -> sources.ModelCard:
    """The source's model card (`ModelSource.card`: counting parameters builds a meta model), once per source."""
    return _card(source.path, file_stamp(Path(source.path) / "run.json", Path(source.path) / "config.json"), source)


@st.cache_resource(show_spinner=False, max_entries=16)
def _card(path: str, stamp: tuple, _source) -> sources.ModelCard:
    return _source.card()


@st.cache_data(show_spinner="Comparing every stored step's routing with the last one…", max_entries=8)
def _saturation(path: str, steps: tuple[int, ...], _source) -> pd.DataFrame | None:
    return _source.saturation()


def router_saturation(source: sources.ModelSource) -> pd.DataFrame | None:
    """`ModelSource.saturation`: every stored step's routing against the last one (a run's stored eval traces,
    a dataset's DuckDB counts); None without stored traces. ValueError when the steps hold different tokens."""
    if not source.capabilities.stored_traces:
        return None
    return _saturation(source.path, tuple(source.steps()), source)


# --- whole-corpus aggregates ---------------------------------------------------------------------------------


def aggregates(source: sources.ModelSource, step: int | None, trace=None):
    """`RoutingAggregates` a page draws: of `trace` when given (the user's files), else the source's own
    (`ModelSource.aggregates`: DuckDB over a dataset, the stored eval trace of a run), else of the eval docs the
    app records (`eval_trace`). None when there is nothing to aggregate. Kept per (source, step) or trace."""
    if trace is None:
        own = _source_aggregates(source.path, step, source)
        if own is not None:
            return own
        if not source.capabilities.route_text:  # nothing stored here and no model to record with
            return None
        trace = eval_trace(source, step)
        if trace is None:
            return None
    return _trace_aggregates(trace_key(source, step, trace), trace)


@st.cache_resource(show_spinner="Counting the routing…", max_entries=16)  # shared, never mutated: no copies
def _source_aggregates(path: str, step: int | None, _source):
    return _source.aggregates(step)


@st.cache_resource(show_spinner=False, max_entries=16)
def _trace_aggregates(key: str, _trace):
    from analysis.sources.aggregates import TraceAggregates

    return TraceAggregates(_trace)


@st.cache_data(ttl=5, show_spinner=False, max_entries=16)
def run_comparison(paths: tuple[str, ...], names: tuple[str, ...]) -> pd.DataFrame:
    """`tables.run_comparison` of the sources at `paths` (shown as `names`): seeds of one strategy grouped."""
    finals = {name: tables.final_metrics(*histories(path)) for path, name in zip(paths, names)}
    configs = {name: get_source(path).training_config() for path, name in zip(paths, names)}
    return tables.run_comparison(finals, tables.strategy_groups(configs))


# --- derived tables ------------------------------------------------------------------------------------------------


@st.cache_data(show_spinner="Computing specialization…", max_entries=32)
def specialization_tables(key: str, _trace) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame] | None:
    """(cells, permutation baseline per layer, MI summary) of a trace cached by `key` (source|step|texts);
    None when the tokens carry no labels."""
    from analysis import specialization

    experts = _trace.experts_array()
    if not (_trace.tokens["label"].astype(str) != "").any():
        return None
    cells = specialization.domain_specialization(experts, _trace.tokens, _trace.n_experts)
    base = specialization.specialization_permutation_baseline(
        experts, _trace.tokens, _trace.n_experts, n_permutations=100
    )
    mi = specialization.mi_summary(experts, _trace.tokens, _trace.n_experts)
    return cells, base.max_ratio, mi


def trace_key(source: sources.ModelSource, step: int | None, trace) -> str:
    """Cache key of derived tables: source, step and the traced documents."""
    texts = docs_key(tuple((d, "", t) for d, t in sorted(trace.texts.items())))
    return f"{source.path}|{step}|{texts}|{trace.n_tokens}"


# --- projections -----------------------------------------------------------------------------------------------------


@st.cache_data(show_spinner=False, max_entries=32)
def _project(path: str, step: int | None, layer: int, method: str, _trace, _cache_dir):
    from analysis.projections import project

    return project(_trace, layer, method, cache_dir=_cache_dir)


@st.cache_resource(show_spinner=False)
def warm_umap() -> threading.Thread | None:
    """Compile UMAP's numba code in a background thread, once per process, when Geometry is first opened:
    the first UMAP fit then does not wait for it. MOE_EXPLORER_WARM_UMAP=0 turns it off."""
    if not settings.warm_umap():
        return None
    from analysis.projections import warm_up_umap

    thread = threading.Thread(target=warm_up_umap, name="warm-umap", daemon=True)
    thread.start()
    return thread


def projection_trace(source: sources.ModelSource, step: int | None):
    """The trace whose router inputs Router geometry projects (`RoutingAggregates.projection_trace`): the eval
    trace of a run or a Hugging Face model, a dataset's whole stored sample; None when there is none."""
    agg = aggregates(source, step)
    return agg.projection_trace() if agg is not None else None


def projection(source: sources.ModelSource, step: int | None, layer: int, method: str):
    """PCA/UMAP of `projection_trace`'s router inputs at `layer`; UMAP runs inside st.status. None on error."""
    trace = projection_trace(source, step)
    cache_dir = source.projection_cache_dir()
    done = st.session_state.setdefault(PROJECTED, set())
    try:
        if method == "pca" or (source.path, step, layer, method) in done:
            result = _project(source.path, step, layer, method, trace, cache_dir)
        else:
            with st.status(f"Computing UMAP of layer {layer}…", expanded=True) as status:
                st.write(f"{len(trace.hidden_rows):,} router inputs; PCA to 32 dims, then UMAP.")
                st.write("The first UMAP on this machine compiles numba code (about half a minute); then seconds.")
                result = _project(source.path, step, layer, method, trace, cache_dir)
                how = "read from the cache" if result.from_cache else f"computed in {result.seconds:.1f} s"
                status.update(label=f"UMAP of layer {layer} {how}", state="complete", expanded=False)
    except ValueError as exc:
        st.error(f"Cannot project: {exc}")
        return None
    done.add((source.path, step, layer, method))
    return result
