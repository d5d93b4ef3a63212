"""Request limits: upload size and count, tokens per request, characters pasted, points projected. Each limit
is enforced with a message, so one request cannot hold more than a few tens of MB on the server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from analysis.projections import MAX_POINTS, ProjectionParams, project
from analysis.recording import record
from app import cache, session, uploads
from tests.reliability.conftest import REPO


def test_upload_size_limit_has_a_message():
    ok = uploads.decode_upload("a.txt", b"a" * uploads.UPLOAD_MAX_BYTES)
    assert ok.error is None
    big = uploads.decode_upload("big.txt", b"a" * (uploads.UPLOAD_MAX_BYTES + 1))
    assert big.text is None and big.error == "big.txt: too large (1,000,001 bytes; the limit is 1 MB)."
    huge = uploads.decode_upload("huge.md", b"a" * 5_000_000)
    assert huge.error == "huge.md: too large (5 MB; the limit is 1 MB)."


def test_upload_count_limit_has_a_message():
    files = [SimpleNamespace(name=f"f{i}.txt", getvalue=lambda i=i: f"text {i}".encode()) for i in range(13)]
    good, errors = uploads.read_uploads(files)
    assert [u.name for u in good] == [f"f{i}.txt" for i in range(uploads.UPLOAD_MAX_FILES)]
    assert errors == ["Only 10 files per request; not read: f10.txt, f11.txt, f12.txt."]


def test_upload_widgets_carry_the_size_limit(rel_app_env, entry):
    """The browser and the server refuse bigger files before the page reads them (Streamlit's own message)."""
    from tests.reliability.test_concurrency import open_page

    at = open_page(entry, "token_routing")
    assert at.text_area(key=session.KEY_TEXT).proto.max_chars == uploads.MAX_TEXT_CHARS
    at.radio(key="tr_source").set_value("Upload files").run()
    assert at.get("file_uploader")[0].proto.max_upload_size_mb == uploads.UPLOAD_MAX_MB
    at = open_page(entry, "heatmaps")
    at.radio(key="hm_source").set_value("My labelled files").run()
    assert at.get("file_uploader")[0].proto.max_upload_size_mb == uploads.UPLOAD_MAX_MB
    # the same limit as the widget counts it in the browser (1 MB = 1,000,000 bytes; 2**20 only on Windows), so a
    # file is refused by the widget or by the page, never by both with two different numbers
    assert uploads.UPLOAD_MAX_BYTES == uploads.UPLOAD_MAX_MB * 1_000_000


def test_token_limit_counts_tokens_not_characters(rel_app_env):
    """An emoji is one character but up to 4 byte tokens: 19,000 of them are ~76,000 tokens."""
    source = cache.get_source(str(rel_app_env))
    emoji = "\U0001f600" * 19_000
    assert len(emoji) < uploads.MAX_TOKENS
    docs, cut = uploads.limit_docs(source, [("input", "input", emoji)])
    assert cut
    trace = cache.route_trace(source, 20, docs)
    assert uploads.MAX_TOKENS - 4 < trace.n_tokens <= uploads.MAX_TOKENS


def test_token_limit_over_several_documents(rel_app_env):
    source = cache.get_source(str(rel_app_env))
    docs = [(f"d{i}", "x", "word " * 6000) for i in range(5)]  # 5 x ~6,000 tokens
    limited, cut = uploads.limit_docs(source, docs)
    assert cut and len(limited) < 5
    assert cache.route_trace(source, 20, limited).n_tokens == uploads.MAX_TOKENS
    small = [("a", "x", "short text")]
    assert uploads.limit_docs(source, small) == (small, False)


def test_pasted_text_is_capped_before_tokenizing():
    seen = []
    source = SimpleNamespace(token_spans=lambda text: seen.append(len(text)) or [(0, 1)] * (len(text) // 4))
    docs, cut = uploads.limit_docs(source, [("input", "input", "abcd" * 1_000_000)])  # 4 M characters
    assert cut and seen == [uploads.MAX_TEXT_CHARS]


def test_token_routing_page_says_when_it_cut(rel_app_env, entry):
    from tests.reliability.test_concurrency import open_page

    at = open_page(entry, "token_routing")
    at.text_area(key=session.KEY_TEXT).set_value("lighthouse keeper " * 15_000).run()  # ~ 30k+ tokens
    assert not at.exception
    assert f"Only the first {uploads.MAX_TOKENS:,} tokens are routed." in [w.value for w in at.warning]
    caption = next(c.value for c in at.caption if "tokens · layer" in c.value)
    assert caption.startswith(f"{uploads.MAX_TOKENS:,} tokens")


def test_record_refuses_too_many_tokens_with_a_message(tiny_model, tiny_tok):
    with pytest.raises(ValueError, match="too much text: more than 100 tokens in one request"):
        record(tiny_model, tiny_tok, ["word " * 60, "word " * 60], max_tokens=100)
    assert record(tiny_model, tiny_tok, "word " * 20, max_tokens=100).n_tokens <= 100


def test_projection_points_are_capped_with_a_message(tiny_model, tiny_tok):
    text = " ".join(f"w{i}" for i in range(300))
    trace = record(tiny_model, tiny_tok, text, max_hidden=500)
    assert len(trace.hidden_rows) > 200
    p = project(trace, 0, params=ProjectionParams(max_points=100))
    assert len(p.coords) == 100 and p.extra["points_total"] == len(trace.hidden_rows)
    for name in ("max_points", "silhouette_points"):
        with pytest.raises(ValueError, match=f"{name} is 10,000,000; at most {MAX_POINTS:,} points"):
            ProjectionParams(**{name: 10_000_000}).validate()
        with pytest.raises(ValueError, match="at most"):
            project(trace, 0, params=ProjectionParams(**{name: 10_000_000}))


def test_recorder_keeps_at_most_max_hidden_router_inputs(tiny_model, tiny_tok):
    trace = record(tiny_model, tiny_tok, "x = 1 " * 2000)  # default max_hidden = 2000
    assert trace.n_tokens > 2000 and len(trace.hidden_rows) == 2000


@pytest.mark.slow
def test_one_full_request_stays_small_in_memory(rel_run, tmp_path):
    """Peak memory of a fresh process that routes a MAX_TOKENS request through the app's path (tiny run)."""
    script = f"""
import json, resource, sys
sys.path.insert(0, {str(REPO)!r})
import torch; torch.set_num_threads(1)
from app import cache, uploads
source = cache.get_source({str(rel_run)!r})
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
docs, cut = uploads.limit_docs(source, [("input", "input", "lighthouse keeper " * 40_000)])
trace = cache.route_trace(source, 20, docs)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"tokens": trace.n_tokens, "before_mb": before / 1024, "after_mb": after / 1024}}))
"""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    numbers = json.loads(out.stdout.strip().splitlines()[-1])
    assert numbers["tokens"] == uploads.MAX_TOKENS
    assert numbers["after_mb"] - numbers["before_mb"] < 1024, numbers  # well under 1 GiB per request
    assert np.isfinite(numbers["after_mb"])
