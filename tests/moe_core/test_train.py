"""Training loop: loss goes down, exact resume, crash safety, one bias update per optimizer step.

The command line (`moe-explorer train`) is tested in tests/cli/test_train_cli.py."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from moe_core import ModelConfig, preset
from moe_core.corpus import Doc
from moe_core.files import read_jsonl
from moe_core.model import MoETransformer
from moe_core.routing_stats import max_violation
from moe_core.run import load_run
from moe_core.training import TrainConfig, batch_starts, lr_at, train

REPO = Path(__file__).resolve().parents[2]
WORDS = "the cat sat on a mat and the dog ran to the park while birds sang songs in green trees".split()


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_docs(n: int = 48, seed: int = 0) -> list[Doc]:
    """Two easy domains: word salad and sums."""
    r = random.Random(seed)
    docs = []
    for i in range(n):
        if i % 2:
            text = " ".join(f"{r.randint(0, 99)} + {r.randint(0, 99)} = {r.randint(0, 198)}." for _ in range(25))
            docs.append(Doc(text, "math", "test", i))
        else:
            docs.append(Doc(" ".join(r.choice(WORDS) for _ in range(120)), "prose", "test", i))
    return docs


def tiny_model() -> ModelConfig:
    data = preset("tiny").to_dict()
    data["vocab_size"] = 320  # the byte-level tokenizer needs >= 257 tokens
    return ModelConfig.from_dict(data)


def tiny_train(**overrides) -> TrainConfig:
    base = dict(steps=8, batch_size=8, seq_len=32, warmup_steps=2, eval_every=4, ckpt_every=4, eval_batches=2)
    base.update(overrides)
    return TrainConfig(**base)


def run_tiny(path, cfg: TrainConfig, **kwargs):
    docs = tiny_docs()
    return train(path, tiny_model(), cfg, docs[:40], docs[40:], device="cpu", progress=False, **kwargs)


def test_lr_schedule_by_hand():
    cfg = TrainConfig(steps=10, lr=1.0, min_lr=0.1, warmup_steps=2)
    assert lr_at(1, cfg) == pytest.approx(0.5)
    assert lr_at(2, cfg) == pytest.approx(1.0)
    assert lr_at(6, cfg) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * 0.5)))  # halfway: 0.55
    assert lr_at(10, cfg) == pytest.approx(0.1)


def test_batches_are_a_function_of_seed_and_step():
    a = batch_starts(0, 5, 1000, 4, 16)
    assert torch.equal(a, batch_starts(0, 5, 1000, 4, 16))
    assert not torch.equal(a, batch_starts(0, 6, 1000, 4, 16))
    assert not torch.equal(a, batch_starts(1, 5, 1000, 4, 16))
    assert int(a.max()) + 16 < 1000  # the window and its next-token target fit


def test_tiny_run_learns_and_writes_a_complete_run(tmp_path):
    run = run_tiny(tmp_path / "r", tiny_train(steps=20, eval_every=10, ckpt_every=10, lr=1e-2))
    hist = run.history()
    assert [r["step"] for r in hist] == list(range(1, 21))
    first, last = sum(r["loss"] for r in hist[:3]) / 3, sum(r["loss"] for r in hist[-3:]) / 3
    assert last < first - 1.0, (first, last)  # ~5.7 -> ~3.5 on this corpus
    cfg = run.config
    for row in hist:
        assert len(row["load"]) == len(cfg.moe_layers) and len(row["load"][0]) == cfg.moe.n_experts
        # loads count the global batch: every token picks K experts in every MoE layer
        assert all(sum(load) == 8 * 32 * cfg.moe.top_k for load in row["load"])
        assert all(abs(sum(b)) < 1e-5 for b in row["bias"])  # zero-centred bias updates
        assert all(0 < h <= math.log(cfg.moe.n_experts) + 1e-4 for h in row["router_entropy"])
        assert row["dropped"] == 0 and row["tokens"] == row["step"] * 8 * 32 and row["tokens_per_s"] > 0
    assert hist[0]["maxvio_batch"][0] == pytest.approx(float(max_violation(torch.tensor(hist[0]["load"][0]))))
    evals = run.eval_history()
    assert [e["step"] for e in evals] == [10, 20]
    assert evals[-1]["val_loss"] < evals[0]["val_loss"]
    assert evals[-1]["val_ppl"] == pytest.approx(math.exp(evals[-1]["val_loss"]))
    assert len(evals[-1]["maxvio_global"]) == len(cfg.moe_layers)
    assert run.checkpoints() == [10, 20]
    assert not run.state_path(10).exists() and run.state_path(20).exists()  # keep_states=1
    assert run.info["train"]["steps"] == 20 and run.info["tokenizer"]["vocab_size"] <= 320
    assert run.info["balance"] == ["aux_free"] and "torch" in run.info["versions"]
    docs = run.eval_docs()
    assert {d.label for d in docs} == {"prose", "math"} and all(len(d.text) <= 1500 for d in docs)
    tok = run.tokenizer()
    model = run.load_model()
    ids = torch.tensor([tok.encode(docs[0].text).ids[:32]])
    assert model(ids).logits.shape == (1, ids.shape[1], 320)
    assert torch.allclose(model.router_biases(), torch.tensor(hist[-1]["bias"]))  # checkpoint = last bias


def test_resume_continues_exactly(tmp_path):
    full = run_tiny(tmp_path / "full", tiny_train()).history()
    run_tiny(tmp_path / "part", tiny_train(), stop_at_step=4)
    assert [r["step"] for r in read_jsonl(tmp_path / "part" / "history" / "train.jsonl")] == [1, 2, 3, 4]
    resumed = run_tiny(tmp_path / "part", tiny_train(), resume=True).history()
    assert [r["step"] for r in resumed] == list(range(1, 9))
    for a, b in zip(full, resumed):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5), a["step"]
        assert a["load"] == b["load"] and a["lr"] == b["lr"]
        assert torch.allclose(torch.tensor(a["bias"]), torch.tensor(b["bias"]), atol=1e-7)
    e_full = load_run(tmp_path / "full").eval_history()
    e_part = load_run(tmp_path / "part").eval_history()
    assert [e["step"] for e in e_part] == [4, 8]
    assert e_part[-1]["val_loss"] == pytest.approx(e_full[-1]["val_loss"], abs=1e-5)


def test_bias_updates_once_per_optimizer_step_with_grad_accum(tmp_path, monkeypatch):
    calls = []
    original = MoETransformer.update_router_biases

    def counting(self, loads):
        calls.append(loads.clone())
        return original(self, loads)

    monkeypatch.setattr(MoETransformer, "update_router_biases", counting)
    run = run_tiny(tmp_path / "r", tiny_train(steps=3, grad_accum=2, eval_every=0, ckpt_every=0))
    assert len(calls) == 3  # 3 steps x 2 micro-batches -> 3 updates
    K = run.config.moe.top_k
    for loads, row in zip(calls, run.history()):
        assert loads.sum(dim=1).tolist() == [8 * 32 * K] * loads.shape[0]  # both micro-batches counted
        assert loads.long().tolist() == row["load"]
    assert len(run.history()) == 3


def test_resume_rejects_changed_settings_and_fresh_dir_errors(tmp_path):
    run_tiny(tmp_path / "r", tiny_train(steps=2, ckpt_every=0, eval_every=0))
    with pytest.raises(ValueError, match="already holds a run"):
        run_tiny(tmp_path / "r", tiny_train(steps=2))
    with pytest.raises(ValueError, match="train.lr"):
        run_tiny(tmp_path / "r", tiny_train(steps=4, lr=0.5), resume=True)
    with pytest.raises(ValueError, match="nothing to resume"):
        run_tiny(tmp_path / "empty", tiny_train(), resume=True)


def _write_corpus(folder: Path) -> None:
    """A corpus folder as `moe-explorer corpus` writes it."""
    folder.mkdir()
    docs = tiny_docs(60)
    for name, part in (("train", docs[:50]), ("val", docs[50:])):
        with open(folder / f"{name}.jsonl", "w") as f:
            for d in part:
                f.write(json.dumps({"doc_id": d.doc_id, "label": d.label, "source": d.source, "text": d.text}) + "\n")


def _wait_rows(path: Path, n: int, proc: subprocess.Popen, since: float = 0.0, timeout: float = 90.0) -> None:
    """Wait until `path` holds `n` rows written at or after time `since` (i.e. by this process)."""
    deadline = time.monotonic() + timeout
    while sum(r["time"] >= since for r in read_jsonl(path)) < n:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else "trainer exited early"
        assert time.monotonic() < deadline, "trainer too slow"
        time.sleep(0.02)


def _cli(out: Path, corpus: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "app.cli",
        "train",
        "--preset",
        "tiny",
        "--vocab-size",
        "320",
        "--out",
        str(out),
        "--corpus",
        str(corpus),
        "--device",
        "cpu",
        "--batch-size",
        "4",
        "--quiet",
        *extra,
    ]


@pytest.mark.slow
def test_sigkill_then_resume_then_sigterm_loses_and_duplicates_nothing(tmp_path):
    corpus, out = tmp_path / "corpus", tmp_path / "run"
    _write_corpus(corpus)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    hist = out / "history" / "train.jsonl"
    # 1) killed with SIGKILL mid-run: rows after the last checkpoint are on disk but have no checkpoint
    proc = subprocess.Popen(
        _cli(out, corpus, "--steps", "5000", "--ckpt-every", "5", "--eval-every", "7"),
        env=env,
        cwd=REPO,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_rows(hist, 13, proc)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    last_ckpt = load_run(out).latest_step()
    assert last_ckpt is not None and last_ckpt >= 10 and read_jsonl(hist)[-1]["step"] >= last_ckpt
    # 2) resumed, then stopped with SIGTERM: it finishes the step and writes a checkpoint there
    started = time.time()
    proc = subprocess.Popen(_cli(out, corpus, "--resume"), env=env, cwd=REPO, stderr=subprocess.PIPE, text=True)
    try:
        _wait_rows(hist, 4, proc, since=started)  # rows of the resumed process: its handlers are installed
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, proc.stderr.read()
    steps = [r["step"] for r in read_jsonl(hist)]
    assert steps == list(range(1, steps[-1] + 1))  # nothing lost, nothing duplicated
    assert steps[-1] > last_ckpt + 3
    assert load_run(out).latest_step() == steps[-1]  # the interrupted step got its checkpoint
    evals = [r["step"] for r in read_jsonl(out / "history" / "eval.jsonl")]
    assert evals == sorted(set(evals)) and evals[-1] == steps[-1]
