"""`moe-explorer record`: end to end on a tiny run, one-line errors for bad input, and kill -9 then --resume
gives the same rows as an uninterrupted recording (no row lost, none twice)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analysis.dataset import open_dataset
from app.cli import main
from tests.analysis.test_dataset_record import all_rows, make_run, write_corpus

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("runs") / "tiny")


def cli(argv, capsys):
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def test_record_then_again_says_complete(run_dir, tmp_path, capsys, one_thread):
    corpus = write_corpus(tmp_path / "c.jsonl", n_docs=6)
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "a.txt").write_text("plain text notes " * 20)
    pq.write_table(pa.table({"text": ["from parquet " * 10], "label": ["pq"]}), tmp_path / "p.parquet")
    argv = ["record", "--run", str(run_dir), str(corpus), str(notes), str(tmp_path / "p.parquet")]
    argv += ["--out", str(tmp_path / "ds"), "--shard-tokens", "150", "--sample", "20", "--no-progress"]
    rc, out, err = cli(argv, capsys)
    assert rc == 0, err
    assert "complete:" in err and out.strip() == f"wrote {tmp_path / 'ds'}"
    ds = open_dataset(tmp_path / "ds")
    labels = set(ds.read("docs", columns=["label"])["label"].to_pylist())
    assert labels == {"prose", "code", "math", "notes", "pq"} and ds.n_docs == 8
    assert ds.sample()["hidden"].shape[0] == 20
    rc, out, err = cli(argv, capsys)
    assert rc == 0 and "already complete" in err and out == ""


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"text": "fine"}\n{"label": "x"}\n', "bad.jsonl:2: no 'text' field"),
        ('{"text": "fine"}\n[1, 2\n', "bad.jsonl:2: not a JSON line"),
    ],
)
def test_bad_jsonl_is_one_line_error_and_keeps_finished_shards(run_dir, tmp_path, capsys, one_thread, content, message):
    good = write_corpus(tmp_path / "good.jsonl", n_docs=6)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(content)
    argv = ["record", "--run", str(run_dir), str(good), str(bad), "--out", str(tmp_path / "ds")]
    rc, out, err = cli([*argv, "--shard-tokens", "100", "--no-progress"], capsys)
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1
    ds = open_dataset(tmp_path / "ds")  # the shards recorded before the bad line are kept and listed
    assert len(ds.shards) >= 1 and not ds.complete
    ds.verify()


def test_bad_parquet_and_bad_dataset_are_one_line_errors(run_dir, tmp_path, capsys):
    good = tmp_path / "good.parquet"
    pq.write_table(pa.table({"text": ["x" * 40] * 50}), good)
    truncated = tmp_path / "truncated.parquet"
    truncated.write_bytes(good.read_bytes()[:-20])
    rc, _, err = cli(["record", "--run", str(run_dir), str(truncated), "--out", str(tmp_path / "ds")], capsys)
    assert rc == 2 and f"{truncated}: not a readable Parquet file" in err and len(err.strip().splitlines()) == 1
    other = tmp_path / "other"
    other.mkdir()
    (other / "manifest.json").write_text(json.dumps({"format": "moe-explorer-dataset/0"}))
    corpus = write_corpus(tmp_path / "c.jsonl", n_docs=2)
    rc, _, err = cli(["record", "--run", str(run_dir), str(corpus), "--out", str(other), "--resume"], capsys)
    assert rc == 2 and "unsupported dataset format 'moe-explorer-dataset/0'" in err
    rc, _, err = cli(["record", "--run", str(run_dir), "--hf", "x", str(corpus), "--out", str(other)], capsys)
    assert rc == 2 and "give --run or --hf, not both" in err


@pytest.mark.slow
def test_kill_9_then_resume_loses_and_duplicates_nothing(run_dir, tmp_path):
    corpus = write_corpus(tmp_path / "c.jsonl", n_docs=30)
    out = tmp_path / "ds"

    def command(folder):
        argv = [sys.executable, "-m", "app.cli", "record", "--run", str(run_dir), str(corpus), "--out", str(folder)]
        return argv + ["--shard-tokens", "100", "--batch-tokens", "50", "--threads", "1", "--no-progress"]

    argv = command(out)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    progress = out / "progress" / "worker-000.jsonl"
    while proc.poll() is None and not (progress.is_file() and progress.read_text().count("\n") >= 1):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the recording ended before it could be killed"
    finished = progress.read_text().count("\n")
    rc = subprocess.run([*argv, "--resume"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert rc.returncode == 0, rc.stderr
    assert f"resuming: {finished} finished shard(s)" in rc.stderr
    subprocess.run(command(tmp_path / "full"), cwd=ROOT, env=env, check=True)
    a, b = open_dataset(tmp_path / "full"), open_dataset(out)
    b.verify()
    assert a.complete and b.complete and a.n_tokens == b.n_tokens and len(a.shards) == len(b.shards)
    for table in ("docs", "tokens", "routing", "token_layer"):
        assert all_rows(a, table) == all_rows(b, table), table
    assert not [p for table in ("docs", "tokens", "routing", "token_layer") for p in (out / table).rglob("*.tmp")]
