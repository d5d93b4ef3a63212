"""Atomic writes (fsync + rename) and JSON lines."""

import json

import pytest

from moe_core.files import append_jsonl, atomic_write, read_jsonl, write_json_atomic, write_jsonl_atomic


def test_atomic_write_keeps_old_file_when_writer_fails(tmp_path):
    path = tmp_path / "a.json"
    write_json_atomic(path, {"v": 1})

    def broken(tmp):
        open(tmp, "w").write("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(path, broken)
    assert json.loads(path.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]  # no temp file left behind


def test_jsonl_round_trip_and_torn_last_line(tmp_path):
    path = tmp_path / "h.jsonl"
    write_jsonl_atomic(path, [{"step": 1}])
    append_jsonl(path, {"step": 2})
    with open(path, "a") as f:
        f.write('{"step": 3')  # a writer killed mid-line
    assert read_jsonl(path) == [{"step": 1}, {"step": 2}]
    assert read_jsonl(tmp_path / "missing.jsonl") == []
