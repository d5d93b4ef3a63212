"""`moe-explorer route` / `report` on the hand-built tiny run of tests/cli/conftest.py, their one-line errors,
and the HTML report."""

import json

import numpy as np
import pytest

from analysis.recording import record
from analysis.report import build_report
from analysis.tables import domain_share_ratio
from analysis.trace import load
from tests.cli.conftest import TEXTS, run_cli

XSS = "<script>alert(1)</script>"


def test_route_text_prints_tokens_and_load(tiny_run, capsys):
    root, model, tok = tiny_run
    text = "for i in range(3):\n pass"
    rc, out, err = run_cli(["route", "--run", str(root), "--text", text, "--device", "cpu"], capsys)
    assert rc == 0, err
    expected = record(model, tok, text)
    lines = out.splitlines()
    assert lines[0].split() == ["doc", "pos", "token", "L0", "L1"]
    assert len(lines) > expected.n_tokens + 3
    shown = [line.split() for line in lines[1 : expected.n_tokens + 1]]
    assert [s[2] for s in shown] == [t.replace(" ", "·").replace("\n", "\\n") for t in expected.tokens["token_text"]]
    assert [[int(x) for x in s[3:]] for s in shown] == expected.experts_array()[:, :, 0].tolist()
    assert "load per layer" in out and "layer 1 (block 1): MaxVio" in out
    load0 = np.bincount(expected.experts_array()[:, 0].ravel(), minlength=4)
    assert "tokens per expert: " + " ".join(map(str, load0)) in out


def test_route_files_writes_parquet_and_csv(tiny_run, tmp_path, capsys):
    root, model, _ = tiny_run
    folder = tmp_path / "texts"
    (folder / "code").mkdir(parents=True)
    (folder / "prose").mkdir()
    (folder / "code" / "a.py").write_text(TEXTS["code"])
    (folder / "prose" / "b.txt").write_text(TEXTS["prose"])
    out = tmp_path / "trace.parquet"
    argv = ["route", "--run", str(root), str(folder), "--out", str(out), "--max-tokens", "3"]
    rc, stdout, err = run_cli(argv, capsys)
    assert rc == 0, err
    trace = load(out, expect_config=model.config)
    assert set(trace.tokens["label"]) == {"code", "prose"} and trace.meta["step"] == 2
    assert trace.meta["run"] == "tiny-test"
    assert "more tokens" in stdout
    rc, _, err = run_cli(["route", "--run", str(root), "--text", "hi there", "--out", str(tmp_path / "t.csv")], capsys)
    assert rc == 0 and (tmp_path / "t.csv").read_text().startswith("token_row,layer,rank,expert")


def test_one_line_errors(tiny_run, tmp_path, capsys, monkeypatch):
    root, _, _ = tiny_run
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    binary = tmp_path / "blob.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    cases = [
        (["route", "--run", str(tmp_path / "nope"), "--text", "x"], "not a run directory"),
        (["route", "--run", str(root), str(tmp_path / "missing.txt")], "no such file"),
        (["route", "--run", str(root), str(empty)], "no usable text"),
        (["route", "--run", str(root), str(binary)], "binary"),
        (["route", "--run", str(root), "--text", "   "], "empty"),
        (["route", "--run", str(root)], "nothing to route"),
        (["route", "--run", str(root), "--checkpoint", "7", "--text", "x"], "no checkpoint at step 7"),
        (["route", "--run", str(root), "--text", "x", "--out", str(tmp_path / "t.json")], ".parquet or .csv"),
        (["report", "--run", str(root), "--text", str(binary), "--out", str(tmp_path / "r.html")], "binary"),
    ]
    for argv, message in cases:
        rc, out, err = run_cli(argv, capsys)
        assert rc == 2 and message in err and len(err.strip().splitlines()) == 1, (argv, err)
    monkeypatch.setattr("moe_core.paths.default_run_path", lambda: tmp_path / "default_run")
    rc, _, err = run_cli(["route", "--text", "x"], capsys)
    assert rc == 2 and "default run" in err and "does not exist yet" in err


def test_report_on_eval_docs(tiny_run, tmp_path, capsys):
    root, _, _ = tiny_run
    out = tmp_path / "report.html"
    rc, stdout, err = run_cli(["report", "--run", str(root), "--out", str(out)], capsys)
    assert rc == 0, err
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") and "tiny-test, step 2" in page
    assert page.count("Plotly.newPlot") >= 4  # load, balance, specialization (2 layers), projection
    assert "MaxVio_batch" in page and "Silhouette" in page and "mi_domain_bits" in page
    assert len(page) > 1_000_000  # plotly.js is inlined: the file opens offline
    assert "cdn.plot.ly" not in page.split("</head>")[1]


def test_report_escapes_user_text(tiny_run, tmp_path, capsys):
    root, _, _ = tiny_run
    evil = tmp_path / "evil.txt"
    evil.write_text(f"hello {XSS} world")
    out = tmp_path / "r.html"
    rc, _, err = run_cli(["report", "--run", str(root), "--text", str(evil), "--out", str(out)], capsys)
    assert rc == 0, err
    page = out.read_text()
    assert XSS not in page and "alert(1)" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_build_report_without_history_and_share_ratio(tiny_run):
    _, model, tok = tiny_run
    trace = record(model, tok, list(TEXTS.values()), labels=[f"<b>{XSS}", "code"], max_hidden=0)
    page = build_report(trace, history=None, run_info={"name": XSS})
    assert XSS not in page and "No training history" in page and "kept no router inputs" in page
    ratio = domain_share_ratio(trace, 0)
    # each label's routings sum to K per token: the ratios average to 1 over experts
    np.testing.assert_allclose(ratio.to_numpy().mean(axis=1), 1.0)
    code = trace.select_docs(labels=["code"])
    counts = np.bincount(code.experts_array()[:, 0].ravel(), minlength=4)
    np.testing.assert_allclose(ratio.loc["code"].to_numpy(), 4 * counts / (2 * code.n_tokens))
    assert json.loads(json.dumps(trace.meta))["step"] is None


def test_route_and_report_with_a_hugging_face_folder(tmp_path, capsys):
    pytest.importorskip("transformers")
    from tests.hf_fixtures import save_tiny_hf_model

    folder = save_tiny_hf_model(tmp_path / "olmoe", "olmoe")
    out = tmp_path / "hf.parquet"
    rc, stdout, err = run_cli(["route", "--hf", str(folder), "--text", "The quick fox.", "--out", str(out)], capsys)
    assert rc == 0, err
    trace = load(out)
    assert trace.meta["source"] == "hf" and "load per layer" in stdout
    assert stdout.splitlines()[0].split()[:4] == ["doc", "pos", "token", "L0"]
    evil = tmp_path / "evil.txt"
    evil.write_text(f"hello {XSS}")
    page_path = tmp_path / "hf.html"
    rc, _, err = run_cli(["report", "--hf", str(folder), "--text", str(evil), "--out", str(page_path)], capsys)
    assert rc == 0, err
    assert XSS not in page_path.read_text()
    for argv, message in (
        (["report", "--hf", str(folder), "--out", str(page_path)], "--hf needs --text"),
        (["route", "--hf", str(folder), "--run", str(tmp_path), "--text", "x"], "not both"),
    ):
        rc, _, err = run_cli(argv, capsys)
        assert rc == 2 and message in err, err
