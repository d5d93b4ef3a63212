"""app.uploads: the encoding fallback with its notice, labelled CSV rows skipped by line number, size messages,
and the Token routing / Expert heatmaps pages showing those notices once."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from app import uploads
from tests.app.conftest import ROOT


def test_utf8_and_utf16_decode_without_a_notice():
    text = "caf\u00e9 \u05e9\u05dc\u05d5\u05dd \U0001f600"
    for data in (text.encode(), text.encode("utf-8-sig"), text.encode("utf-16")):
        up = uploads.decode_upload("a.txt", data)
        assert (up.text, up.error, up.notice) == (text, None, None)
    be = uploads.decode_upload("a.txt", b"\xfe\xff" + text.encode("utf-16-be"))
    assert be.text == text and be.notice is None


def test_cp1252_fallback_with_a_notice():
    up = uploads.decode_upload("a.txt", "caf\u00e9 \u20ac5 \u201cquoted\u201d".encode("cp1252"))
    assert up.text == "caf\u00e9 \u20ac5 \u201cquoted\u201d" and up.error is None
    assert up.notice == (
        "a.txt: not UTF-8 (byte 3 is not valid UTF-8), so it was read as Windows-1252 (cp1252); "
        "if letters look wrong, save it as UTF-8."
    )


def test_latin1_where_cp1252_cannot_decode():
    # 0x81 is undefined in cp1252; Latin-1 decodes every byte
    up = uploads.decode_upload("a.md", b"gr\xfc\xdf \x81")
    assert up.text == "gr\u00fc\u00df \x81" and "read as Latin-1 (ISO-8859-1)" in up.notice
    assert up.notice.startswith("a.md: not UTF-8 (byte 2 ")


def test_binary_is_still_refused():
    for data in (b"ab\x00cd", b"\x89PNG\r\n\x1a\n\x00\x00", b"caf\xe9\x01\x02", b"\xe9\x7f"):
        up = uploads.decode_upload("a.txt", data)
        assert up.text is None and up.error == "a.txt: looks like a binary file, not text.", data
    assert uploads.decode_upload("a.txt", b"tab\there\r\nesc \x1b[0m \xe9").text is not None  # text controls


def test_size_message_never_rounds_onto_the_limit():
    assert (
        uploads.decode_upload("a.txt", b"a" * 1_000_001).error
        == "a.txt: too large (1,000,001 bytes; the limit is 1 MB)."
    )
    assert uploads.decode_upload("a.txt", b"a" * 1_500_000).error == "a.txt: too large (1.5 MB; the limit is 1 MB)."
    assert uploads.size_text(5_000_000) == "5 MB" and uploads.size_text(1_048_576) == "1,048,576 bytes"
    assert uploads.UPLOAD_MAX_BYTES == uploads.UPLOAD_MAX_MB * 1_000_000  # the widget's limit as the browser counts


CSV = (
    'label,text\ncode,x = 1\n"a"b,c\nprose,"Hello, world"\nprose,Hello, world\n\nmath,\nmath,"two\nlines"\n'
    '"open,x\nmore\n'
)


def test_csv_rows_that_cannot_be_read_are_skipped_by_line_number():
    docs, skipped = uploads.csv_docs("d.csv", CSV)
    assert docs == [
        ("d.csv#0", "code", "x = 1"),
        ("d.csv#1", "prose", "Hello, world"),
        ("d.csv#2", "math", "two\nlines"),
    ]
    assert skipped == [
        (3, 3, "bad quoting"),
        (5, 5, "3 fields where the header has 2"),
        (7, 7, "no text"),
        (10, 11, "a quote is never closed"),
    ]  # line 6 is blank: ignored; lines 8-9 are one quoted row
    up = uploads.decode_upload("d.csv", CSV.encode())
    assert up.notice == (
        "d.csv: 4 rows could not be read and were skipped: line 3 (bad quoting), line 5 (3 fields where the header "
        "has 2), line 7 (no text), lines 10–11 (a quote is never closed). Quote a text that holds commas."
    )
    assert uploads.docs_from_uploads([up]) == docs  # never merged into one document


def test_csv_without_label_and_text_stays_one_document():
    assert uploads.csv_docs("d.csv", "text\nx = 1\n") == (None, [])
    assert uploads.csv_docs("d.csv", "a,b\n1,2\n") == (None, [])
    up = uploads.decode_upload("d.csv", b"name,body\nx,y\n")
    assert up.notice is None and uploads.docs_from_uploads([up]) == [("d.csv", "d", "name,body\nx,y\n")]


def test_csv_notice_and_encoding_notice_share_one_line():
    up = uploads.decode_upload("d.csv", "label,text\nprose,caf\u00e9\nprose,\n".encode("cp1252"))
    assert up.notice.count("d.csv: ") == 1 and "\n" not in up.notice
    assert "Windows-1252" in up.notice and "1 row could not be read and was skipped: line 3 (no text)." in up.notice
    assert uploads.docs_from_uploads([up]) == [("d.csv#0", "prose", "caf\u00e9")]


def test_many_skipped_rows_are_summarised():
    text = "label,text\n" + "x,\n" * 12
    assert uploads.skipped_text(uploads.csv_docs("d.csv", text)[1]).endswith("line 6 (no text) and 7 more.")


def _upload_page(entry: str, page: str, radio: tuple[str, str]) -> AppTest:
    at = AppTest.from_file(entry, default_timeout=90)
    at.run()
    at.switch_page(str(ROOT / "app" / "views" / f"{page}.py")).run()
    at.radio(key=radio[0]).set_value(radio[1]).run()
    return at


@pytest.mark.parametrize(("page", "radio"), [("token_routing", ("tr_source", "Upload files")),
                                             ("heatmaps", ("hm_source", "My labelled files"))])  # fmt: skip
def test_pages_show_each_notice_once(app_env, entry, page, radio):
    at = _upload_page(entry, page, radio)
    files = [("latin.txt", "caf\u00e9 cr\u00e8me".encode("cp1252"), "text/plain"),
             ("d.csv", b"label,text\ncode,x = 1\nprose,a, b\n", "text/csv")]  # fmt: skip
    at.get("file_uploader")[0].set_value(files).run()
    assert not at.exception, [e.value for e in at.exception]
    warnings = [w.value for w in at.warning]
    assert sum(w.startswith("latin.txt: not UTF-8") for w in warnings) == 1
    assert sum(w.startswith("d.csv: 1 row could not be read") for w in warnings) == 1
    assert not at.error


def test_token_routing_empty_upload_says_what_to_do(app_env, entry):
    at = _upload_page(entry, "token_routing", ("tr_source", "Upload files"))
    assert [i.value for i in at.info] == [uploads.NO_FILES_TEXT]
