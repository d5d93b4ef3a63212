"""Recording on two workers (launched like torchrun: RANK / WORLD_SIZE, gloo) gives the single-process dataset."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from analysis.dataset import open_dataset
from analysis.dataset.workers import Workers, workers_from_env

REPO = Path(__file__).resolve().parents[2]
WORDS = "the cat sat on a mat while the dog ran to the park and birds sang over the river".split()


def test_workers_from_env_and_shard_ownership():
    assert workers_from_env({}) == Workers()
    w = workers_from_env({"RANK": "1", "WORLD_SIZE": "3", "LOCAL_RANK": "0"})
    assert (w.rank, w.world, w.local_rank, w.on, w.main) == (1, 3, 0, True, False)
    assert [k for k in range(7) if w.owns(k)] == [1, 4]
    # every shard has exactly one owner
    team = [Workers(r, 3) for r in range(3)]
    assert all(sum(x.owns(k) for x in team) == 1 for k in range(10))
    with pytest.raises(ValueError, match="RANK"):
        workers_from_env({"WORLD_SIZE": "2"})
    with pytest.raises(ValueError, match="0 <= RANK < WORLD_SIZE"):
        workers_from_env({"RANK": "2", "WORLD_SIZE": "2"})


def _corpus(path: Path) -> Path:
    rows = []
    for i in range(10):
        words = [WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(12 + 3 * i)]
        rows.append({"text": " ".join(words) + ".", "label": "ab"[i % 2], "doc_id": f"d{i}"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tables(root: Path) -> dict[str, pd.DataFrame]:
    """Every table of a dataset, rows sorted (the order of workers' shards does not matter)."""
    ds = open_dataset(root)
    ds.verify()
    out = {}
    for table in ("docs", "tokens"):
        out[table] = ds.read(table).to_pandas()
    for layer in range(ds.meta["n_layers"]):
        out[f"routing/{layer}"] = ds.read("routing", layer=layer).to_pandas()
        out[f"token_layer/{layer}"] = ds.read("token_layer", layer=layer).to_pandas()
    keys = ["doc_index", "position", "rank"]
    return {
        name: df.sort_values([k for k in keys if k in df.columns]).reset_index(drop=True) for name, df in out.items()
    }


@pytest.mark.slow
def test_two_workers_record_the_single_process_dataset(tmp_path):
    corpus = _corpus(tmp_path / "corpus.jsonl")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    args = ["--shard-tokens", "40", "--batch-tokens", "30", "--sample", "8", "--no-progress", "--threads", "1"]

    def record(out: str, extra_env: dict | None = None) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "app.cli", "record", str(corpus), "--out", str(tmp_path / out), *args]
        return subprocess.Popen(cmd, env={**env, **(extra_env or {})}, cwd=REPO, stderr=subprocess.PIPE, text=True)

    single = record("single")
    assert single.wait(timeout=600) == 0, single.stderr.read()
    port = str(_free_port())
    procs = [
        record(
            "multi",
            {"RANK": str(r), "WORLD_SIZE": "2", "LOCAL_RANK": str(r), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port},
        )
        for r in range(2)
    ]
    for p in procs:
        assert p.wait(timeout=600) == 0, p.stderr.read()

    multi = json.loads((tmp_path / "multi" / "manifest.json").read_text())
    assert multi["complete"] and {s["worker"] for s in multi["shards"]} == {0, 1}
    assert sorted((tmp_path / "multi" / "progress").glob("worker-*.jsonl")) == [
        tmp_path / "multi" / "progress" / f"worker-00{r}.jsonl" for r in range(2)
    ]
    a, b = _tables(tmp_path / "single"), _tables(tmp_path / "multi")
    assert a.keys() == b.keys() and len(a["tokens"]) > 100
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name], check_exact=False, rtol=1e-5, obj=name)
    # the sample (router inputs) is chosen per token, not per worker: the same tokens
    sa, sb = open_dataset(tmp_path / "single").sample(), open_dataset(tmp_path / "multi").sample()
    assert sorted(zip(sa["doc_index"], sa["position"])) == sorted(zip(sb["doc_index"], sb["position"]))

    # machines without a shared folder: each worker writes its own copy; gathered, then merged
    port = str(_free_port())
    procs = [
        record(
            f"sep{r}",
            {"RANK": str(r), "WORLD_SIZE": "2", "LOCAL_RANK": str(r), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port},
        )
        for r in range(2)
    ]
    errs = [p.stderr.read() for p in procs]
    assert [p.wait(timeout=600) for p in procs] == [0, 0], errs
    assert "no progress log of worker(s) 1 here" in errs[0]
    assert not json.loads((tmp_path / "sep0" / "manifest.json").read_text())["complete"]
    merge = [sys.executable, "-m", "analysis.dataset.workers", str(tmp_path / "sep0"), "2"]
    refused = subprocess.run(merge, env=env, cwd=REPO, capture_output=True, text=True)
    assert refused.returncode != 0 and "copy their folders in first" in refused.stderr
    shutil.copytree(tmp_path / "sep1", tmp_path / "sep0", dirs_exist_ok=True)
    merged = subprocess.run(merge, env=env, cwd=REPO, capture_output=True, text=True)
    assert merged.returncode == 0, merged.stderr
    c = _tables(tmp_path / "sep0")
    for name in a:
        pd.testing.assert_frame_equal(a[name], c[name], check_exact=False, rtol=1e-5, obj=name)
