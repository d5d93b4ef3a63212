"""Concurrent users: 4 app sessions at once get their own routing; a training run started from the Train page
runs in a background process while other sessions keep working; the Train page and the run selector keep
every run inside the runs folder. (Two trainers on one run directory: tests/reliability/test_runs.py.)"""

from __future__ import annotations

import html as html_lib
import os
import re
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from analysis.recording import record
from analysis.sources import discover_sources
from app import cache, session, training_jobs
from moe_core.files import read_jsonl
from moe_core.run import load_run
from tests.app.conftest import token_html
from tests.reliability.conftest import REPO

PAGES = REPO / "app" / "views"


def open_page(entry: str, page: str, **query) -> AppTest:
    at = AppTest.from_file(entry, default_timeout=120)
    at.query_params.update(query)
    at.run()
    at.switch_page(str(PAGES / f"{page}.py")).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def shown_tokens(at: AppTest) -> str:
    """The text a browser shows in the token-colouring block."""
    block = token_html(at)
    return html_lib.unescape(re.sub(r"<[^>]+>", "", block.replace("<br>", "\n")))


def route_in_session(entry: str, text: str) -> tuple[str, str]:
    at = open_page(entry, "token_routing")
    at.text_area(key=session.KEY_TEXT).set_value(text).run()
    assert not at.exception, [e.value for e in at.exception]
    return text, shown_tokens(at)


TEXTS = [f"session {i}: " + word * (i + 2) for i, word in enumerate(["alpha ", "<b>beta</b> ", "γάμμα ", "δ\n"])]


def test_four_sessions_route_at_once_on_one_cached_model(rel_app_env):
    """What 4 browser sessions do at the same moment: each session's script thread routes its own text
    through the one cached model (app.cache.route_trace -> the source's record). Without the recorder's
    per-model lock the hooks of one recording captured the other sessions' tokens."""
    source = cache.get_source(str(rel_app_env))
    cache.route_docs.clear()  # every call below really records
    barrier = threading.Barrier(4)

    def session(i: int):
        barrier.wait()  # all four start together
        out = []
        for round_ in range(3):
            text = TEXTS[(i + round_) % 4] + " " * i  # a text of this session only: no shared cache entry
            out.append((text, cache.route_trace(source, 20, [("input", f"s{i}", text)])))
        return out

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = [r for rs in pool.map(session, range(4)) for r in rs]
    assert len(results) == 12
    model, tok = source.model(20), source.tokenizer
    for text, trace in results:
        assert trace.texts == {"input": text}
        tiles = "".join(text[a:b] for a, b in zip(trace.tokens["char_start"], trace.tokens["char_end"]))
        assert tiles == text
        alone = record(model, tok, text)  # the same text routed with nobody else around
        assert trace.tokens["token_id"].tolist() == alone.tokens["token_id"].tolist()
        assert trace.routing["expert"].tolist() == alone.routing["expert"].tolist()
        assert np.allclose(trace.routing["weight"], alone.routing["weight"])


def test_four_app_sessions_keep_their_own_state(rel_app_env, entry):
    """4 AppTest sessions open side by side (AppTest itself is not thread-safe, so their reruns interleave on
    one thread): each shows its own text and keeps its own widget state."""
    sessions = [open_page(entry, "token_routing") for _ in TEXTS]
    for at, text in zip(sessions, TEXTS):
        at.text_area(key=session.KEY_TEXT).set_value(text).run()
    for at, text in zip(sessions, TEXTS):
        at.run()  # rerun after every other session routed
        assert not at.exception
        assert shown_tokens(at) == text
        assert at.session_state[session.KEY_TEXT] == text


@pytest.mark.slow
def test_ui_training_runs_in_the_background(rel_app_env, entry, corpus_dir, monkeypatch, tmp_path):
    """Start a real (tiny) training run from the Train page; while it runs, another session routes text; the
    Stop button ends it with a checkpoint. The page only starts a process: it never waits for training."""
    real = training_jobs.train_command

    def command(out, preset, steps, balance, experts, top_k):  # the built-in corpus -> the tiny test corpus
        cmd = real(out, preset, steps, balance, experts, top_k)
        i = cmd.index("--corpus-size")
        return cmd[:i] + ["--corpus", str(corpus_dir), "--batch-size", "4", "--device", "cpu"] + cmd[i + 2 :]

    monkeypatch.setattr(training_jobs, "train_command", command)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    trainer = open_page(entry, "train")
    trainer.text_input(key="train_name").set_value("bg-run")
    trainer.selectbox(key="train_preset").set_value("tiny")
    trainer.number_input(key="train_steps").set_value(100_000)
    trainer.button[0].click().run()
    assert not trainer.exception, [e.value for e in trainer.exception]
    job = trainer.session_state[session.KEY_TRAIN_PROC]
    proc = job["proc"]
    try:
        assert proc.poll() is None  # the page returned while training goes on
        assert Path(job["out"]) == (tmp_path / "runs" / "bg-run").resolve()
        # another session works meanwhile, and sees its own result
        text, shown = route_in_session(entry, "while training runs")
        assert shown == text
        hist = Path(job["out"]) / "history" / "train.jsonl"
        deadline = time.monotonic() + 120
        while len(read_jsonl(hist)) < 2:  # training really progresses in the background
            assert proc.poll() is None, Path(job["log"]).read_text()
            assert time.monotonic() < deadline
            time.sleep(0.1)
        trainer.run()
        assert any("running…" in m.value for m in trainer.markdown)
        trainer.button(key="train_stop").click().run()  # SIGTERM: finish the step, checkpoint, exit
        assert proc.wait(timeout=120) == 0, Path(job["log"]).read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    run = load_run(job["out"])
    assert run.latest_step() == read_jsonl(hist)[-1]["step"]


def test_train_page_keeps_runs_inside_the_runs_folder(rel_app_env, entry, tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "escape").symlink_to(tmp_path / "outside")  # dangling: `exists()` is False
    started = []
    monkeypatch.setattr(training_jobs, "start_training", lambda cmd, out: started.append(out))
    at = open_page(entry, "train")
    for name, message in (("../up", "letters, digits"), ("/abs", "letters, digits"),
                          ("escape", "outside the runs folder")):  # fmt: skip
        at.text_input(key="train_name").set_value(name)
        at.button[0].click().run()
        assert not at.exception
        assert message in at.error[0].value, at.error[0].value
    assert started == [] and not (tmp_path / "outside").exists()


def test_run_selector_ignores_names_and_links_outside(rel_app_env, entry, tmp_path):
    """`?run=` only picks a discovered run; a symlink out of the runs folder is not discovered."""
    runs = tmp_path / "runs"
    runs.mkdir()
    outside = tmp_path / "outside_run"
    import shutil

    shutil.copytree(rel_app_env, outside)
    (runs / "linked").symlink_to(outside)
    found = discover_sources(None, (), runs)
    assert str(outside.resolve()) not in found.values()
    at = open_page(entry, "overview", run="../outside_run")
    assert at.session_state[session.KEY_RUN] == str(Path(rel_app_env).resolve())
    pytest.importorskip("streamlit")
