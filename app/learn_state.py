"""Shared state of the Learn pages: lesson settings live in the URL query parameters; the page frame
(title, presentation bar from app.classroom.presentation, main figure first, the class question).

A teacher shares a link such as `lesson_3_bias?u=0.001&seed=2&step=150` and it opens that exact
configuration. Each lesson declares its parameters as `Spec`s; `init_params` copies validated URL values
into `st.session_state` (the widgets' keys) the first time the page runs, `write_params` puts the current
widget values back into the URL after every run (and keeps a copy, restored when the student comes back
to the page from another one, since navigation clears the URL). Bad values never crash a page: they are replaced by the
default or clamped into range, with a message that names the parameter (never echoes its value).

Parsing is pure (`parse_value`), so it is tested without Streamlit.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import streamlit as st

from app.classroom import content, presentation, widgets

MAX_PARAM_CHARS = 400  # longer query values are rejected before parsing


@dataclass(frozen=True)
class Spec:
    """One lesson setting. The kind follows `default`: bool, int, float, str (one of `choices`) or a
    tuple of floats (one URL value "a,b,c", one widget per element). Float `choices` snap to the nearest."""

    default: bool | int | float | str | tuple
    lo: float | None = None  # numbers are clamped into [lo, hi]
    hi: float | None = None
    choices: tuple = ()  # allowed values for str; for float, values to snap to (log scale when all > 0)


def _clamp(value: float, spec: Spec, name: str, problems: list[str]) -> float:
    if spec.lo is not None and value < spec.lo:
        problems.append(f"`{name}` was below {spec.lo:g}; clamped to {spec.lo:g}.")
        return type(value)(spec.lo)
    if spec.hi is not None and value > spec.hi:
        problems.append(f"`{name}` was above {spec.hi:g}; clamped to {spec.hi:g}.")
        return type(value)(spec.hi)
    return value


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("not finite")
    return value


def _snap(value: float, choices: tuple) -> float:
    if all(c > 0 for c in choices) and value > 0:
        return min(choices, key=lambda c: abs(math.log(c) - math.log(value)))
    return min(choices, key=lambda c: abs(c - value))


def parse_value(name: str, raw: str | None, spec: Spec) -> tuple[object, list[str]]:
    """(value, problems) for one query-parameter string; None or "" means "not given" (the default, no problem)."""
    if raw is None or raw == "":
        return spec.default, []
    problems: list[str] = []
    default = spec.default
    if len(raw) > MAX_PARAM_CHARS:
        return default, [f"`{name}` was too long; using the default."]
    try:
        if isinstance(default, bool):
            if raw.lower() not in ("1", "0", "true", "false", "on", "off"):
                raise ValueError(raw)
            return raw.lower() in ("1", "true", "on"), []
        if isinstance(default, int):
            return int(_clamp(int(raw), spec, name, problems)), problems
        if isinstance(default, float):
            value = _clamp(_float(raw), spec, name, problems)
            if spec.choices and value not in spec.choices:
                value = _snap(value, spec.choices)
                problems.append(f"`{name}` is not one of the offered values; using the nearest, {value:g}.")
            return value, problems
        if isinstance(default, str):
            if raw not in spec.choices:
                raise ValueError(raw)
            return raw, []
        # a tuple of floats
        parts = raw.split(",")
        if len(parts) != len(default):
            return default, [f"`{name}` needs {len(default)} comma-separated numbers; using the default."]
        values = [_float(p) for p in parts]
        before = len(problems)
        values = [float(_clamp(v, spec, name, problems)) for v in values]
        del problems[before + 1 :]  # one message per parameter is enough
        return tuple(values), problems
    except ValueError:
        return default, [f"`{name}` was not a valid value; using the default."]


def format_value(value: object) -> str:
    """The URL form of a setting: 1/0 for bools, %g for numbers, comma-joined for tuples."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (tuple, list)):
        return ",".join(f"{float(v):g}" for v in value)
    return str(value)


# --- Streamlit glue ----------------------------------------------------------------------------------


def widget_key(prefix: str, name: str, index: int | None = None) -> str:
    """Session-state key of a setting's widget (one per element for tuples)."""
    return f"{prefix}_{name}" if index is None else f"{prefix}_{name}_{index}"


def _raw(name: str) -> str | None:
    values = st.query_params.get_all(name)
    return values[-1] if values else None


def init_params(prefix: str, specs: dict[str, Spec]) -> list[str]:
    """On a page's first run (its keys not yet in session state) copy URL values into the widgets' keys.

    Returns the problems found (already shown with `st.warning`)."""
    problems: list[str] = []
    for name, spec in specs.items():
        first_key = widget_key(prefix, name, 0 if isinstance(spec.default, tuple) else None)
        if first_key in st.session_state:
            continue
        raw = _raw(name)
        if raw is None:  # not in the link: what this session last had on the page (saved by write_params)
            raw = st.session_state.get(_saved_key(prefix), {}).get(name)
        value, found = parse_value(name, raw, spec)
        problems += found
        if isinstance(spec.default, tuple):
            for i, v in enumerate(value):
                st.session_state[widget_key(prefix, name, i)] = v
        else:
            st.session_state[widget_key(prefix, name)] = value
    for problem in problems:
        st.warning("Link setting adjusted: " + problem, icon=":material/link_off:")
    return problems


def get_params(prefix: str, specs: dict[str, Spec]) -> dict[str, object]:
    """The current value of every setting, from session state."""
    out: dict[str, object] = {}
    for name, spec in specs.items():
        if isinstance(spec.default, tuple):
            out[name] = tuple(st.session_state.get(widget_key(prefix, name, i), d) for i, d in enumerate(spec.default))
        else:
            out[name] = st.session_state.get(widget_key(prefix, name), spec.default)
    return out


def _saved_key(prefix: str) -> str:
    return f"_{prefix}_saved"  # not a widget key, so it survives visits to other pages


def write_params(prefix: str, specs: dict[str, Spec]) -> None:
    """Put the current settings into the URL (only those that changed, so the URL is stable), and keep a
    copy in the session so that coming back to the page (navigation clears the URL) restores them."""
    saved = {}
    for name, value in get_params(prefix, specs).items():
        text = saved[name] = format_value(value)
        if _raw(name) != text:
            st.query_params[name] = text
    st.session_state[_saved_key(prefix)] = saved


# --- the page frame: title, presentation, figures, the class question -----------------------------------------


def lesson_header(title: str, prefix: str, specs: dict[str, Spec]) -> dict[str, object]:
    """Title, the presentation bar and the URL-backed settings of a lesson page; returns the settings."""
    st.title(title)
    presentation.bar(prefix)
    widgets.lesson_status(prefix)  # a running class (this session's) gets this lesson's question
    init_params(prefix, specs)
    return get_params(prefix, specs)


def main_figure(prefix: str, slot, figs: dict, config: dict) -> None:
    """The lesson's main figure(s) `{key: figure}` in `slot` (a container placed right under the title, so it is
    the first thing on a projector or a phone), side by side in columns (which stack on a phone), then the
    teacher notes when they are on."""
    with slot:
        cols = st.columns(len(figs)) if len(figs) > 1 else [st] * len(figs)
        for col, (key, fig) in zip(cols, figs.items()):
            presentation.show(col, fig, key, config, main=True)
        presentation.notes(prefix)


def chart(where, fig, key: str, config: dict) -> None:
    """Any other lesson figure, in `where` (st or a column); projector-sized while presenting."""
    presentation.show(where, fig, key, config)


def predict_then_reveal(prefix: str) -> None:
    """The lesson's question (app.classroom.content) to answer before the reveal: st.radio, then an expander."""
    q = content.QUESTIONS[prefix]
    st.subheader("Predict, then reveal")
    choice = st.radio(q.text, list(q.options), index=None, key=f"{prefix}_predict")
    with st.expander("Reveal the answer", expanded=False):
        if choice is None:
            st.write("Make a prediction first, then open this again.")
        elif choice == q.options[q.answer]:
            st.success("Right. " + q.explanation)
        else:
            st.info(f"Not quite: the answer is **{q.options[q.answer]}**. " + q.explanation)


# --- the toy router's settings (lessons 1-3) --------------------------------------------------------------

N_EXPERTS = 4  # the toy router has 4 experts on 2-D inputs
W_LIM = 4.0  # router weights live in [-W_LIM, W_LIM] (slider range = clamp range)
B_LIM = 0.5  # biases live in [-B_LIM, B_LIM]
DEFAULT_W = (2.0, 0.0, 0.0, 2.0, -2.0, 0.0, 0.0, -2.0)  # = analysis.teaching.default_weights(), row-major
ROUTER_SPECS = {
    "w": Spec(DEFAULT_W, -W_LIM, W_LIM),  # W (E x 2), row-major: w0x, w0y, w1x, ...
    "b": Spec((0.0,) * N_EXPERTS, -B_LIM, B_LIM),  # selection biases b_0..b_3
    "score": Spec("sigmoid", choices=("sigmoid", "softmax")),
}


def router_controls(prefix: str, label: str = "Router weights and biases", expanded: bool = True) -> None:
    """Sliders for each expert's weight vector (w_e = (w_ex, w_ey)) and bias, one column per expert."""
    with st.expander(label, expanded=expanded):
        cols = st.columns(N_EXPERTS)
        for e, col in enumerate(cols):
            with col:
                st.markdown(f"**Expert E{e}**")
                st.slider(f"w{e} x", -W_LIM, W_LIM, step=0.1, key=widget_key(prefix, "w", 2 * e))
                st.slider(f"w{e} y", -W_LIM, W_LIM, step=0.1, key=widget_key(prefix, "w", 2 * e + 1))
                st.slider(f"b{e}", -B_LIM, B_LIM, step=0.01, key=widget_key(prefix, "b", e))


def weights_array(params: dict) -> tuple:
    """(W (E, 2), bias (E,)) as numpy arrays from the settings dict."""
    return np.array(params["w"], dtype=float).reshape(N_EXPERTS, 2), np.array(params["b"], dtype=float)


# --- stepping through a simulation (lesson 3) -------------------------------------------------------------


def _move(prefix: str, delta: int, n_steps: int) -> None:
    """Button callback: it runs before the widgets are drawn again, so it may set the Step widget's value."""
    key = widget_key(prefix, "step")
    st.session_state[key] = int(min(max(st.session_state.get(key, 0) + delta, 0), n_steps))


def play_advance(prefix: str, n_steps: int, stride: int) -> bool:
    """Call before the widgets: while Play is on, move `stride` steps (Play turns itself off at the end)."""
    playing = bool(st.session_state.get(f"{prefix}_play", False))
    if playing:
        _move(prefix, stride, n_steps)
        st.session_state[f"{prefix}_play"] = st.session_state[widget_key(prefix, "step")] < n_steps
    return playing


def step_buttons(prefix: str, n_steps: int, stride: int, pause: float) -> None:
    """Play toggle and Step / +10 / +100 / Reset buttons acting on the `step` setting."""
    cols = st.columns(5)
    cols[0].toggle("Play", key=f"{prefix}_play", help=f"{stride} steps every {pause} s")
    for col, (label, delta) in zip(cols[1:], (("Step ▶", 1), ("+10 ▶▶", 10), ("+100 ▶▶▶", 100), ("Reset ⟲", -n_steps))):
        col.button(label, on_click=_move, args=(prefix, delta, n_steps), width="stretch")


def play_continue(prefix: str, playing: bool, pause: float) -> None:
    """Call last: while Play is still on, wait `pause` seconds and rerun the page (the next frame)."""
    if playing and st.session_state.get(f"{prefix}_play"):
        time.sleep(pause)
        st.rerun()
