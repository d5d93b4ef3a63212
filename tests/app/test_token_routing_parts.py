"""Token routing under AppTest: the router steps wait for a picked token, the selected token's panel, and "Compare
with step" on the shipped run (an eval document at steps 2000 and 250; new text at a step without weights gets a
reason instead)."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from app import routing_ui, session
from tests.app.conftest import ROOT, token_html
from tests.app.test_step_pages import shipped_env  # noqa: F401  (fixture)


def token_routing(entry: str, **query) -> AppTest:
    at = AppTest.from_file(entry, default_timeout=120)
    at.run()
    at.query_params.update(query)  # a fresh browser opening token_routing?QUERY
    at.switch_page(str(ROOT / "app" / "views" / "token_routing.py")).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def chart_ids(at: AppTest) -> list[str]:
    return [c.proto.id for c in at.get("plotly_chart")]


def test_router_steps_wait_for_a_picked_token(app_env, entry):
    at = token_routing(entry)
    at.text_area(key=session.KEY_TEXT).set_value("def f(x): return x + 1").run()
    assert not any(i.endswith("tr_steps") for i in chart_ids(at))  # a new text: the grid only
    assert any("to see how the router chose its experts" in c.value for c in at.caption)
    assert any(t.value.startswith("Token 0: ") for t in at.text)  # the panel shows the first token meanwhile
    at.number_input(key=routing_ui.TOKEN).set_value(3).run()
    assert any(i.endswith("tr_steps") for i in chart_ids(at)) and any(t.value.startswith("Token 3: ") for t in at.text)
    at.text_area(key=session.KEY_TEXT).set_value("another text entirely").run()
    assert not any(i.endswith("tr_steps") for i in chart_ids(at))  # picked in the old text, not in this one


def test_a_token_link_counts_as_picked(app_env, entry):
    at = token_routing(entry, sample="Math", token="4")
    assert any(t.value.startswith("Token 4: ") for t in at.text)
    assert any(i.endswith("tr_steps") for i in chart_ids(at))


def test_compare_an_eval_document_with_an_earlier_step(shipped_env, entry):  # noqa: F811
    at = token_routing(entry, sample="Math")
    sample = next(o for o in at.selectbox(key="tr_sample").options if o.startswith("eval: "))
    at.selectbox(key="tr_sample").set_value(sample).run()
    assert at.selectbox(key=routing_ui.COMPARE).options[0] == "—" and "compare" not in at.query_params
    at.selectbox(key=routing_ui.COMPARE).set_value(250).run()
    assert not at.exception and not at.error
    assert any(i.endswith("tr_cmp_bars") for i in chart_ids(at))
    assert at.query_params["compare"] in ("250", ["250"])
    caption = next(c.value for c in at.caption if c.value.startswith("Denominator: the "))
    assert "tokens of this document, per layer" in caption and "have another top-1 expert at step 250" in caption
    assert token_html(at).count('<div class="moe-tokens"') == 3  # the page's text, step 2000 and step 250
    assert at.dataframe  # the token table
    at.selectbox(key=routing_ui.COMPARE).set_value("off").run()
    assert "compare" not in at.query_params and not any(i.endswith("tr_cmp_bars") for i in chart_ids(at))

    at.radio(key="tr_source").set_value("Paste text").run()  # new text: no weights at step 250
    at.text_area(key=session.KEY_TEXT).set_value("Some new text.").run()
    at.selectbox(key=routing_ui.COMPARE).set_value(250).run()
    assert not at.exception and not at.error
    assert any("Cannot route this text at step 250" in i.value for i in at.info)


def test_document_name_shows_label_and_start():
    document_name = routing_ui.document_name
    assert document_name("3", "prose", "The quick\n brown fox") == "3 · prose · The quick brown fox"
    long = document_name("7", "", "word " * 40, chars=12)
    assert long == "7 · word word w…" and len(long.split(" · ")[1]) == 12
    assert document_name("a", "code", "<b>x</b>") == "a · code · <b>x</b>"  # plain text: shown, not rendered
