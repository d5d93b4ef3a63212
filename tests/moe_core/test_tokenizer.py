"""Byte-level BPE: deterministic training, save/load, and character spans that tile the original text."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moe_core.tokenizer import (
    EOT,
    encode_with_offsets,
    eot_id,
    load_tokenizer,
    save_tokenizer,
    token_bytes,
    train_tokenizer,
)

TRAIN_TEXTS = [
    "def add(a, b):\n    return a + b\n",
    "The router sends every token to its top two experts.",
    '{"id": 7, "name": "alpha", "ok": true}',
    "x = 3/4 + 1/8 = 7/8",
    "emoji 😀🎉 and CJK 你好世界 and Arabic مرحبا بالعالم",
] * 30

TRICKY = [
    "",
    "a",
    "😀",  # 4-byte char
    "👩‍👩‍👧‍👦 family (ZWJ sequence)",
    "🇫🇷🇯🇵 flags",
    "e\u0301 cafe\u0301 n\u0303 combining marks",
    "你好，世界。日本語のテキスト。한국어",
    "مرحبا بالعالم — שלום עולם (RTL)",
    "tabs\t\tand  spaces   and\n\n\nnewlines\r\n\x00\x7f",
    "   leading and trailing   ",
    f"doc one{EOT}doc two",
    "\U0010ffff\ufeff\u200b",
]


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(TRAIN_TEXTS, 320)


def assert_tiles(text: str, ids: list[int], spans: list[tuple[int, int]]) -> None:
    assert len(ids) == len(spans)
    pos = 0
    for start, end in spans:
        assert start == pos and end >= start
        pos = end
    assert pos == len(text)
    assert "".join(text[s:e] for s, e in spans) == text


def test_vocab_and_eot(tok):
    assert tok.get_vocab_size() == 320
    assert eot_id(tok) == 0
    assert tok.id_to_token(0) == EOT


def test_training_is_deterministic(tok):
    again = train_tokenizer(TRAIN_TEXTS, 320)
    assert json.loads(again.to_str()) == json.loads(tok.to_str())


def test_vocab_size_validated():
    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer(["abc"], 100)


def test_learned_merges_shorten_text(tok):
    ids, _ = encode_with_offsets(tok, "The router sends every token")
    assert len(ids) < len("The router sends every token") / 2


@pytest.mark.parametrize("text", TRICKY)
def test_spans_tile_tricky_text(tok, text):
    ids, spans = encode_with_offsets(tok, text)
    assert_tiles(text, ids, spans)
    assert tok.decode(ids, skip_special_tokens=False) == text
    assert b"".join(token_bytes(tok, i) for i in ids) == text.encode("utf-8")


def test_split_multibyte_char_goes_to_first_token(tok):
    # the BPE has not merged these bytes, so one char is split over several byte tokens
    text = "a\U0001f9ecb"  # 🧬 (4 bytes, unseen in training)
    ids, spans = encode_with_offsets(tok, text)
    assert_tiles(text, ids, spans)
    pieces = [text[s:e] for s, e in spans]
    assert "\U0001f9ec" in pieces  # the char is shown once, by the token holding its first byte
    assert pieces.count("") >= 1  # the continuation-byte tokens get empty spans
    empty = [i for i, p in enumerate(pieces) if p == ""]
    assert all(spans[i] == (2, 2) for i in empty)  # placed right after the split char


def test_special_token_in_text(tok):
    text = f"ab{EOT}cd"
    ids, spans = encode_with_offsets(tok, text)
    assert eot_id(tok) in ids
    assert spans[ids.index(eot_id(tok))] == (2, 2 + len(EOT))


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=60))
def test_spans_tile_any_text(tok, text):
    ids, spans = encode_with_offsets(tok, text)
    assert_tiles(text, ids, spans)


def test_save_load_round_trip(tok, tmp_path):
    path = tmp_path / "run" / "tokenizer.json"
    save_tokenizer(tok, path)
    loaded = load_tokenizer(path)
    text = "def f(x):\n    return x  # 😀 你好"
    assert encode_with_offsets(loaded, text) == encode_with_offsets(tok, text)
    assert not list(path.parent.glob(".tokenizer-*"))  # no temp file left behind


def test_load_missing_file(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        load_tokenizer(tmp_path / "nope.json")


@pytest.mark.parametrize("content", ["{not json", '{"model": 3}', ""])
def test_load_corrupt_file(tmp_path, content):
    path = tmp_path / "tokenizer.json"
    path.write_text(content)
    with pytest.raises(ValueError, match="corrupt"):
        load_tokenizer(path)
