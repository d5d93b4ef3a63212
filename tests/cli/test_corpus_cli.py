"""`moe-explorer corpus` (app/cli/corpus.py): builds a corpus folder; argparse and one-line errors."""

import json

import pytest

from app.cli import main
from moe_core import corpus


def test_cli(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(corpus.SIZES, "small", 3000)
    assert main(["corpus", "--out", str(tmp_path / "c"), "--seed", "4", "--size", "small"]) == 0
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert manifest["seed"] == 4 and manifest["size"] == "small"
    assert "wrote" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # argparse rejects an unknown size
        main(["corpus", "--out", str(tmp_path / "d"), "--size", "nope"])
    (tmp_path / "file").write_text("x")
    assert main(["corpus", "--out", str(tmp_path / "file"), "--size", "small"]) == 2  # one-line error
    assert "error" in capsys.readouterr().err
