"""Session state shared by every page: its keys, the sidebar's source and step selector, the selected source,
URL query parameters (?run=NAME, ?layer=N) and small widget helpers."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from analysis.sources import ModelSource
from app import cache

# --- session-state keys (one place, so pages never collide) ---------------------------------------------
KEY_RUN = "moe_run_path"  # path of the selected source (str)
KEY_STEP = "moe_checkpoint_step"  # selected step (int) of that source; None when it has none
KEY_TEXT = "moe_routing_text"  # text in the Token routing text area
KEY_LAYER = "moe_layer"  # MoE layer shown on Token routing
KEY_TRAIN_PROC = "moe_train_process"  # the background training run started from the Train page

VIEWS_DIR = Path(__file__).resolve().parent / "views"


def current() -> tuple[str | None, int | None]:
    """(source path, step) chosen in the sidebar; (None, None) when there is no source."""
    return st.session_state.get(KEY_RUN), st.session_state.get(KEY_STEP)


def sidebar_selector() -> None:
    """Source + step selectors in the sidebar, shared by every page (state in KEY_RUN / KEY_STEP)."""
    found = cache.discover_sources()
    wanted = st.query_params.get("run")
    if wanted and wanted in found and st.session_state.get("_moe_qp_run") != wanted:
        st.session_state[KEY_RUN] = found[wanted]  # a Learn page linked to training?run=NAME
        st.session_state["_moe_qp_run"] = wanted
    if not found:
        st.sidebar.warning("No run found.")
        st.session_state[KEY_RUN] = None
        return
    paths = list(found.values())
    if st.session_state.get(KEY_RUN) not in paths:
        st.session_state[KEY_RUN] = paths[0]
    names = {p: n for n, p in found.items()}
    st.sidebar.selectbox("Run", paths, key=KEY_RUN, format_func=lambda p: names.get(p, Path(p).name))
    try:
        source = cache.get_source(st.session_state[KEY_RUN])
        has_steps = source.capabilities.steps
        steps = source.steps()
    except (OSError, ValueError) as exc:
        st.sidebar.error(f"Cannot read this run: {exc}")
        st.session_state[KEY_STEP] = None
        return
    if not has_steps:
        st.session_state[KEY_STEP] = None
        st.sidebar.caption(has_steps.reason)
        return
    if not steps:
        st.sidebar.warning("This run has no checkpoint (yet).")
        st.session_state[KEY_STEP] = None
        return
    if st.session_state.get(KEY_STEP) not in steps:
        st.session_state[KEY_STEP] = source.default_step()
    if len(steps) > 1:
        st.sidebar.select_slider("Checkpoint step", steps, key=KEY_STEP)
    else:
        st.sidebar.caption(f"Checkpoint step {steps[0]}")


def require_source(need_model: bool = True) -> tuple[ModelSource, int | None]:
    """The selected source and step, or stop the page with a message when there is none, when it cannot be
    read, or (with `need_model`) when it cannot route text yet (a run without a checkpoint)."""
    if KEY_RUN not in st.session_state:  # the entry always sets it; a page run some other way draws it here
        sidebar_selector()
    path, step = current()
    if not path:
        st.info(
            "No run found. Train one on the **Train** page, start the app with `moe-explorer app --run RUN`, "
            "or set MOE_EXPLORER_RUN / MOE_EXPLORER_RUNS_DIR."
        )
        st.stop()
    try:
        source = cache.get_source(path)
        route_text = source.capabilities.route_text
    except (ValueError, OSError) as exc:
        st.error(f"Cannot open this run: {exc}")
        st.stop()
    if need_model and not route_text:
        st.info(route_text.reason)
        st.stop()
    return source, step


def page_path(name: str) -> str:
    """Absolute path of app/views/NAME.py, for st.page_link (works whatever the entry script is)."""
    return str(VIEWS_DIR / f"{name}.py")


def copy_key(src: str, dst: str) -> None:
    """Widget callback: session_state[dst] = session_state[src] (e.g. a page slider driving the sidebar)."""
    st.session_state[dst] = st.session_state[src]


def follow_click(event, key: str, n: int) -> None:
    """Set the number widget `key` to the x of a newly clicked chart point (a token index); keep it in 0..n-1."""
    points = event.selection.points if event and event.selection else []
    clicked = points[0].get("x") if points else None
    if clicked is not None and st.session_state.get(f"_moe_click_{key}") != clicked:
        st.session_state[f"_moe_click_{key}"] = clicked
        st.session_state[key] = int(clicked)
    st.session_state[key] = min(max(int(st.session_state.get(key, 0)), 0), max(n - 1, 0))


def layer_param(n_layers: int, key: str) -> None:
    """Prepare the layer widget `key`: a new ?layer=N query parameter (the Learn pages link with it) sets it,
    and its value is clamped to this model's layers (another run may have fewer). Create the widget after
    this call without a default value."""
    last = max(n_layers - 1, 0)
    wanted = st.query_params.get("layer")
    if wanted is not None and st.session_state.get(f"_moe_qp_{key}") != wanted:
        st.session_state[f"_moe_qp_{key}"] = wanted
        try:
            st.session_state[key] = int(wanted)
        except (TypeError, ValueError):
            pass
    value = st.session_state.get(key, 0)
    st.session_state[key] = min(max(int(value) if isinstance(value, (int, float)) else 0, 0), last)
