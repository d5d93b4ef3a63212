"""docs/FINDINGS.md says what its tables say: its generated blocks are regenerated from sample_data/ (and the
out-of-corpus texts in tests/data) and compared with the file, so a sentence cannot drift from its table."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from analysis import findings, out_of_corpus
from analysis.causal.sweep_findings import sweep_markdown
from analysis.trace import load
from moe_core.paths import default_run_path, study_runs_path
from moe_core.run import load_run
from scripts import balancing_study
from scripts.findings import read_block, replace_block

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "FINDINGS.md"
OUT_OF_CORPUS = ROOT / "tests" / "data" / "out_of_corpus"
SWEEP = default_run_path() / "causal" / "sweep_step2000_reroute.csv"


def test_generated_blocks_round_trip():
    doc = "a\n<!-- generated: x (do not edit by hand) -->\nold\n<!-- end generated: x -->\nb\n"
    new = replace_block(doc, "x", "new\nlines")
    assert read_block(new, "x") == "new\nlines" and new.startswith("a\n") and new.endswith("\nb\n")
    with pytest.raises(ValueError, match="no generated block"):
        read_block(doc, "y")


def test_balancing_study_block_matches_the_shipped_summaries():
    """§3's tables and sentences, recomputed from sample_data/balancing_study (summaries + seed-0 histories)."""
    folder = study_runs_path()
    rows = balancing_study.load_summaries(folder)
    assert {r["strategy"] for r in rows} == set(balancing_study.STRATEGIES)
    assert all(r["steps"] == 1000 for r in rows)
    assert read_block(DOC.read_text(encoding="utf-8"), "balancing_study") == balancing_study.study_markdown(folder)


def test_seed0_summaries_match_the_shipped_histories():
    """The seed-0 summaries are those of the shipped seed-0 histories (the same runs)."""
    folder = study_runs_path()
    for name in balancing_study.STRATEGIES:
        shipped = [r for r in balancing_study.load_summaries(folder) if r["strategy"] == name and r["seed"] == 0]
        assert shipped == [balancing_study.summarise(folder / name, seed=0)]


def test_training_block_matches_the_history():
    """§1's validation curve and the sentence on how much the loss still fell."""
    text = findings.training_markdown(load_run(default_run_path()))
    assert read_block(DOC.read_text(encoding="utf-8"), "training") == text


def test_span_pct_and_p_text():
    assert findings.span([1.824, 4.107, 2.5]) == "1.82–4.11" and findings.span([0.4371, 0.4372]) == "0.44"
    assert findings.pct([0.131, 0.197]) == "13.1–19.7 %"
    assert findings.p_text(1e-5, 1e-5) == "p ≤ 1e-05 (the floor)" and findings.p_text(0.0129, 1e-5) == "p = 0.013"


@pytest.mark.slow
def test_findings_block_matches_a_regeneration():
    """§2's sentences and tables, recomputed from sample_data/default_run (~40 s on 2 busy cores)."""
    config = findings.FindingsConfig(out_of_corpus=OUT_OF_CORPUS)
    text = findings.findings(load_run(default_run_path()), config)
    assert read_block(DOC.read_text(encoding="utf-8"), "findings") == text


def test_out_of_corpus_texts_cover_every_domain():
    docs = out_of_corpus.read_docs(OUT_OF_CORPUS)
    run = load_run(default_run_path())
    assert {d.label for d in docs} == {d.label for d in run.eval_docs()}
    assert all(len(d.text) > 500 for d in docs)
    per_label = {label: sum(len(d.text) for d in docs if d.label == label) for label in {d.label for d in docs}}
    assert min(per_label.values()) > 2000  # a few KB of text per domain


def test_causal_block_matches_the_shipped_sweep():
    """§4's sentences and tables, rebuilt from the shipped sweep table and the final eval trace."""
    run = load_run(default_run_path())
    assert run.checkpoints()[-1] == 2000  # the step the sweep measured
    text = sweep_markdown(load(run.trace_path(2000)), pd.read_csv(SWEEP))
    assert read_block(DOC.read_text(encoding="utf-8"), "causal") == text


@pytest.mark.slow
def test_shipped_sweep_reproduces():
    """One row of the shipped sweep (layer 0, expert 12 re-routed; the largest single-domain effect of its
    layer) re-measured on the shipped checkpoint: the same Δ loss per domain."""
    from analysis.causal.ablation import Ablation, ablation_result
    from analysis.sources import open_source

    source = open_source(default_run_path())
    runner = source.causal_model(2000).runner(source.eval_docs())
    got = ablation_result(runner, Ablation(0, "reroute", 12), n_boot=10).per_domain.set_index("label")
    sweep = pd.read_csv(SWEEP)
    want = sweep[(sweep["layer"] == 0) & (sweep["expert"] == 12)].set_index("label")
    assert sorted(got.index) == sorted(want.index)
    for label in want.index:
        assert got.loc[label, "n_tokens"] == want.loc[label, "n_tokens"]
        assert got.loc[label, "delta"] == pytest.approx(want.loc[label, "delta"], abs=1e-5)
