"""The tools that built sample_data/ and docs/FINDINGS.md, on the tiny run: the shipped-run export, the
balancing-study tables, and the findings report."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from analysis import findings
from analysis.projections import ProjectionParams, project
from analysis.recording import record
from analysis.trace import load
from moe_core.run import load_run
from scripts import balancing_study, shipped_run
from tests.app.conftest import STEPS, make_tiny_run


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return load_run(make_tiny_run(tmp_path_factory.mktemp("src") / "tiny", record_trace=False))


def test_shipped_run_export(source, tmp_path):
    out = tmp_path / "shipped"
    shipped = shipped_run.export_slim(source, out)
    assert shipped.checkpoints() == [STEPS[-1]]  # final weights only, no optimizer state
    tensors = list((out / "checkpoints").iterdir())
    assert [p.name for p in tensors] == [source.weights_path(STEPS[-1]).name]
    assert (out / "history" / "train.jsonl").read_bytes() == (source.path / "history" / "train.jsonl").read_bytes()
    shipped_run.record_traces(source, shipped, log=lambda _: None)
    traces = {step: load(shipped.trace_path(step)) for step in STEPS}
    assert traces[STEPS[0]].hidden is None  # intermediate checkpoints: the tables only
    assert traces[STEPS[-1]].hidden is not None
    w = traces[STEPS[0]].routing["weight"].to_numpy()
    np.testing.assert_array_equal(w, w.astype(np.float16).astype(np.float32))  # compacted to fp16 precision
    # the bf16 checkpoint routes like the fp32 one it came from, nearly always
    ref = record(source.load_model(STEPS[-1]), source.tokenizer(), source.eval_docs(), max_hidden=0)
    assert (ref.experts_array() == traces[STEPS[-1]].experts_array()).mean() > 0.95
    shipped_run.precompute_projections(shipped, methods=("pca",), log=lambda _: None)
    for layer in range(traces[STEPS[-1]].n_layers):
        proj = project(traces[STEPS[-1]], layer, params=ProjectionParams(), cache_dir=out / "projections")
        assert proj.from_cache


def _fake_study(root, source, results):
    """results: {(seed, strategy): (val_ppl, maxvio_global per layer, maxvio_batch per step)}."""
    for (seed, name), (ppl, vio_global, vio_batch) in results.items():
        run_dir = root / f"seed{seed}" / name
        shutil.copytree(source.path, run_dir)
        rows = [{"step": i + 1, "maxvio_batch": [v, v]} for i, v in enumerate(vio_batch)]
        (run_dir / "history" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        final = {"step": len(rows), "val_loss": float(np.log(ppl)), "val_ppl": ppl, "maxvio_global": vio_global}
        (run_dir / "history" / "eval.jsonl").write_text(json.dumps(final) + "\n")
        info = json.loads((run_dir / "run.json").read_text())
        (run_dir / "run.json").write_text(json.dumps(info | {"train": {"steps": len(rows)}}))


def test_balancing_study_tables(source, tmp_path):
    study = tmp_path / "study"
    curve = [2.0] * 50 + [1.0] * 50
    _fake_study(
        study,
        source,
        {
            (0, "none"): (20.0, [1.0, 1.2], curve),
            (1, "none"): (22.0, [1.4, 1.2], curve),
            (0, "aux_free_u1e-3"): (19.0, [0.1, 0.1], [0.5] * 100),
        },
    )
    _fake_study(study, source, {(2, "none"): (30.0, [2.0, 2.0], curve)})
    info = json.loads((study / "seed2" / "none" / "run.json").read_text())
    (study / "seed2" / "none" / "run.json").write_text(json.dumps(info | {"train": {"steps": 1000}}))
    assert not balancing_study.finished(study / "seed2" / "none")  # stopped at step 100 of 1000: left out
    rows = balancing_study.study_summaries(study)
    assert sorted((r["strategy"], r["seed"]) for r in rows) == [("aux_free_u1e-3", 0), ("none", 0), ("none", 1)]
    table = balancing_study.markdown_table(rows).splitlines()
    assert table[2] == "| aux_free_u1e-3 | 1 | 19.00 | 0.100 | 0.500 |"  # one seed: no std to give
    # none: PPL 20, 22 -> 21 ± sqrt(2) (SAMPLE std, ddof = 1); MaxVio_global means 1.1, 1.3 -> 1.2 ± 0.141
    assert table[3] == "| none | 2 | 21.00 ± 1.41 | 1.200 ± 0.141 | 1.000 ± 0.000 |"
    curves = balancing_study.curve_table(study / "seed0", points=2, window=25).splitlines()
    assert curves[0] == "| strategy | step 25 | step 100 |"
    assert curves[2:] == ["| aux_free_u1e-3 | 0.50 | 0.50 |", "| none | 2.00 | 1.00 |"]
    balancing_study.ship(study, tmp_path / "shipped")
    shipped = sorted(p.relative_to(tmp_path / "shipped").as_posix() for p in (tmp_path / "shipped").rglob("*"))
    assert not any("checkpoints" in p or p.endswith(".safetensors") for p in shipped), "no weights shipped"
    assert "none/history/train.jsonl" in shipped and "none/run.json" in shipped
    assert {"none/final_seed0.json", "none/final_seed1.json", "aux_free_u1e-3/final_seed0.json"} <= set(shipped)
    # the table can be rebuilt from the shipped summaries alone
    assert balancing_study.markdown_table(balancing_study.load_summaries(tmp_path / "shipped")) == "\n".join(table)


def test_mean_sd_is_the_sample_std():
    assert balancing_study.mean_sd([1.0, 2.0, 3.0]) == (2.0, 1.0)  # population std would be 0.816
    m, sd = balancing_study.mean_sd([5.0])
    assert m == 5.0 and np.isnan(sd)


@pytest.mark.parametrize("name", list(balancing_study.STRATEGIES))
def test_study_configs_differ_only_in_balancing(name):
    cfg, base = balancing_study.study_config(name).to_dict(), balancing_study.study_config("none").to_dict()
    balance = cfg["moe"].pop("balance")
    base["moe"].pop("balance")
    assert cfg == base
    for field, value in balancing_study.STRATEGIES[name].items():
        assert balance[field] == value


def test_findings_report(source, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(source.path, run_dir)
    docs = (run_dir / "eval" / "docs.jsonl").read_text().splitlines()
    rows = [json.loads(line) | {"doc_id": i} for i, line in enumerate(docs * 3)]  # the probe's 5 folds need 5+/label
    (run_dir / "eval" / "docs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = load_run(run_dir)
    for step in STEPS:  # a trace at every checkpoint, as the shipped run has
        record(run.load_model(step), run.tokenizer(), run.eval_docs(), meta={"step": step}).save(run.trace_path(step))
    config = findings.FindingsConfig(n_permutations=500, probe_permutations=3, shuffles=20, n_boot=20)
    f = findings.compute(run, config)
    text = findings.markdown(f)
    for heading in ("Domain × expert specialization", "Domain probe", "Mutual information", "Router saturation"):
        assert f"### {heading}" in text
    bullets = findings.summary(f)
    assert text.startswith("\n".join(f"- {b}" for b in bullets))  # the sentences head the section
    # each sentence quotes its table: the domain range is the range of the table's ratios
    assert f"gets {findings.span(f.domain['ratio'])}× its uniform share" in bullets[0]
    assert f"floor 1/{config.n_permutations + 1:,}" in bullets[0]
    flips = f.balance
    assert (flips["tokens with a changed top-k"] >= flips["flipped routings"]).all()  # K=2: a token has 2 routings
    assert f"{findings.pct(flips['flipped routings'])} of the (token, layer, rank) routings" in bullets[-1]
    saturation = text.split("### Router saturation")[1].split("###")[0]
    assert f"| {STEPS[-1]} | 1.000 | 1.000 |" in saturation  # the final checkpoint agrees with itself
