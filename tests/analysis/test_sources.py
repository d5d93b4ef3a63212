"""Model sources: RunSource on a tiny run, HFSource on a tiny Hugging Face folder, discovery, and the rule that
the app never asks which kind of source it has."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from analysis.sources import HFSource, ModelSource, RunSource, discover_sources, open_source
from moe_core.paths import default_run_path
from scripts.balancing_study import STRATEGIES
from tests.app.conftest import EVAL_DOCS, STEPS, make_tiny_run

ROOT = Path(__file__).resolve().parents[2]
DOCS = [("a", "prose", "The keeper climbed the stairs."), ("b", "code", "def f(x):\n    return x\n")]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    return make_tiny_run(tmp_path_factory.mktemp("runs") / "tiny")


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory) -> Path:
    pytest.importorskip("transformers", reason="Hugging Face models need the optional extra: pip install .[hf]")
    from tests.app.conftest import make_tiny_hf

    return make_tiny_hf(tmp_path_factory.mktemp("hf") / "tiny-dsv3")


def test_run_source_gives_what_a_run_holds(tiny_run):
    source = RunSource(tiny_run)
    assert isinstance(source, ModelSource)
    assert (source.kind, source.name, source.path) == ("run", "tiny-test", str(tiny_run.resolve()))
    caps = vars(source.capabilities)
    assert all(v for k, v in caps.items() if k != "pages") and not caps["pages"]  # one eval trace: no pages
    assert source.steps() == source.model_steps() == list(STEPS) and source.default_step() == STEPS[-1]
    assert source.trace_steps() == [STEPS[-1]]
    card = source.card()
    assert (card.n_layers, card.n_experts, card.top_k) == (2, 4, 2)
    assert dict(card.metrics)["Experts × top-k"] == "4 × 2" and dict(card.rows)["score function"]
    hist, ev = source.history(), source.eval_history()
    assert hist["step"].tolist() == list(range(1, STEPS[-1] + 1))
    assert ev["step"].tolist() == list(STEPS)
    config = source.training_config()
    assert config["model"]["moe"]["n_experts"] == 4 and config["train"] == {"steps": STEPS[-1]}
    assert [label for _, label, _ in source.eval_docs()] == [label for label, _ in EVAL_DOCS]
    assert source.stored_trace(STEPS[-1]).n_tokens > 0
    assert source.stored_trace(STEPS[0]) is None and source.stored_trace(None) is None
    assert source.projection_cache_dir() == tiny_run.resolve() / "projections"


def test_run_source_routes_and_keeps_a_few_models(tiny_run):
    source = RunSource(tiny_run, max_models=1)
    text = DOCS[1][2]
    spans = source.token_spans(text)
    assert "".join(text[a:b] for a, b in spans) == text
    trace = source.record(DOCS, step=STEPS[0])
    assert trace.texts == {d: t for d, _, t in DOCS} and set(trace.tokens["label"]) == {"prose", "code"}
    assert trace.meta["step"] == STEPS[0]
    assert source.router_biases(STEPS[0]).shape == (2, 4)
    first = source.model(STEPS[0])
    assert source.model(STEPS[0]) is first  # kept
    source.model(STEPS[1])
    assert source.model(STEPS[0]) is not first  # at most max_models: loaded again


def test_a_run_without_checkpoints_cannot_route(tiny_run, tmp_path):
    fresh = tmp_path / "fresh"
    shutil.copytree(tiny_run, fresh, ignore=shutil.ignore_patterns("checkpoints", "trace_*"))
    source = RunSource(fresh)
    capabilities = source.capabilities
    assert not capabilities.route_text and "no checkpoint" in capabilities.route_text.reason
    assert capabilities.history and capabilities.steps
    assert source.steps() == [] and source.default_step() is None


@pytest.fixture(scope="module")
def traced_run(tiny_run, tmp_path_factory) -> Path:
    """The tiny run with a stored trace at both steps and weights at the last one only (as the shipped run)."""
    run = tmp_path_factory.mktemp("traced") / "traced"
    shutil.copytree(tiny_run, run)
    source = RunSource(run)
    trace = source.record(source.eval_docs(), STEPS[0])
    trace.save(source.run.trace_path(STEPS[0]))
    source.run.weights_path(STEPS[0]).unlink()
    return run


def test_every_step_with_a_stored_trace_is_a_step(traced_run):
    source = RunSource(traced_run)
    assert source.steps() == list(STEPS) and source.trace_steps() == list(STEPS)
    assert source.model_steps() == [STEPS[-1]] and source.default_step() == STEPS[-1]
    caps = vars(source.capabilities)
    assert all(v for k, v in caps.items() if k != "pages")  # "at all": it routes text, at its last step
    stored = source.stored_trace(STEPS[0])
    assert stored.meta["step"] == STEPS[0] and stored.n_tokens > 0


def test_a_step_without_weights_serves_its_eval_docs_and_refuses_other_text(traced_run):
    source = RunSource(traced_run)
    stored = source.stored_trace(STEPS[0])
    (doc_a, label_a, text_a), (doc_b, _, text_b) = source.eval_docs()[:2]
    trace = source.record([("sample", "eval: prose", text_b), ("x", "mine", text_a)], STEPS[0])
    assert trace.texts == {"sample": text_b, "x": text_a} and trace.meta["step"] == STEPS[0]
    assert trace.tokens["doc_id"].tolist()[0] == "sample" and set(trace.tokens["label"]) == {"eval: prose", "mine"}
    want = stored.select_docs([doc_b, doc_a])  # the same routing, in the order asked for
    n_b = int((stored.tokens["doc_id"] == doc_b).sum())
    got = trace.experts_array()
    b_rows = stored.tokens.index[stored.tokens["doc_id"] == doc_b]
    a_rows = stored.tokens.index[stored.tokens["doc_id"] == doc_a]
    assert np.array_equal(got[:n_b], stored.experts_array()[b_rows])
    assert np.array_equal(got[n_b:], stored.experts_array()[a_rows]) and trace.n_tokens == want.n_tokens
    reason = f"step {STEPS[0]} has only the recorded eval documents, no weights: choose step {STEPS[-1]} to route"
    with pytest.raises(ValueError, match=f"^{reason} new text$"):
        source.record([("input", "input", "Some new text.")], STEPS[0])
    with pytest.raises(ValueError, match=f"^{reason}"):
        source.record([("a", label_a, text_a), ("input", "input", "Some new text.")], STEPS[0])
    with pytest.raises(ValueError, match=f"^{reason}"):
        source.router_biases(STEPS[0])
    with pytest.raises(ValueError, match=f"^step 15 has no weights: choose step {STEPS[-1]} to route new text$"):
        source.model(15)
    assert source.record([("input", "input", "Some new text.")], STEPS[-1]).meta["step"] == STEPS[-1]


def test_a_run_with_traces_only_views_them_but_cannot_route(traced_run, tmp_path):
    run = tmp_path / "traces-only"
    shutil.copytree(traced_run, run, ignore=shutil.ignore_patterns("checkpoints"))
    source = RunSource(run)
    assert source.steps() == list(STEPS) and source.model_steps() == [] and source.default_step() == STEPS[-1]
    assert not source.capabilities.route_text and "no checkpoint" in source.capabilities.route_text.reason
    assert source.capabilities.steps and source.stored_trace(STEPS[0]) is not None
    with pytest.raises(ValueError, match="no checkpoint"):
        source.record([("input", "input", "Some new text.")], STEPS[-1])


def test_a_broken_run_says_so_on_first_use(tmp_path):
    (tmp_path / "run.json").write_text('{"format": "something else"}')
    source = open_source(tmp_path)  # opening reads nothing
    with pytest.raises(ValueError, match="unknown run format"):
        source.steps()


def test_hf_source_gives_one_set_of_weights(tiny_hf):
    source = HFSource(tiny_hf, device="cpu", dtype="float32")
    assert isinstance(source, ModelSource)
    assert (source.kind, source.name) == ("hf", "tiny-dsv3")
    capabilities = source.capabilities
    assert capabilities.route_text and capabilities.router_biases
    for absent in ("steps", "history", "stored_traces", "eval_docs"):
        assert not getattr(capabilities, absent) and getattr(capabilities, absent).reason
    assert source.steps() == source.model_steps() == [] and source.default_step() is None
    assert source.history() is None and source.eval_history() is None and source.stored_trace(None) is None
    assert source.training_config() is None
    assert source.eval_docs() == []
    card = source.card()
    assert card.title == "Hugging Face model: tiny-dsv3" and card.n_experts == 8
    text = "def f(x): return x"
    assert "".join(text[a:b] for a, b in source.token_spans(text)) == text
    trace = source.record(DOCS)
    assert trace.texts == {d: t for d, _, t in DOCS}
    biases = source.router_biases(None)
    assert biases.shape == (trace.n_layers, 8) and np.abs(biases).sum() > 0  # the correction bias
    with pytest.raises(ValueError, match="no checkpoints"):
        source.record(DOCS, step=10)


def test_discovery_names_and_order(tiny_run, tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    shutil.copytree(tiny_run, runs / "mine", ignore=shutil.ignore_patterns("checkpoints"))
    outside = tmp_path / "outside"
    shutil.copytree(tiny_run, outside, ignore=shutil.ignore_patterns("checkpoints"))
    (runs / "linked").symlink_to(outside)  # a symlink out of the runs folder: not offered
    hf = tmp_path / "hf-model"
    hf.mkdir()
    (hf / "config.json").write_text("{}")
    found = discover_sources(tiny_run, [hf, tmp_path / "nothing"], runs)
    names = list(found)
    assert names[:3] == ["tiny", "HF: hf-model", "default (shipped)"]
    assert found["tiny"] == str(tiny_run.resolve()) and found["mine"] == str((runs / "mine").resolve())
    assert sorted(n for n in names if n.startswith("study: ")) == sorted(f"study: {n}" for n in STRATEGIES)
    assert str(outside.resolve()) not in found.values()
    assert found["default (shipped)"] == str(default_run_path().resolve())
    # the shipped run given as the app's run: listed once, under its own name
    again = discover_sources(default_run_path(), [], tmp_path / "missing")
    assert list(again.values()).count(str(default_run_path().resolve())) == 1
    assert next(iter(again)) == "default (shipped)"


def test_open_source_picks_the_kind(tiny_run, tmp_path):
    assert isinstance(open_source(tiny_run), RunSource)
    (tmp_path / "config.json").write_text("{}")
    assert isinstance(open_source(tmp_path, hf_device="cpu"), HFSource)
    with pytest.raises(ValueError, match="not a run directory or a Hugging Face folder"):
        open_source(tmp_path / "nothing")


KIND_BRANCH = re.compile(r"\bis_hf\b|\.kind\s*[=!]=|isinstance\([^)]*\b(RunSource|HFSource)\b")


def test_the_app_never_branches_on_the_kind_of_source():
    """Pages ask a source what it can give (its capabilities), never which kind it is."""
    bad = []
    for path in sorted((ROOT / "app").rglob("*.py")):
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if KIND_BRANCH.search(line):
                bad.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not bad, "branches on the kind of source:\n" + "\n".join(bad)
    assert KIND_BRANCH.search("if source.kind == 'hf':") and KIND_BRANCH.search("isinstance(s, HFSource)")
