"""AppTest for every page against the tiny run: loads, main widgets work, uploads good and bad, escaping."""

from __future__ import annotations

import html as html_lib
import re

import pytest
from streamlit.testing.v1 import AppTest

from analysis import sources
from app import cache, session, uploads
from scripts.balancing_study import STRATEGIES
from tests.app.conftest import ROOT, token_html

XSS = "<script>alert(1)</script>"
PAGES = ["overview", "token_routing", "heatmaps", "training", "compare", "geometry", "expert", "train"]


def open_page(entry: str, page: str | None = None, **query) -> AppTest:
    at = AppTest.from_file(entry, default_timeout=90)
    at.query_params.update(query)
    at.run()
    if page is not None:
        at.switch_page(str(ROOT / "app" / "views" / f"{page}.py")).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def markdown_html(at: AppTest) -> str:
    return token_html(at)  # the coloured text: a component's HTML, not Markdown


def shown_text(html: str) -> str:
    """The text a browser displays for the coloured-token HTML."""
    return html_lib.unescape(re.sub(r"<[^>]+>", "", html.replace("<br>", "\n")))


@pytest.mark.parametrize("page", PAGES)
def test_every_page_loads(app_env, entry, page):
    at = open_page(entry, page)
    assert not at.error, [e.value for e in at.error]
    assert at.sidebar.selectbox[0].label == "Run"
    assert at.title[0].value


def test_overview_shows_the_model_card(app_env, entry):
    at = open_page(entry)  # the default page
    values = {m.label: m.value for m in at.metric}
    assert values["Experts × top-k"] == "4 × 2"
    assert values["Steps"] == "20"


def test_checkpoint_selector_is_shared(app_env, entry):
    at = open_page(entry, "training")
    assert at.sidebar.select_slider[0].value == 20
    at.select_slider(key="td_ckpt").set_value(10).run()  # the page slider drives the sidebar
    assert not at.exception
    assert at.session_state[session.KEY_STEP] == 10
    assert at.sidebar.select_slider[0].value == 10


def test_discovery_names_the_shipped_runs(monkeypatch, tmp_path):
    from moe_core.paths import default_run_path

    monkeypatch.setenv("MOE_EXPLORER_RUN", str(default_run_path()))  # as `moe-explorer app` sets it
    monkeypatch.setenv("MOE_EXPLORER_RUNS_DIR", str(tmp_path))
    runs = cache.discover_sources()
    assert list(runs.values()).count(str(default_run_path().resolve())) == 1
    assert runs["default (shipped)"] == str(default_run_path().resolve())
    assert sorted(n for n in runs if n.startswith("study: ")) == sorted(f"study: {n}" for n in STRATEGIES)


def test_training_overlays_the_shipped_study(app_env, entry):
    study = sources.study_runs()
    assert len(study) == 7, "sample_data/balancing_study ships one run per strategy"
    at = open_page(entry, "compare")
    at.button[0].click().run()  # "Compare the balancing-strategy study"
    assert not at.exception, [e.value for e in at.exception]
    assert sorted(at.multiselect(key="td_runs").value) == sorted(study)
    table = at.dataframe[0].value
    assert sorted(table["strategy"]) == sorted(f"study: {n}" for n in STRATEGIES) and set(table["n"]) == {1}
    assert not table["val PPL"].str.contains("±").any()  # one seed per strategy: no spread to show
    loss = next(c for c in at.get("plotly_chart") if c.proto.id.endswith("td_cmp_0"))
    assert loss.proto.spec.count('"name"') == 7 and "tiny" not in loss.proto.spec  # this run only when chosen
    at.checkbox(key="td_with_self").check().run()
    assert len(at.dataframe[0].value) == 8


def test_token_routing_escapes_user_text(app_env, entry):
    at = open_page(entry, "token_routing")
    at.text_area(key=session.KEY_TEXT).set_value(XSS + " & friends").run()
    assert not at.exception
    html = markdown_html(at)
    assert "<script" not in html and "&lt;" in html and "&amp;" in html
    assert shown_text(html) == XSS + " & friends"
    assert html.count("<span") >= 5  # every token coloured
    at.number_input(key="tr_token").set_value(2).run()
    assert not at.exception
    assert any(t.value.startswith("Token 2: ") for t in at.text)
    assert [b.label for b in at.get("download_button")][-2:] == ["Trace (CSV)", "Trace (Parquet)"]


def test_token_routing_layer_query_param(app_env, entry):
    at = open_page(entry, None, layer="1")
    at.switch_page(str(ROOT / "app" / "views" / "token_routing.py")).run()
    at.radio(key="tr_source").set_value("Sample").run()
    assert at.slider(key=session.KEY_LAYER).value == 1
    assert "E" in markdown_html(at)


def test_token_routing_uploads(app_env, entry):
    at = open_page(entry, "token_routing")
    at.radio(key="tr_source").set_value("Upload files").run()
    uploader = at.get("file_uploader")[0]
    uploader.set_value([("bin.txt", b"\x89PNG\x00\x00\x01", "text/plain"), ("empty.md", b"  \n", "text/markdown")])
    at.run()
    assert not at.exception
    errors = " ".join(e.value for e in at.error)
    assert "bin.txt: looks like a binary file" in errors and "empty.md: the file is empty" in errors
    assert not markdown_html(at)
    at.get("file_uploader")[0].set_value([("good.py", "x = 'héllo'\n".encode("utf-16"), "text/x-python")])
    at.run()
    assert not at.exception and not at.error
    assert shown_text(markdown_html(at)) == "x = 'héllo'\n"


def test_heatmaps_and_geometry_widgets(app_env, entry):
    at = open_page(entry, "heatmaps", layer="1")
    assert at.selectbox(key="hm_layer").value == 1
    at.slider(key="hm_min_share").set_value(0.1).run()
    assert not at.exception
    at = open_page(entry, "geometry")
    for color in ("domain", "token"):
        at.radio(key="geo_color").set_value(color).run()
        assert not at.exception
    assert at.metric[0].value != "0"


def test_train_page_validates_the_form(app_env, entry):
    at = open_page(entry, "train")
    at.text_input(key="train_name").set_value("bad name!")
    at.button[0].click().run()
    assert "letters, digits" in at.error[0].value


def test_decode_upload():
    assert uploads.decode_upload("a.txt", "héllo".encode()).text == "héllo"
    assert uploads.decode_upload("a.txt", b"\xef\xbb\xbfhi").text == "hi"  # UTF-8 BOM dropped
    assert uploads.decode_upload("a.csv", "x,y".encode("utf-16")).text == "x,y"
    assert uploads.decode_upload("a.txt", b"caf\xe9").text == "café"  # cp1252 fallback, with a notice
    assert "binary" in uploads.decode_upload("a.md", b"ab\x00cd").error
    assert "empty" in uploads.decode_upload("a.md", b"").error
    assert "too large" in uploads.decode_upload("a.md", b"a" * 11, max_bytes=10).error
    assert "unsupported" in uploads.decode_upload("a.exe", b"MZ").error
    docs = uploads.docs_from_uploads(
        [uploads.Upload("d.csv", "label,text\ncode,x = 1\nprose,Hello\n", None), uploads.Upload("notes.md", "hi", None)]
    )
    assert docs == [("d.csv#0", "code", "x = 1"), ("d.csv#1", "prose", "Hello"), ("notes.md", "notes", "hi")]


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory):
    pytest.importorskip("transformers", reason="Hugging Face models need the optional extra: pip install .[hf]")
    from tests.app.conftest import make_tiny_hf

    return make_tiny_hf(tmp_path_factory.mktemp("hf") / "tiny-dsv3")


def test_pages_on_a_hugging_face_model(app_env, entry, tiny_hf, monkeypatch):
    monkeypatch.setenv("MOE_EXPLORER_HF", str(tiny_hf))
    at = open_page(entry)
    assert "HF: tiny-dsv3" in at.sidebar.selectbox[0].options
    at.sidebar.selectbox[0].set_value(str(tiny_hf.resolve())).run()
    assert not at.exception and "Hugging Face model" in at.title[0].value
    for page in PAGES[1:-1]:
        at.switch_page(str(ROOT / "app" / "views" / f"{page}.py")).run()
        assert not at.exception, (page, [e.value for e in at.exception])
        if page == "training":
            assert "without training history" in at.info[0].value
    at.switch_page(str(ROOT / "app" / "views" / "token_routing.py")).run()
    at.text_area(key=session.KEY_TEXT).set_value("def f(x): return x").run()
    assert not at.exception and not at.error
    assert shown_text(markdown_html(at)) == "def f(x): return x"


def test_causal_numbers_on_a_hugging_face_model(app_env, entry, tiny_hf, monkeypatch):
    """Ablation sweep, the expert's Δ loss and logit lens, and what-if routing through hooks, on the built-in
    samples (a Hugging Face folder has no eval documents), said on the page."""
    monkeypatch.setenv("MOE_EXPLORER_HF", str(tiny_hf))
    at = open_page(entry)
    at.sidebar.selectbox[0].set_value(str(tiny_hf.resolve())).run()
    at.switch_page(str(ROOT / "app" / "views" / "causal.py")).run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("Measured on the 4 built-in samples" in c.value for c in at.caption)
    assert "20 ablations (2 layers × 8 experts, plus 2 references per layer)" in at.info[0].value
    at.button(key="ca_run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert "Specialization vs Δ loss" in [h.value for h in at.subheader]
    at.switch_page(str(ROOT / "app" / "views" / "expert.py")).run()
    at.toggle(key="ex_effect").set_value(True).run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("built-in samples" in c.value for c in at.caption)
    at.toggle(key="ex_lens").set_value(True).run()
    assert not at.exception and any("promotes" in md.value.lower() for md in at.markdown)
    at.switch_page(str(ROOT / "app" / "views" / "token_routing.py")).run()
    at.text_area(key=session.KEY_TEXT).set_value("def f(x): return x + 1").run()
    at.radio(key="wi_kind").set_value("force")  # form widgets: set, then submit in one run
    at.selectbox(key="wi_force").set_value(3)
    at.button[[b.label for b in at.button].index("Apply")].click().run()
    assert not at.exception and not at.error, [e.value for e in at.exception]
    assert any(c.value.startswith("Δ loss = loss with the change") for c in at.caption)
    summary = next(d.value for d in at.dataframe if "n_changed" in d.value)
    assert summary["n_changed"].sum() > 0  # forcing E3 changed tokens' experts


def test_launch_command_and_errors(tiny_run, tmp_path):
    import argparse
    import subprocess
    import sys

    from app import launch
    from app.cli.app import run_app
    from moe_core.paths import default_run_path

    cmd = launch.app_command(8555)
    assert cmd[1:4] == ["-m", "streamlit", "run"] and cmd[4].endswith("app/main.py")
    for flag, value in [("--server.headless", "true"), ("--server.fileWatcherType", "none"),
                        ("--browser.gatherUsageStats", "false"), ("--server.port", "8555")]:  # fmt: skip
        assert cmd[cmd.index(flag) + 1] == value
    assert launch.resolve_run(str(tiny_run)) == tiny_run
    assert launch.resolve_run(None) == default_run_path()
    # the launcher does not import torch (1.5 s before the server would start)
    probe = "import sys; from app import launch; launch.resolve_run(None); print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True).stdout == "False\n"
    with pytest.raises(ValueError, match="not a run directory"):
        launch.resolve_run(str(tmp_path))
    assert launch.app_env(tiny_run)["MOE_EXPLORER_RUN"] == str(tiny_run.resolve())
    with pytest.raises(ValueError, match="no config.json"):
        run_app(argparse.Namespace(run=None, port=8555, hf=[str(tmp_path)]))
    with pytest.raises(ValueError, match="--port"):
        run_app(argparse.Namespace(run=str(tiny_run), port=0, hf=[]))


@pytest.mark.slow
def test_the_launcher_becomes_the_server(tiny_run, tmp_path):
    """`moe-explorer app` execs Streamlit: stopping it stops the server (no orphan left serving)."""
    import os
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, MOE_EXPLORER_RUNS_DIR=str(tmp_path), MOE_EXPLORER_WARM_UMAP="0")
    cmd = [sys.executable, "-m", "app.cli", "app", "--run", str(tiny_run), "--port", str(port)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    health = f"http://127.0.0.1:{port}/_stcore/health"
    try:
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(health, timeout=2) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert time.time() < deadline and proc.poll() is None, "the app did not start"
                time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(20)
    with pytest.raises(OSError):  # nothing serves the port any more
        urllib.request.urlopen(health, timeout=2)


def test_a_run_without_checkpoints(tiny_run, entry, monkeypatch, tmp_path):
    import shutil

    fresh = tmp_path / "fresh"
    shutil.copytree(tiny_run, fresh, ignore=shutil.ignore_patterns("checkpoints", "trace_*"))
    monkeypatch.setenv("MOE_EXPLORER_RUN", str(fresh))
    monkeypatch.setenv("MOE_EXPLORER_RUNS_DIR", str(tmp_path / "none"))
    at = open_page(entry)
    assert "no checkpoint (yet)" in at.sidebar.warning[0].value
    for page in PAGES[1:]:
        at.switch_page(str(ROOT / "app" / "views" / f"{page}.py")).run()
        assert not at.exception, (page, [e.value for e in at.exception])
        if page in ("token_routing", "heatmaps", "geometry"):
            assert "no checkpoint: it is still training" in at.info[0].value


def test_a_broken_run_gives_a_message(entry, monkeypatch, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "run.json").write_text('{"format": "something else"}')
    monkeypatch.setenv("MOE_EXPLORER_RUN", str(broken))
    monkeypatch.setenv("MOE_EXPLORER_RUNS_DIR", str(tmp_path / "none"))
    at = open_page(entry)
    assert "unknown run format" in at.error[0].value
