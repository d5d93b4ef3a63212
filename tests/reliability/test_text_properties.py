"""Property-based tests (hypothesis, derandomized) of text in -> tokenizer -> recorder -> trace -> metrics, and
of the upload handler (app.uploads.decode_upload / docs_from_uploads / limit_docs, app.cache.route_trace).

Every generated input either works (the trace covers the text exactly, metrics are finite) or is refused with
a ValueError / an Upload.error that is one human sentence. Nothing else may be raised, and the app's cached
traces stay correct after any sequence of good and bad requests.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from analysis import metrics
from analysis.recording import record
from analysis.trace import load as load_trace
from moe_core.tokenizer import EOT, encode_with_offsets

# derandomized: the same examples on every run (CI-stable); no deadline (a shared 2-core machine is noisy)
PROPS = settings(derandomize=True, deadline=None, database=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip

COMBINING = "\u0301\u0308\u0327\u20dd"  # acute, diaeresis, cedilla, enclosing circle
RTL = "\u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627\u200f\u202e"  # Hebrew, Arabic, RLM, RLO
EMOJI = "\U0001f600\U0001f9d1\u200d\U0001f4bb\U0001f1eb\U0001f1f7\ufe0f"  # ZWJ sequence, flag, variation selector
ODD = "\x00\x01\x7f\ufeff\u200b\ufffd\r\n\t\u2028"  # NUL, controls, BOM, zero width, replacement, line sep
SPECIALS = ["", " ", "\n\n\t  ", "\x00", EOT, EOT * 3, "a" + EOT + "b", "<script>alert(1)</script>",
            "e" + COMBINING * 40, RTL, EMOJI * 5, ODD, "\U0010ffff", "x" * 300]  # fmt: skip

texts = st.one_of(
    st.sampled_from(SPECIALS),
    st.text(max_size=120),  # any code point but surrogates
    st.text(alphabet=st.sampled_from(list(COMBINING + RTL + EMOJI + ODD + "ab <>&\"'")), max_size=200),
    st.lists(st.sampled_from(SPECIALS[1:] + ["word", " ", "\n"]), max_size=12).map("".join),
)
MESSAGE = re.compile(r"^[^\n]{8,300}$")  # one line of human text


def check_trace(trace, text: str, tok, n_layers: int, n_experts: int, top_k: int) -> None:
    """The trace covers `text` exactly once and its numbers are sane."""
    ids, spans = encode_with_offsets(tok, text)
    tokens = trace.tokens
    assert len(tokens) == len(ids) and tokens["token_id"].tolist() == ids
    assert "".join(text[s:e] for s, e in zip(tokens["char_start"], tokens["char_end"])) == text
    assert trace.texts == {"0": text}
    assert len(trace.routing) == len(ids) * n_layers * top_k
    experts = trace.experts_array()
    assert experts.shape == (len(ids), n_layers, top_k) and experts.min() >= 0 and experts.max() < n_experts
    assert np.isfinite(trace.routing["weight"].to_numpy()).all()
    assert np.isfinite(trace.token_layer["entropy"].to_numpy()).all()
    table = metrics.summary(trace.routing, n_experts, tokens=trace.tokens, scores=trace.scores)
    assert np.isfinite(table[["max_vio", "cv", "load_entropy", "router_entropy"]].to_numpy()).all()
    assert (table["n_tokens"] == len(ids)).all()


@settings(PROPS, max_examples=140)
@given(text=texts)
def test_any_text_routes_or_is_refused_clearly(tiny_model, tiny_tok, text):
    cfg = tiny_model.config
    if not text:
        with pytest.raises(ValueError, match="the text is empty"):
            record(tiny_model, tiny_tok, text)
        return
    trace = record(tiny_model, tiny_tok, text)
    check_trace(trace, text, tiny_tok, len(cfg.moe_layers), cfg.moe.n_experts, cfg.moe.top_k)


@settings(PROPS, max_examples=30)
@given(text=texts, cut=st.integers(0, 200))
def test_lone_surrogates_give_a_message(tiny_model, tiny_tok, text, cut):
    """A str holding a lone surrogate (what `bytes.decode(errors="surrogateescape")` makes) is not text."""
    cut = min(cut, len(text))
    bad = text[:cut] + "\udcff" + text[cut:]
    with pytest.raises(ValueError, match=r"not valid Unicode: lone surrogate U\+DCFF at character \d+") as info:
        record(tiny_model, tiny_tok, bad)
    assert MESSAGE.match(str(info.value))


@settings(PROPS, max_examples=20)
@given(text=texts.filter(bool))
def test_traces_survive_parquet_round_trip(tiny_model, tiny_tok, tmp_path, text):
    trace = record(tiny_model, tiny_tok, text, meta={"run": text[:20]})  # user text in the meta too
    (tmp_path / "t.parquet").write_bytes(trace.to_parquet_bytes())
    again = load_trace(tmp_path / "t.parquet")
    assert again.texts == trace.texts and again.meta["run"] == text[:20]
    assert again.tokens["token_text"].tolist() == trace.tokens["token_text"].tolist()


# --- uploads ------------------------------------------------------------------------------------------------------

NAMES = st.sampled_from(["a.txt", "notes.md", "x.py", "d.json", "t.csv", "T.CSV", "<img src=x>.txt", "noext",
                         "photo.png", "r\u00e9sum\u00e9.md", "..\\..\\evil.txt", "a" * 300 + ".txt"])  # fmt: skip
ENCODED = st.builds(
    lambda text, enc: text.encode(enc, errors="replace"),
    texts,
    st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "latin-1", "cp1252"]),
)
CSV = st.builds(
    lambda header, rows: (header + "\n" + "\n".join(",".join(r) for r in rows)).encode(),
    st.sampled_from(["label,text", "text", "label", "text,label,extra", "label,text,", "", "a,b", '"label","text"']),
    st.lists(st.lists(st.sampled_from(["code", "prose", "", "x = 1", '"quoted, comma"', "<b>", '"open']), max_size=4),
             max_size=6),
)  # fmt: skip
BINARY = st.one_of(
    st.binary(max_size=300),
    st.sampled_from([b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", b"PK\x03\x04\x14\x00", b"\x7fELF\x02\x01\x01\x00",
                     b"\xed\xa0\x80", b"ok\xed\xb2\x80ok", b"\xff\xfe\x00\xd8", b"\xfe\xff\xd8\x00", b"\xff\xfe"]),
)  # fmt: skip


@settings(PROPS, max_examples=160)
@given(name=NAMES, data=st.one_of(ENCODED, CSV, BINARY))
def test_decode_upload_never_raises(name, data):
    from app import uploads

    up = uploads.decode_upload(name, data)
    assert up.name == name
    assert (up.text is None) != (up.error is None)
    if up.error is not None:
        assert up.error.startswith(name + ": ") and "\n" not in up.error
    else:
        assert up.text.strip()
        up.text.encode("utf-8")  # decoded text is real Unicode (no lone surrogates)
        assert up.notice is None or (up.notice.startswith(name + ": ") and "\n" not in up.notice)
        assert name.rsplit(".", 1)[-1].lower() in uploads.UPLOAD_TYPES
    docs = uploads.docs_from_uploads([up])  # CSV with missing/extra columns or bad quoting: never raises
    for doc_id, label, text in docs:
        assert isinstance(doc_id, str) and isinstance(label, str) and text.strip()


def test_upload_encodings_by_hand():
    from app import uploads

    text = "caf\u00e9 \u05e9\u05dc\u05d5\u05dd \U0001f600"
    assert uploads.decode_upload("a.txt", text.encode("utf-16")).text == text
    assert uploads.decode_upload("a.txt", text.encode("utf-8-sig")).text == text
    latin = uploads.decode_upload("a.txt", "caf\u00e9".encode("latin-1"))  # decoded, with a notice
    assert latin.text == "caf\u00e9" and latin.notice.startswith("a.txt: not UTF-8 (byte 3 is not valid UTF-8)")
    no_bom = uploads.decode_upload("a.txt", "abc".encode("utf-16-le"))  # UTF-16 without a BOM: NUL bytes
    assert no_bom.text is None and "binary" in no_bom.error
    assert "does not decode as UTF-16" in uploads.decode_upload("a.txt", b"\xff\xfe\x00\xd8").error
    csv = uploads.docs_from_uploads([uploads.Upload("d.csv", "label,text,extra\ncode,x = 1,z\n,hello\n", None)])
    assert csv == [("d.csv#0", "code", "x = 1"), ("d.csv#1", "", "hello")]  # extra column ignored, label missing
    only_text = uploads.docs_from_uploads([uploads.Upload("d.csv", "text\nx = 1\n", None)])
    assert only_text == [("d.csv", "d", "text\nx = 1\n")]  # no label column: the whole file is one document
    ragged = uploads.decode_upload("d.csv", b'label,text\n"open,x\n')  # an unclosed quote: the row is skipped
    assert uploads.docs_from_uploads([ragged]) == [] and "line 2 (a quote is never closed)" in ragged.notice


GOOD_UPLOAD = st.tuples(
    st.sampled_from(["a.txt", "n.md", "<b>x</b>.py", "t.csv"]),
    st.builds(lambda t, enc: t.encode(enc), texts.filter(str.strip), st.sampled_from(["utf-8", "utf-16", "utf-8-sig"])),
)
ANY_UPLOAD = st.tuples(NAMES, st.one_of(ENCODED, CSV, BINARY))


@settings(PROPS, max_examples=40)
@given(files=st.lists(st.one_of(GOOD_UPLOAD, GOOD_UPLOAD, ANY_UPLOAD), min_size=1, max_size=3))
def test_upload_to_trace_in_the_app(rel_app_env, files):
    """The Token routing page's path: decode -> docs -> token limit -> cached route; errors are messages."""
    from app import cache, uploads

    source = cache.get_source(str(rel_app_env))
    good = [u for u in (uploads.decode_upload(n, d) for n, d in files) if u.error is None]
    docs = uploads.docs_from_uploads(good)
    event(f"{len(docs)} document(s) to route")
    if not docs:
        return
    docs, _ = uploads.limit_docs(source, docs)
    try:
        trace = cache.route_trace(source, 20, docs)
    except ValueError as exc:  # e.g. the same file twice: duplicate document ids
        assert MESSAGE.match(str(exc)), str(exc)
        return
    assert trace.texts == {d: t for d, _, t in docs}
    assert trace.n_tokens <= uploads.MAX_TOKENS
    assert set(trace.tokens["label"]) <= {lab for _, lab, _ in docs}


def test_cached_traces_are_not_corrupted(rel_app_env):
    """A cached trace handed to a page and mutated there, or a failed request, leaves the cache intact."""
    from app import cache

    source = cache.get_source(str(rel_app_env))
    first = cache.route_trace(source, 20, [("input", "input", "hello <b>world</b>")])
    reference = first.tokens.copy()
    first.tokens.loc[:, "token_text"] = "MUTATED"  # a careless page
    first.texts["input"] = "MUTATED"
    with pytest.raises(ValueError):
        cache.route_trace(source, 20, [("a", "x", "1"), ("a", "y", "2")])  # duplicate ids: refused
    with pytest.raises(ValueError, match="lone surrogate"):
        cache.route_trace(source, 20, [("input", "input", "bad \udcff text")])
    again = cache.route_trace(source, 20, [("input", "input", "hello <b>world</b>")])
    assert again.tokens.equals(reference) and again.texts == {"input": "hello <b>world</b>"}


# --- big inputs ---------------------------------------------------------------------------------------------------


def test_whitespace_only_and_nul_texts_route(tiny_model, tiny_tok):
    for text in (" ", "\n" * 50, "\t \r\n", "\x00" * 10):
        trace = record(tiny_model, tiny_tok, text)
        assert "".join(trace.tokens["token_text"]) == text


@pytest.mark.slow
def test_one_5mb_line(tiny_model, tiny_tok, rel_app_env):
    """5 MB without a newline: record() refuses it with a message (over its token cap); the app cuts it to
    MAX_TOKENS tokens and routes the rest."""
    from app import cache, uploads

    line = ("lighthouse " * 500_000)[:5_000_000]
    with pytest.raises(ValueError, match="too much text: more than 1,000,000 tokens"):
        record(tiny_model, tiny_tok, line)
    docs, cut = uploads.limit_docs(cache.get_source(str(rel_app_env)), [("input", "input", line)])
    assert cut and line.startswith(docs[0][2])
    trace = cache.route_trace(cache.get_source(str(rel_app_env)), 20, docs)
    assert trace.n_tokens == uploads.MAX_TOKENS
    assert math.isfinite(float(trace.routing["weight"].sum()))
