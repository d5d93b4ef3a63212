"""A run directory built by hand for the CLI tests (run.json, tokenizer, one checkpoint at step 2, a two-step
history, two labelled eval docs): no training needed."""

import pytest
import torch

import moe_core
from app.cli import main
from moe_core.files import append_jsonl, write_json_atomic
from moe_core.run import save_weights, weights_path
from moe_core.tokenizer import save_tokenizer, train_tokenizer

TEXTS = {
    "prose": "The river bends slowly past the old mill, and the town sleeps. " * 3,
    "code": "for i in range(10):\n    total += i * i\nprint(total)\n" * 3,
}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """(run folder, its model in eval mode, its tokenizer)."""
    root = tmp_path_factory.mktemp("runs") / "tiny"
    torch.manual_seed(0)
    cfg = moe_core.preset("tiny")
    cfg.vocab_size = 300
    model = moe_core.build_model(cfg).eval()
    tok = train_tokenizer(list(TEXTS.values()), 300)
    save_tokenizer(tok, root / "tokenizer.json")
    write_json_atomic(root / "run.json", {"format": "moe-explorer-run/1", "name": "tiny-test", "model": cfg.to_dict()})
    save_weights(weights_path(root, 2), model.state_dict(), {"config": cfg.to_dict(), "step": "2"})
    for step in (1, 2):
        append_jsonl(root / "history" / "train.jsonl", {"step": step, "loss": 5.0, "maxvio_batch": [0.5 / step, 0.7]})
    for i, (label, text) in enumerate(TEXTS.items()):
        append_jsonl(root / "eval" / "docs.jsonl", {"doc_id": i, "label": label, "text": text})
    return root, model, tok


def run_cli(argv, capsys):
    """(exit code, stdout, stderr) of `moe-explorer ARGV`."""
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err
