"""Shared fixtures of the reliability tests: one thread for torch, a tiny model + tokenizer and a tiny run
directory built once per session (no training), and a tiny corpus folder for the training subprocesses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from moe_core import build_model, preset
from moe_core.tokenizer import train_tokenizer
from tests.app.conftest import EVAL_DOCS, make_tiny_run

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _shared_machine(one_thread):
    """The machine is shared with a long training job: every reliability test keeps torch on one thread."""


@pytest.fixture(scope="session")
def tiny_tok():
    return train_tokenizer([t for _, t in EVAL_DOCS] * 4, 320)


@pytest.fixture(scope="session")
def tiny_model():
    """The tiny preset (2 MoE layers, 4 experts, top-2) with a 320-token vocabulary, seeded, eval mode."""
    torch.manual_seed(0)
    cfg = preset("tiny")
    cfg.vocab_size = 320
    cfg.n_dense_layers = 0
    return build_model(cfg).eval()


@pytest.fixture(scope="session")
def rel_run(tmp_path_factory) -> Path:
    """A valid tiny run directory (checkpoints 10 and 20, history, eval docs and a stored trace)."""
    return make_tiny_run(tmp_path_factory.mktemp("rel-runs") / "tiny")


@pytest.fixture
def rel_app_env(rel_run, monkeypatch, tmp_path):
    """Point the app at the tiny run; an empty runs folder; no UMAP warm-up thread."""
    monkeypatch.setenv("MOE_EXPLORER_RUN", str(rel_run))
    monkeypatch.setenv("MOE_EXPLORER_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("MOE_EXPLORER_WARM_UMAP", "0")
    return rel_run


def write_corpus(folder: Path, n_docs: int = 60) -> Path:
    """A corpus folder as `moe-explorer corpus` writes it (train.jsonl / val.jsonl), two labels."""
    folder.mkdir(parents=True, exist_ok=True)
    words = {"code": "def for return if else import class self print range".split(),
             "prose": "the old keeper climbed stairs every evening to watch boats come home".split()}  # fmt: skip
    rows = []
    for i in range(n_docs):
        label = "code" if i % 2 else "prose"
        vocab = words[label]
        text = " ".join(vocab[(i * 7 + j * 3) % len(vocab)] for j in range(60))
        rows.append({"doc_id": i, "label": label, "source": "test", "text": text})
    for name, part in (("train", rows[: n_docs - 10]), ("val", rows[n_docs - 10 :])):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    return folder


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("rel-corpus") / "corpus")
