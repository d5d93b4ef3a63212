"""AppTest of every page opened on a routing dataset (`moe-explorer app --dataset DIR`): no exception, what it
cannot show said in words; Token routing pages through every document, Router geometry projects the whole stored
sample, Training dynamics draws the saturation of two recorded steps."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from analysis.sources import dataset_source
from tests.analysis.dataset_fixtures import make_trace, write_dataset
from tests.app.conftest import ROOT, token_html

pytest.importorskip("duckdb")

PAGES = ["overview", "token_routing", "heatmaps", "training", "compare", "geometry", "expert", "causal", "train"]
PAGE_TOKENS = 40  # a few documents a page: the 9 documents of the fixture fill several pages


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    traces = {s: make_trace(seed=4, routing_seed=s, step=s, D=8) for s in (100, 200)}
    return write_dataset(tmp_path_factory.mktemp("appds") / "tinyset", traces, max_hidden=12), traces


@pytest.fixture
def dataset_env(app_env, dataset, monkeypatch):
    monkeypatch.setenv("MOE_EXPLORER_DATASET", str(dataset[0]))  # what `app --dataset` sets: the app opens on it
    monkeypatch.setattr(dataset_source, "PAGE_TOKENS", PAGE_TOKENS)
    return dataset


def open_page(entry: str, view: str, **query) -> AppTest:
    at = AppTest.from_file(entry, default_timeout=120)
    at.query_params.update(query)
    at.run()
    at.switch_page(str(ROOT / "app" / "views" / f"{view}.py")).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def n_pages(root) -> int:
    return dataset_source.DatasetSource(root, threads=1, page_tokens=PAGE_TOKENS).n_pages()


@pytest.mark.parametrize("page", PAGES)
def test_every_page_opens_on_a_dataset(dataset_env, entry, page):
    at = open_page(entry, page)
    assert at.sidebar.selectbox[0].value == str(dataset_env[0].resolve())
    assert not at.error, [e.value for e in at.error]
    said = " ".join(x.value for x in [*at.info, *at.caption, *at.warning])
    expected = {
        "overview": "No training history",
        "token_routing": "new text cannot be routed here",
        "heatmaps": "bits (shuffled ",  # the MI baselines of every token, not NaN
        "training": "No training curves",
        "geometry": "stored stratified sample",
        "causal": "recorded routing dataset",  # no model to intervene on
    }
    assert expected.get(page, "") in said, (page, said)
    if page == "heatmaps":
        assert said.count("(shuffled ") == 2


def test_token_routing_pages_to_the_last_document(dataset_env, entry):
    root, traces = dataset_env
    source = dataset_source.DatasetSource(root, threads=1, page_tokens=PAGE_TOKENS)
    n = source.n_pages()
    assert n > 2 and len(source.page_docs(0)) > 1 and source.page_docs(n - 1)[-1] == 8
    at = open_page(entry, "token_routing")
    assert at.number_input(key="tr_page").value == 1
    shown = [o.split(" · ")[0] for o in at.selectbox(key="tr_doc").options]  # "id · label · first words"
    assert shown == list(source.stored_trace(200).texts)  # page 1's documents
    at.number_input(key="tr_page").set_value(n).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.query_params["page"] == str(n)
    k = len(source.page_docs(n - 1))
    assert f"Page {n} of {n}: {k} document{'s' * (k != 1)}," in " ".join(c.value for c in at.caption)
    if k > 1:
        at.selectbox(key="tr_doc").set_value("doc8").run()
    last = traces[200].select_docs(["doc8"])  # the last document of the stream
    html = token_html(at)
    assert html.count("<span") >= last.n_tokens and last.texts["doc8"].split()[0] in html
    for page in range(n, 0, -1):  # every page opens, each document reachable
        at.number_input(key="tr_page").set_value(page).run()
        assert not at.exception
        for doc in list(source.stored_trace(200, page=page - 1).texts) if len(source.page_docs(page - 1)) > 1 else []:
            at.selectbox(key="tr_doc").set_value(doc).run()
            assert not at.exception and at.query_params["doc"] == doc


def test_a_link_opens_a_page_and_a_document(dataset_env, entry):
    root, traces = dataset_env
    n = n_pages(root)
    at = open_page(entry, "token_routing", page=str(n), doc="doc8", token="2")
    assert at.number_input(key="tr_page").value == n
    assert any(t.value.startswith("Token 2: ") for t in at.text)
    last = traces[200].select_docs(["doc8"])
    assert repr(last.tokens["token_text"].iloc[2]) in next(t.value for t in at.text if t.value.startswith("Token 2"))
    assert any("routing datasets), so the steps cannot be drawn" in c.value for c in at.caption)  # no scores
    at.selectbox(key="tr_compare").set_value(100).run()  # the same document at the other recorded step
    assert not at.exception and not at.error, [e.value for e in [*at.exception, *at.error]]
    assert any(c.proto.id.endswith("tr_cmp_bars") for c in at.get("plotly_chart"))


def test_training_shows_the_saturation_of_two_steps(dataset_env, entry):
    at = open_page(entry, "training")
    assert "No training curves" in at.info[0].value and "routing" in at.info[0].value
    charts = [c.proto.id for c in at.get("plotly_chart")]
    assert any(c.endswith("td_sat") for c in charts) and any(c.endswith("td_load") for c in charts)
    assert not any(c.endswith("td_loss") for c in charts)


def test_geometry_projects_the_whole_stored_sample(dataset_env, entry):
    root, _ = dataset_env
    source = dataset_source.DatasetSource(root, threads=1, page_tokens=PAGE_TOKENS)
    sample = source.dataset.sample(200)
    first_page = source.stored_trace(200)
    in_first = sum(d in set(source.page_docs(0).tolist()) for d in sample["doc_index"])
    assert in_first < len(sample["doc_index"])  # the sample reaches beyond the first page
    at = open_page(entry, "geometry")
    assert at.metric[0].value == f"{len(sample['doc_index']):,}"
    assert first_page.hidden is None or len(first_page.hidden_rows) < len(sample["doc_index"])
    assert "stored stratified sample" in " ".join(c.value for c in at.caption)
    for color in ("domain", "token"):
        at.radio(key="geo_color").set_value(color).run()
        assert not at.exception


def test_compare_with_the_dataset_itself(dataset_env, entry):
    at = open_page(entry, "compare")
    at.checkbox(key="td_with_self").check().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.dataframe[0].value["strategy"].tolist() == ["dataset: tinyset"]
    assert any("No training history, hence no numbers or curves, for: dataset: tinyset" in c.value for c in at.caption)


def test_geometry_of_a_dataset_without_a_sample(app_env, entry, monkeypatch, tmp_path):
    root = write_dataset(tmp_path / "nosample", {200: make_trace(seed=2, step=200)})  # no router inputs recorded
    monkeypatch.setenv("MOE_EXPLORER_DATASET", str(root))
    at = open_page(entry, "geometry")
    assert "stores no router inputs at step 200" in at.info[0].value and not at.get("plotly_chart")
