"""A tiny run directory built once per test session (no training: a seeded random model, two checkpoints,
a synthetic history and labelled eval docs), and the environment that points the app at it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from moe_core import build_model, preset
from moe_core.files import write_json_atomic
from moe_core.run import RUN_FORMAT, save_weights, weights_path
from moe_core.tokenizer import save_tokenizer, train_tokenizer

EVAL_DOCS = [
    ("prose", "The old lighthouse keeper climbed the stairs every evening to watch the boats come home."),
    ("prose", "She read the letter twice, folded it carefully, and put it back into the drawer."),
    ("code", "def add(a, b):\n    return a + b\n\nfor i in range(10):\n    print(add(i, i))\n"),
    ("code", "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def pop(self):\n        pass\n"),
    ("math", "Let x = 3 and y = 4. Then x^2 + y^2 = 9 + 16 = 25, so the hypotenuse is 5."),
    ("math", "Solve 2x + 6 = 10: subtract 6 to get 2x = 4, then divide by 2, so x = 2."),
]  # fmt: skip
STEPS = (10, 20)


def make_tiny_run(path: Path, name: str = "tiny-test", record_trace: bool = True) -> Path:
    """Write a valid run directory at `path`: d 32, 2 MoE layers, 4 experts, top-2, checkpoints 10 and 20."""
    torch.manual_seed(0)
    cfg = preset("tiny")
    cfg.vocab_size = 320  # the tokenizer needs >= 257 (256 bytes + <|endoftext|>)
    cfg.n_dense_layers = 0
    path.mkdir(parents=True, exist_ok=True)
    texts = [t for _, t in EVAL_DOCS] * 4
    save_tokenizer(train_tokenizer(texts, cfg.vocab_size), path / "tokenizer.json")
    info = {"format": RUN_FORMAT, "name": name, "model": cfg.to_dict(), "train": {"steps": STEPS[-1]}}
    write_json_atomic(path / "run.json", info)
    model = build_model(cfg)
    (path / "checkpoints").mkdir(exist_ok=True)
    for step in STEPS:
        with torch.no_grad():  # a different bias per checkpoint, so routing changes over "training"
            for layer in model.moe_layers:
                layer.router.expert_bias.copy_(torch.randn(cfg.moe.n_experts) * 0.05)
        save_weights(weights_path(path, step), model.state_dict(), {"config": cfg.to_dict(), "step": str(step)})

    rng = np.random.default_rng(0)
    L, E = len(cfg.moe_layers), cfg.moe.n_experts
    (path / "history").mkdir(exist_ok=True)
    with open(path / "history" / "train.jsonl", "w") as f:
        for step in range(1, STEPS[-1] + 1):
            load = rng.integers(10, 40, size=(L, E))
            row = {
                "step": step,
                "tokens": step * 256,
                "loss": 6.0 - step * 0.1,
                "lr": 1e-3,
                "tokens_per_s": 1000.0,
                "aux": {},
                "load": load.tolist(),
                "bias": (rng.normal(size=(L, E)) * 1e-3).tolist(),
                "maxvio_batch": (load.max(1) / load.mean(1) - 1).tolist(),
                "router_entropy": [1.2] * L,
                "dropped": 0,
                "time": float(step),
            }
            f.write(json.dumps(row) + "\n")
    with open(path / "history" / "eval.jsonl", "w") as f:
        for step in STEPS:
            row = {"step": step, "val_loss": 5.0, "val_ppl": float(np.exp(5.0)), "maxvio_global": [0.3] * L}
            f.write(json.dumps(row) + "\n")
    (path / "eval").mkdir(exist_ok=True)
    with open(path / "eval" / "docs.jsonl", "w") as f:
        for i, (label, text) in enumerate(EVAL_DOCS):
            f.write(json.dumps({"doc_id": i, "label": label, "text": text}) + "\n")
    if record_trace:  # the last checkpoint has a stored trace; the first one is recorded by the app
        from analysis.recording import record
        from moe_core.run import load_run

        run = load_run(path)
        trace = record(run.load_model(STEPS[-1]), run.tokenizer(), run.eval_docs(), meta={"step": STEPS[-1]})
        trace.save(run.trace_path(STEPS[-1]))
    return path


def make_tiny_hf(path: Path) -> Path:
    """A tiny random DeepSeek-V3 model (sigmoid scores, correction bias, shared expert) saved as a Hugging Face
    folder with a locally trained tokenizer. Needs transformers (the optional `hf` extra)."""
    from tests.hf_fixtures import save_tiny_hf_model

    torch.manual_seed(0)
    return save_tiny_hf_model(path, "deepseek_v3", bias=torch.randn(8) * 0.1)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    return make_tiny_run(tmp_path_factory.mktemp("runs") / "tiny")


ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def app_env(tiny_run, monkeypatch, tmp_path):
    """Point the app at the tiny run; an empty runs folder so nothing else is discovered."""
    monkeypatch.setenv("MOE_EXPLORER_RUN", str(tiny_run))
    monkeypatch.setenv("MOE_EXPLORER_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("MOE_EXPLORER_WARM_UMAP", "0")  # no minute-long numba compile in the background
    return tiny_run


def token_html(at) -> str:
    """The coloured-token HTML a Token routing page shows: the data of its `moe_token_text` components (drawn by
    the browser's HTML parser, app/routing_ui.py), one text after another."""
    parts = [c.proto.json for c in at.get("bidi_component") if c.proto.component_name == "moe_token_text"]
    return "\n".join(json.loads(p).get("html", "") for p in parts)
