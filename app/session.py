"""Session state shared by every page: its keys, the sidebar's source and step selector, the selected source,
the shareable state in the URL, and small widget helpers.

Shareable state: the URL query parameters `run` (display name of the source), `step`, `layer`, `expert`, `token`
(token index in the selected document), `sample` (Token routing's sample), `compare` (Token routing's second
step, absent when off), `page` (Token routing's page of a dataset's documents, from 1) and `doc` (the document
shown there) follow their widgets as they change, so a copied link opens the same view in a fresh
browser. `sidebar_selector` keeps `run` and `step`; a page calls
`url_param(key, name, ...)` (or `layer_param`) just before creating a widget with that key. Only these names are
written: the Learn pages keep their own lesson parameters (app/learn_state.py). The decisions are pure functions
(`parse_param`, `format_param`, `resolve_param`), tested without Streamlit.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import streamlit as st

from analysis import figures
from analysis.sources import ModelSource
from app import cache

# --- session-state keys (one place, so pages never collide) ---------------------------------------------
KEY_RUN = "moe_run_path"  # path of the selected source (str)
KEY_STEP = "moe_checkpoint_step"  # selected step (int) of that source; None when it has none
KEY_TEXT = "moe_routing_text"  # text in the Token routing text area
KEY_LAYER = "moe_layer"  # MoE layer shown on Token routing
KEY_TRAIN_PROC = "moe_train_process"  # the background training run started from the Train page
KEY_IMAGE_FORMAT = "moe_image_format"  # what every figure's camera button saves (png | svg)

VIEWS_DIR = Path(__file__).resolve().parent / "views"


def current() -> tuple[str | None, int | None]:
    """(source path, step) chosen in the sidebar; (None, None) when there is no source."""
    return st.session_state.get(KEY_RUN), st.session_state.get(KEY_STEP)


def sidebar_selector(share: bool = True) -> None:
    """Source + step selectors in the sidebar, shared by every page (state in KEY_RUN / KEY_STEP). A link's ?run=NAME
    and ?step=N choose them; with `share` (the Explore pages) the URL follows them. The Learn pages pass
    share=False: their `step` is a lesson's own parameter, so it is neither read nor written there."""
    found = cache.discover_sources()
    wanted = st.query_params.get("run")
    if wanted and wanted in found and st.session_state.get("_moe_qp_run") != wanted:
        st.session_state[KEY_RUN] = found[wanted]  # a link, e.g. a Learn page's training?run=NAME
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
    if share:
        _write_param("run", names.get(st.session_state[KEY_RUN]), "_moe_qp_run")
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
    if share:
        url_param(KEY_STEP, "step", choices=steps, default=source.default_step())
    if len(steps) > 1:
        st.sidebar.select_slider(
            "Step", steps, key=KEY_STEP, help="Training steps with weights or recorded eval traces"
        )
    else:
        st.sidebar.caption(f"Step {steps[0]}")


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


def layer_param(n_layers: int, key: str) -> None:
    """Prepare the layer widget `key` from ?layer=N and keep the URL's `layer` in step with it (`url_param`); its
    value is clamped to this model's layers (another run may have fewer). Create the widget right after this call
    without a default value."""
    url_param(key, "layer", hi=max(n_layers - 1, 0))


# --- shareable state in the URL -------------------------------------------------------------------------------

URL_NAMES = ("run", "step", "layer", "expert", "token", "sample", "compare", "page", "doc")  # the only ones written


def parse_param(raw: Any, lo: int = 0, hi: int | None = None, choices: Sequence | None = None) -> Any:
    """A query-parameter string (or a widget value) -> a valid widget value, or None when it has none.

    With `choices`: the choice equal to it, or whose text is it (a step "500" -> 500). Otherwise a whole number
    clamped into [lo, hi] ("7" with hi 3 -> 3); anything else ("x", "1.5", "", None, True) is None."""
    if raw is None or isinstance(raw, bool):
        return None
    if choices is not None:
        by_text = {format_param(c): c for c in choices}
        return raw if raw in choices else by_text.get(format_param(raw))
    if isinstance(raw, float) and raw.is_integer():
        raw = int(raw)
    try:
        value = int(raw) if isinstance(raw, int) else int(str(raw).strip())
    except ValueError:
        return None
    value = max(value, lo)
    return value if hi is None else min(value, hi)


def format_param(value: Any) -> str:
    """A widget value as it stands in the URL (what `parse_param` reads back)."""
    return str(value)


def resolve_param(current: Any, raw: str | None, synced: str | None, *, default: Any = None, **valid) -> Any:
    """The widget value to use on this run, given its `current` session-state value, the URL's `raw` value and
    the text last `synced` between the two (None at first): a link the session has not seen yet (raw differs from
    synced) wins; else the widget's value; else the last synced one (Streamlit forgets a widget's value while its
    page is away); else `default`. Each candidate must be valid (`parse_param(..., **valid)`), else the next one
    is used; the result may be None when none is."""
    candidates = ([raw] if raw is not None and raw != synced else []) + [current, synced, default]
    for candidate in candidates:
        value = parse_param(candidate, **valid)
        if value is not None:
            return value
    return None


def _write_param(name: str, value: Any, synced_key: str) -> None:
    """Put one shareable value into the URL (only when it changed: the URL stays stable) and remember it."""
    if value is None:
        return
    text = format_param(value)
    if st.query_params.get(name) != text:
        st.query_params[name] = text
    st.session_state[synced_key] = text


def url_param(key: str, name: str, *, lo: int = 0, hi: int | None = None, choices: Sequence | None = None,
              default: Any = None) -> Any:  # fmt: skip
    """Tie the widget `key` to the URL query parameter `name` (one of URL_NAMES): a new link value sets the
    widget, and the widget's value goes back into the URL. Call it just before creating the widget, without a
    default value there; values are whole numbers in [lo, hi] or one of `choices` (see `resolve_param`); without
    a valid value, `default` (else the first choice, else `lo`). Returns the value (None only for no choices)."""
    if default is None:
        default = choices[0] if choices else (None if choices is not None else lo)
    synced_key = f"_moe_qp_{key}"
    raw = st.query_params.get(name)
    value = resolve_param(
        st.session_state.get(key), raw, st.session_state.get(synced_key), default=default, lo=lo, hi=hi, choices=choices
    )
    if value is None:
        return None
    st.session_state[key] = value
    _write_param(name, value, synced_key)
    return value


def url_mode(radio: str, option: str, key: str, name: str) -> None:
    """Before a radio `radio` whose `option` shows the widget `key` tied to ?name= (Token routing: "Sample" shows
    the sample box): a link with a new ?name= selects that option; choosing another option takes `name` out of
    the URL, so a copied link never reopens a sample the page no longer shows."""
    raw = st.query_params.get(name)
    if raw is not None and raw != st.session_state.get(f"_moe_qp_{key}"):
        st.session_state[radio] = option
    elif raw is not None and radio in st.session_state and st.session_state[radio] != option:
        del st.query_params[name]


# --- figure export --------------------------------------------------------------------------------------------


def image_format_selector() -> None:
    """The sidebar's "Figure download format": one choice for every figure of every page."""
    st.sidebar.radio("Figure download format", figures.export.FORMATS, horizontal=True, key=KEY_IMAGE_FORMAT,
                     format_func=str.upper, help="What the camera button above each figure saves")  # fmt: skip


def figure_config() -> dict:
    """The plotly config of every st.plotly_chart: the camera button saves the chosen format (PNG or SVG)."""
    return figures.export.config(st.session_state.get(KEY_IMAGE_FORMAT, "png"))
