"""The `causal` capability on the model-source protocol: a run gives a `CausalTarget` at its steps with
weights; a run without checkpoints says why not; a Hugging Face folder gives its hooked model."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from analysis.causal.ablation import Ablation, ablation_result
from analysis.sources import HFSource, RunSource
from tests.app.conftest import EVAL_DOCS, STEPS, make_tiny_run

EVAL_DOCS_TUPLES = [(str(i), label, text) for i, (label, text) in enumerate(EVAL_DOCS)]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    return make_tiny_run(tmp_path_factory.mktemp("runs") / "tiny")


def test_a_run_gives_its_model_at_a_step(tiny_run):
    source = RunSource(tiny_run)
    assert source.capabilities.causal
    target = source.causal_model(STEPS[0])
    assert target.step == STEPS[0] and target.model is source.model(STEPS[0])
    assert (target.n_layers, target.n_experts) == (2, 4) and target.name == "tiny"
    assert source.causal_model().step == source.default_step()
    runner = target.runner(source.eval_docs())
    assert runner.n == sum(len(target.tokenizer.encode(text).ids) for _, text in EVAL_DOCS)
    res = ablation_result(runner, Ablation(0, "layer"), n_boot=20)
    assert set(res.per_domain["label"]) == {label for label, _ in EVAL_DOCS} | {"all"}
    assert np.isfinite(res.per_domain["delta"]).all()
    assert target.token_text(target.tokenizer.encode("def").ids[0]) == "def"


def test_a_run_without_checkpoints_says_why(tiny_run, tmp_path):
    fresh = tmp_path / "fresh"
    shutil.copytree(tiny_run, fresh, ignore=shutil.ignore_patterns("checkpoints", "trace_*"))
    source = RunSource(fresh)
    assert not source.capabilities.causal and "no checkpoint" in source.capabilities.causal.reason
    with pytest.raises(ValueError, match="no checkpoint"):
        source.causal_model()


def test_a_hugging_face_folder_gives_a_target_through_hooks(tmp_path):
    pytest.importorskip("transformers", reason="Hugging Face models need the optional extra: pip install .[hf]")
    from tests.app.conftest import make_tiny_hf

    source = HFSource(make_tiny_hf(tmp_path / "tiny-dsv3"), device="cpu", dtype="float32")
    causal = source.capabilities.causal
    assert causal and causal.reason == ""  # DeepSeek-V3: every mode, the lens and what-if
    target = source.causal_model()
    assert target.modes == ("reroute", "zero", "layer", "shared") and target.what_if_reason is None
    res = ablation_result(target.runner(EVAL_DOCS_TUPLES), Ablation(1, "shared"), n_boot=20)
    assert np.isfinite(res.per_domain["delta"]).all()
