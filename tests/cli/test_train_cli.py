"""`moe-explorer train` (app/cli/train.py): one-line errors, and the balance flags shaping the model config."""

from __future__ import annotations

from argparse import Namespace

import pytest

from app.cli.train import model_config_from_args, run_train
from tests.moe_core.test_train import tiny_docs

pytestmark = pytest.mark.usefixtures("one_thread")


def cli_args(**kw) -> Namespace:
    base = dict(
        preset="tiny",
        out=None,
        steps=None,
        balance=None,
        bias_rate=None,
        alpha=None,
        experts=None,
        top_k=None,
        vocab_size=320,
        device="cpu",
        resume=False,
        corpus=None,
        corpus_size="small",
        batch_size=8,
        seq_len=None,
        lr=None,
        seed=None,
        eval_every=None,
        ckpt_every=None,
        warmup=None,
        compile=False,
        quiet=True,
    )
    base.update(kw)
    return Namespace(**base)


def test_cli_errors_are_one_liners(tmp_path):
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        run_train(cli_args(preset="huge", out=str(tmp_path / "x")))
    with pytest.raises(ValueError, match="nothing to resume"):
        run_train(cli_args(out=str(tmp_path / "x"), resume=True))
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "run.json").write_text("{}")
    with pytest.raises(ValueError, match="already holds a run"):
        run_train(cli_args(out=str(tmp_path / "r")))
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n\n".join(d.text for d in tiny_docs(8)))
    with pytest.raises(OSError, match="cannot write to run directory"):
        run_train(cli_args(out=str(blocker / "run"), corpus=[str(tmp_path / "c.txt")], steps=1))
    with pytest.raises(ValueError, match="--balance none cannot"):
        run_train(cli_args(out=str(tmp_path / "b"), balance=["none", "switch"]))


def test_cli_balance_flags_shape_the_config(tmp_path):
    cfg = model_config_from_args(cli_args(balance=["switch", "zloss"], alpha=0.05, experts=8, top_k=3))
    bal = cfg.moe.balance
    assert (bal.bias_rate, bal.switch_alpha, bal.z_alpha, bal.seq_alpha) == (0.0, 0.05, 0.05, 0.0)
    assert (cfg.moe.n_experts, cfg.moe.top_k) == (8, 3)
    assert model_config_from_args(cli_args(balance=["aux_free"], bias_rate=1e-2)).moe.balance.bias_rate == 1e-2
