"""Streamlit caches of causal analysis on a source's eval documents (`cache.eval_docs`: a Hugging Face folder's
are the built-in samples): the baseline (`analysis.causal.ablation.AblationRunner`: residual streams kept at
each MoE block of our model; a Hugging Face model re-runs whole forwards with hooks) once per (source, step),
shared by every session; each ablation's Δ loss per domain cached by (source, step, layer, expert, mode), so
the expert profile and the causal page reuse each other's numbers."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import streamlit as st

from analysis import sources
from analysis.causal import stored_sweep
from analysis.causal.ablation import Ablation, ablation_result, labelled
from app import cache


def unavailable(source: sources.ModelSource, step: int | None) -> str | None:
    """Why causal numbers cannot be computed here, or None when they can."""
    if not source.capabilities.causal:
        return source.capabilities.causal.reason
    if not cache.eval_docs(source):
        return "This source has no held-out eval documents to measure the loss on."
    if step is not None and step not in source.model_steps():
        return f"Step {step} has no stored weights: choose a checkpoint step to measure what removing an expert does."
    return None


@st.cache_resource(show_spinner=False, max_entries=2)  # ~35 MB of residual streams on the shipped run
def _runner(path: str, step: int | None, _source):
    return _source.causal_model(step).runner(cache.eval_docs(_source))


@st.cache_data(show_spinner=False, max_entries=1024)
def _domains(path: str, step: int | None, layer: int, expert: int | None, mode: str, _source) -> pd.DataFrame:
    runner = _runner(path, step, _source)
    return ablation_result(runner, Ablation(layer, mode, expert)).per_domain


def modes(source: sources.ModelSource, step: int | None) -> tuple[str, ...]:
    """The ablation modes the source's model supports (`analysis.causal.ablation.MODES` for our runs; a Hugging
    Face family's `causal_modes`); the capability's reason says why the others are missing."""
    return source.causal_model(step).modes


@st.cache_data(show_spinner=False, max_entries=8, ttl=60)  # a sweep written while the app runs shows within a minute
def stored(path: str, step: int | None) -> tuple[pd.DataFrame | None, list[str]]:
    """The sweep tables stored with the model at `step` (`analysis.causal.stored_sweep`) and the errors of
    those that could not be read."""
    return stored_sweep.stored_sweeps(path, step)


def ablation_domains(source: sources.ModelSource, step: int | None, ablation: Ablation) -> pd.DataFrame:
    """`domain_deltas` of one ablation on the source's eval documents (label, n_docs, n_tokens, delta, lo, hi):
    from the sweep stored with the model when it has that ablation, else measured (and cached)."""
    rows = stored_sweep.lookup(stored(source.path, step)[0], ablation)
    if rows is not None:
        return rows
    return _domains(source.path, step, ablation.layer, ablation.expert, ablation.mode, source)


def sweep_table(
    source: sources.ModelSource,
    step: int | None,
    ablations: list[Ablation],
    progress: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """The same table as `analysis.causal.ablation.sweep`, one cached ablation at a time."""
    frames = []
    for i, ab in enumerate(ablations):
        frames.append(labelled(ablation_domains(source, step, ab), ab))
        if progress is not None:
            progress(i + 1, len(ablations))
    return pd.concat(frames, ignore_index=True)


@st.cache_data(show_spinner=False, max_entries=16)
def _what_if(path: str, step: int | None, docs_key: str, override_key: str, _source, _docs, _overrides):
    target = _source.causal_model(step)
    return target.what_if(target.tokens(list(_docs)), _overrides)


def what_if_table(source: sources.ModelSource, step: int | None, docs: list, overrides: dict) -> pd.DataFrame:
    """`analysis.causal.what_if.what_if` of (doc_id, label, text) docs, cached by the texts and the overrides."""
    docs_t = tuple(tuple(d) for d in docs)
    return _what_if(
        source.path, step, cache.docs_key(docs_t), repr(sorted(overrides.items())), source, docs_t, overrides
    )


LENS_DOC_STRIDE = 4  # the logit lens runs on every 4th eval document (16 of the shipped 64, all domains)


def lens_docs(source: sources.ModelSource) -> tuple[tuple[str, str, str], ...]:
    """Every LENS_DOC_STRIDE-th eval document; all of the built-in samples (one per domain) where they stand in."""
    docs = cache.eval_docs(source)
    return docs[::LENS_DOC_STRIDE] if source.capabilities.eval_docs else docs


@st.cache_data(show_spinner=False, max_entries=16)
def _lens(path: str, step: int | None, layer: int, _source) -> pd.DataFrame:
    target = _source.causal_model(step)
    return target.logit_lens(target.tokens(lens_docs(_source)), layer).per_expert


def lens_table(source: sources.ModelSource, step: int | None, layer: int) -> pd.DataFrame:
    """The logit lens's `per_expert` table of `layer` on `lens_docs`."""
    return _lens(source.path, step, layer, source)
