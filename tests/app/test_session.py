"""app.session's shareable state: the pure URL functions (parse, resolve, round trip) and, with AppTest, the
run / step / layer / sample written to the query parameters and restored from a link."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from app import session
from tests.app.conftest import ROOT, STEPS

# --- pure functions ----------------------------------------------------------------------------------------


def test_parse_param_numbers_are_clamped_and_junk_is_none():
    assert session.parse_param("2", hi=3) == 2
    assert session.parse_param(" 7 ", hi=3) == 3 and session.parse_param("-4", hi=3) == 0
    assert session.parse_param("5") == 5  # no upper bound
    assert session.parse_param(2.0, hi=3) == 2  # an integral float (a widget value)
    for junk in ("x", "1.5", "", None, True, "1e3", "<script>"):
        assert session.parse_param(junk, hi=3) is None, junk


def test_parse_param_choices_match_by_value_or_text():
    steps = [250, 500, 2000]
    assert session.parse_param("500", choices=steps) == 500 and session.parse_param(500, choices=steps) == 500
    assert session.parse_param("501", choices=steps) is None and session.parse_param(None, choices=steps) is None
    names = ["Prose", "eval: code #3"]
    assert session.parse_param("eval: code #3", choices=names) == "eval: code #3"
    assert session.parse_param("prose", choices=names) is None  # exact names only


def test_resolve_param_order():
    kw = {"hi": 3}
    assert session.resolve_param(1, "2", None, **kw) == 2  # a link not seen yet wins over the widget
    assert session.resolve_param(1, "2", "2", **kw) == 1  # the URL holds what this session wrote: the widget wins
    assert session.resolve_param(None, None, "2", **kw) == 2  # the widget was forgotten while its page was away
    assert session.resolve_param(None, None, None, default=0, **kw) == 0
    assert session.resolve_param(1, "x", None, **kw) == 1  # a bad link value: the next candidate
    assert session.resolve_param(None, "9", None, **kw) == 3  # clamped
    assert session.resolve_param(None, None, None, choices=[]) is None


def test_url_round_trip():
    """Each shared value -> its URL text (format_param, what url_param writes) -> back (parse_param, what a
    link restores), with the page's own rules; unusable link values restore nothing."""
    state = {"run": "default (shipped)", "step": 500, "layer": 2, "expert": 13, "token": 0, "sample": "eval: x #1",
             "compare": 250, "page": 7, "doc": "doc 8"}  # fmt: skip
    valid = {"run": {"choices": ["tiny", "default (shipped)"]}, "step": {"choices": [250, 500]}, "layer": {"hi": 3},
             "expert": {"hi": 15}, "token": {"hi": 9}, "sample": {"choices": ["eval: x #1"]},
             "compare": {"choices": ["off", 250]}, "page": {"lo": 1, "hi": 9},
             "doc": {"choices": ["doc 7", "doc 8"]}}  # fmt: skip
    query = {name: session.format_param(value) for name, value in state.items()}
    assert query == {"run": "default (shipped)", "step": "500", "layer": "2", "expert": "13", "token": "0",
                     "sample": "eval: x #1", "compare": "250", "page": "7", "doc": "doc 8"}  # fmt: skip
    assert {name: session.parse_param(query[name], **valid[name]) for name in state} == state
    assert session.parse_param("x", **valid["layer"]) is None and session.parse_param("999", **valid["step"]) is None
    assert set(state) == set(session.URL_NAMES)  # every shared name is covered


# --- in the app ------------------------------------------------------------------------------------------------


def open_page(entry: str, page: str | None = None, **query) -> AppTest:
    at = AppTest.from_file(entry, default_timeout=90)
    at.query_params.update(query)
    at.run()
    if page is not None:
        at.query_params.update(query)  # a fresh browser opening PAGE?QUERY: the first run sees the query
        at.switch_page(str(ROOT / "app" / "views" / f"{page}.py")).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_sidebar_writes_run_and_step(app_env, entry):
    at = open_page(entry)
    assert _q(at, "run") == app_env.name and _q(at, "step") == str(STEPS[-1])
    at.sidebar.select_slider(key=session.KEY_STEP).set_value(STEPS[0]).run()
    assert _q(at, "step") == str(STEPS[0])


def test_a_link_restores_step_and_layer(app_env, entry):
    at = open_page(entry, "heatmaps", step=str(STEPS[0]), layer="1")
    assert at.session_state[session.KEY_STEP] == STEPS[0] and at.selectbox(key="hm_layer").value == 1
    at.selectbox(key="hm_layer").set_value(0).run()
    assert _q(at, "layer") == "0" and _q(at, "step") == str(STEPS[0])


def test_bad_link_values_are_replaced(app_env, entry):
    at = open_page(entry, "heatmaps", step="999", layer="99", run="no such run")
    assert at.session_state[session.KEY_STEP] == STEPS[-1] and at.selectbox(key="hm_layer").value == 1  # clamped
    assert _q(at, "step") == str(STEPS[-1]) and _q(at, "layer") == "1" and _q(at, "run") == app_env.name


def test_sample_link_opens_the_sample_and_leaving_it_drops_it(app_env, entry):
    at = open_page(entry, "token_routing", sample="Math")
    assert at.radio(key="tr_source").value == "Sample" and at.selectbox(key="tr_sample").value == "Math"
    at.selectbox(key="tr_sample").set_value("JSON").run()
    assert _q(at, "sample") == "JSON"
    at.radio(key="tr_source").set_value("Paste text").run()
    assert "sample" not in at.query_params
    at.radio(key="tr_source").set_value("Sample").run()
    assert at.selectbox(key="tr_sample").value == "JSON" and _q(at, "sample") == "JSON"  # remembered


def test_layer_widget_is_remembered_across_pages(app_env, entry):
    at = open_page(entry, "heatmaps")
    at.selectbox(key="hm_layer").set_value(1).run()
    at.query_params.clear()  # navigating clears the URL
    at.switch_page(str(ROOT / "app" / "views" / "training.py")).run()
    assert _q(at, "layer") == "0"
    at.query_params.clear()
    at.switch_page(str(ROOT / "app" / "views" / "heatmaps.py")).run()
    assert at.selectbox(key="hm_layer").value == 1 and _q(at, "layer") == "1"


@pytest.mark.parametrize("lesson", ["lesson_3_bias", "lesson_6_real"])
def test_learn_pages_keep_their_own_parameters(app_env, entry, lesson):
    at = AppTest.from_file(entry, default_timeout=90)
    at.run()
    at.query_params.clear()  # navigating clears the URL; then the lesson's link
    at.query_params.update({"step": "150", "layer": "1"})
    at.switch_page(str(ROOT / "app" / "views" / "learn" / f"{lesson}.py")).run()
    assert not at.exception, [e.value for e in at.exception]
    assert "run" not in at.query_params  # the sidebar writes nothing on a lesson
    if lesson == "lesson_3_bias":
        assert _q(at, "step") == "150"  # the lesson's step, not the checkpoint step
    assert at.session_state[session.KEY_STEP] == STEPS[-1]


def _q(at: AppTest, name: str) -> str:
    value = at.query_params[name]
    return value[-1] if isinstance(value, list) else value
