"""`moe-explorer ablate` on the hand-built tiny run of tests/cli/conftest.py: its table equals the library's,
--out writes it, and bad input is one clear line."""

import numpy as np
import pandas as pd
import pytest

from analysis.causal.ablation import Ablation, ablation_result
from analysis.causal.target import CausalTarget
from tests.cli.conftest import TEXTS, run_cli


def test_ablate_one_expert_matches_the_library(tiny_run, tmp_path, capsys):
    root, model, tok = tiny_run
    out = tmp_path / "abl.csv"
    argv = ["ablate", "--run", str(root), "--layer", "1", "--expert", "2", "--device", "cpu", "--out", str(out)]
    rc, stdout, err = run_cli(argv, capsys)
    assert rc == 0, err
    assert "layer 1: expert 2 (re-routed)" in stdout and "nats/token" in stdout
    assert "code: 1 docs" in stdout  # the denominators are printed
    table = pd.read_csv(out)
    assert table["label"].tolist() == ["code", "prose", "all"]
    docs = [(str(i), label, text) for i, (label, text) in enumerate(TEXTS.items())]
    runner = CausalTarget(model, tok, "tiny", 2).runner(docs)
    expected = ablation_result(runner, Ablation(1, "reroute", 2)).per_domain
    np.testing.assert_allclose(table["delta"], expected["delta"], rtol=1e-5, atol=1e-7)
    assert table["n_tokens"].tolist() == expected["n_tokens"].tolist()


def test_ablate_all_experts_with_references_to_parquet(tiny_run, tmp_path, capsys):
    root, _, _ = tiny_run
    argv = ["ablate", "--run", str(root), "--layer", "all", "--all-experts", "--references", "--mode", "zero"]
    argv += ["--text", "for i in range(3): print(i)"]
    tables = []
    for extra in ([], ["--batch-size", "1"]):  # one window per forward gives the same numbers
        out = tmp_path / f"abl{len(extra)}.parquet"
        rc, stdout, err = run_cli([*argv, *extra, "--out", str(out)], capsys)
        assert rc == 0, err
        tables.append(pd.read_parquet(out))
    table = tables[0]
    assert len(table) == 2 * (4 + 2) * 2  # layers x (experts + 2 references) x (label "text" + "all")
    assert set(table["mode"]) == {"zero", "layer", "shared"}
    assert "layer 0: shared expert" in stdout
    np.testing.assert_allclose(tables[1]["delta"], table["delta"], rtol=1e-4, atol=1e-6)


def test_per_doc_and_per_token_tables(tiny_run, tmp_path, capsys):
    root, _, _ = tiny_run
    base = ["ablate", "--run", str(root), "--layer", "0", "--expert", "1", "--mode", "zero", "--device", "cpu"]
    tables = {}
    for per in ("doc", "token"):
        out = tmp_path / f"{per}.csv"
        rc, _, err = run_cli([*base, "--per", per, "--out", str(out)], capsys)
        assert rc == 0, err
        tables[per] = pd.read_csv(out)
    docs, tokens = tables["doc"], tables["token"]
    assert (
        sorted(docs["label"]) == ["code", "prose"] and (docs["ablation"] == "layer 0: expert 1 (output zeroed)").all()
    )
    # a document's Δ is the mean of its tokens' Δ
    by_doc = tokens.groupby("doc_id")["delta"].mean()
    np.testing.assert_allclose(docs.set_index("doc_id")["delta"], by_doc.loc[docs["doc_id"]], rtol=1e-6)
    assert len(tokens) == docs["n_tokens"].sum()


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--layer", "0", "--expert", "9"], "--expert must be in 0..3"),
        (["--layer", "5", "--expert", "0"], "--layer must be in 0..1"),
        (["--layer", "x", "--expert", "0"], "--layer must be an integer or 'all'"),
        (["--layer", "0", "--expert", "0", "--out", "t.txt"], "--out must end in .csv or .parquet"),
        (["--layer", "0", "--expert", "0", "--text", " "], "the text is empty"),
        (["--layer", "0", "--expert", "0", "missing.txt"], "no such file or folder: missing.txt"),
    ],
)
def test_bad_input_is_one_line(tiny_run, capsys, extra, message):
    root, _, _ = tiny_run
    rc, _, err = run_cli(["ablate", "--run", str(root), "--device", "cpu", *extra], capsys)
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory):
    pytest.importorskip("transformers")
    from tests.hf_fixtures import save_tiny_hf_model

    root = tmp_path_factory.mktemp("hf")
    return {family: save_tiny_hf_model(root / family, family) for family in ("olmoe", "qwen2_moe", "phimoe")}


def test_a_hugging_face_folder_is_ablated_through_hooks(tiny_hf, tmp_path, capsys):
    from analysis.causal.hf_interventions import HFCausalTarget
    from analysis.hf import load_hf_model

    out = tmp_path / "hf.csv"
    argv = ["ablate", "--hf", str(tiny_hf["qwen2_moe"]), "--layer", "1", "--expert", "2", "--references"]
    argv += ["--hf-device", "cpu", "--text", TEXTS["prose"], "--out", str(out)]
    rc, stdout, err = run_cli(argv, capsys)
    assert rc == 0, err
    assert "layer 1: expert 2 (re-routed)" in stdout and "layer 1: shared expert" in stdout
    table = pd.read_csv(out)
    target = HFCausalTarget(load_hf_model(tiny_hf["qwen2_moe"], device="cpu", dtype="float32"), "qwen2_moe")
    runner = target.runner([("text", "text", TEXTS["prose"])])
    expected = ablation_result(runner, Ablation(1, "reroute", 2)).per_domain
    np.testing.assert_allclose(table["delta"][:2], expected["delta"], rtol=1e-5, atol=1e-7)
    assert (table["delta"][:2] != 0).all()


def test_a_hugging_face_folder_without_texts_uses_the_samples(tiny_hf, capsys):
    argv = ["ablate", "--hf", str(tiny_hf["olmoe"]), "--layer", "0", "--all-experts", "--mode", "zero"]
    rc, stdout, err = run_cli([*argv, "--hf-device", "cpu"], capsys)
    assert rc == 0, err
    assert "built-in samples" in err and "layer 0: expert 7 (output zeroed)" in stdout and "Python code" in stdout


@pytest.mark.parametrize(
    "family,extra,message",
    [
        ("olmoe", ["--references"], "OLMoE supports the ablation modes reroute, zero, layer, not 'shared'"),
        ("phimoe", [], "Phi-MoE supports the ablation modes zero, layer, not 'reroute' (its router's rule is not"),
    ],
)
def test_a_mode_the_family_lacks_is_one_line(tiny_hf, capsys, family, extra, message):
    argv = ["ablate", "--hf", str(tiny_hf[family]), "--layer", "0", "--expert", "0", *extra]
    rc, _, err = run_cli([*argv, "--text", "hello there", "--hf-device", "cpu"], capsys)
    assert rc == 2 and message in err
    assert len(err.strip().splitlines()) == 1  # said before the model loads
