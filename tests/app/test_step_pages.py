"""Routing through training on the shipped run (weights at step 2000, eval traces at 250…2000): every traced step
is selectable, the pages follow it, and new text at a step without weights gets a one-line reason."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from app import session
from moe_core.paths import default_run_path
from tests.app.conftest import ROOT

STEPS = list(range(250, 2001, 250))


@pytest.fixture
def shipped_env(monkeypatch, tmp_path):
    monkeypatch.setenv("MOE_EXPLORER_RUN", str(default_run_path()))
    monkeypatch.setenv("MOE_EXPLORER_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("MOE_EXPLORER_WARM_UMAP", "0")


def page(at: AppTest, name: str) -> AppTest:
    at.switch_page(str(ROOT / "app" / "views" / f"{name}.py")).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_the_step_scrubber_moves_every_page_on_the_shipped_run(shipped_env, entry):
    at = AppTest.from_file(entry, default_timeout=120)
    at.run()
    page(at, "training")
    assert at.sidebar.select_slider[0].options == [str(s) for s in STEPS]
    assert at.sidebar.select_slider[0].value == 2000  # the latest step with weights
    at.select_slider(key="td_ckpt").set_value(750).run()
    assert not at.exception and at.session_state[session.KEY_STEP] == 750
    loss = next(c for c in at.get("plotly_chart") if c.proto.id.endswith("td_loss"))
    assert '"text":"step 750"' in loss.proto.spec  # the marker on the curves
    sat = next(c for c in at.get("plotly_chart") if c.proto.id.endswith("td_sat"))
    assert "agreement with step 2000" in sat.proto.spec

    page(at, "heatmaps")
    caption = next(c.value for c in at.caption if "tokens of" in c.value)
    assert caption.endswith("at step 750") and not at.error

    page(at, "token_routing")
    at.radio(key="tr_source").set_value("Sample").run()
    sample = next(o for o in at.selectbox(key="tr_sample").options if o.startswith("eval: "))
    at.selectbox(key="tr_sample").set_value(sample).run()
    assert not at.exception and not at.error and at.markdown  # the eval document's routing at step 750
    at.radio(key="tr_source").set_value("Paste text").run()
    at.text_area(key=session.KEY_TEXT).set_value("Some new text.").run()
    assert [e.value for e in at.error] == [
        "Could not route this text: step 750 has only the recorded eval documents, no weights: "
        "choose step 2000 to route new text"
    ]
