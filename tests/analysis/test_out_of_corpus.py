"""analysis.out_of_corpus: reading the labelled texts, and the verdict of each named-expert claim."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from analysis import out_of_corpus


def fake_trace(experts_T: list[int], docs: list[str], labels: list[str], n_experts: int = 4):
    """A stand-in for a RoutingTrace: 1 layer, K=1 (claims_table reads only these members)."""
    e = np.asarray(experts_T).reshape(-1, 1, 1)
    tokens = pd.DataFrame({"doc_id": docs, "position": np.arange(len(docs)), "token_id": 0, "label": labels})
    return SimpleNamespace(n_experts=n_experts, experts_array=lambda: e, tokens=tokens)


def claims(*rows):
    return pd.DataFrame([{"layer": 0, "label": lab, "expert": ex, "ratio": 3.0} for lab, ex in rows])


def test_verdicts_by_hand():
    # K=1, E=4 (uniform share 1/4). code docs c1 c2: expert 0 in 3 of 4 tokens each -> ratio 3, CI above 1;
    # math docs m1 m2: expert 1 in 1 of 4 tokens (ratio 1, CI touches 1) and expert 0 in 2 of 4 (ratio 2)
    code = [0, 0, 0, 2] * 2
    math = [1, 0, 0, 3] * 2
    docs = ["c1"] * 4 + ["c2"] * 4 + ["m1"] * 4 + ["m2"] * 4
    labels = ["code"] * 8 + ["math"] * 8
    trace = fake_trace(code + math, docs, labels)
    out = out_of_corpus.claims_table(claims(("code", 0), ("math", 1), ("math", 0), ("code", 3)), trace, n_boot=200)
    by = out.set_index(["label", "expert"])
    held = by.loc[("code", 0)]
    assert held["ooc_ratio"] == pytest.approx(3.0) and held["ooc_lo"] == pytest.approx(3.0)
    assert (held["ooc_top_label"], held["n_docs"], held["verdict"]) == ("code", 2, "held")
    # expert 1 only ever sees math tokens (its top domain) but at the uniform rate: partly
    assert by.loc[("math", 1), "ooc_ratio"] == pytest.approx(1.0) and by.loc[("math", 1), "verdict"] == "partly"
    # expert 0 takes math at 2x (CI above 1) but code more: partly
    assert by.loc[("math", 0), "ooc_top_label"] == "code" and by.loc[("math", 0), "verdict"] == "partly"
    # expert 3 never sees code and prefers math: neither condition
    assert by.loc[("code", 3), "verdict"] == "did not hold"
    assert out_of_corpus.verdict_counts(out) == {"held": 1, "partly": 2, "did not hold": 1}


def test_claim_about_a_domain_without_texts_is_an_error():
    trace = fake_trace([0, 1], ["a", "a"], ["code", "code"])
    with pytest.raises(ValueError, match="no out-of-corpus documents labelled 'prose'"):
        out_of_corpus.claims_table(claims(("prose", 0)), trace)


def test_read_docs(tmp_path):
    (tmp_path / "code_js_1.txt").write_text("let x = 1;")
    (tmp_path / "math_tex_1.txt").write_text("$x^2$")
    (tmp_path / "README.md").write_text("not a document")
    docs = out_of_corpus.read_docs(tmp_path)
    assert [(d.label, d.source, d.doc_id) for d in docs] == [("code", "js", 0), ("math", "tex", 1)]
    (tmp_path / "badname.txt").write_text("x")
    with pytest.raises(ValueError, match="LABEL_SOURCE_N"):
        out_of_corpus.read_docs(tmp_path)
    with pytest.raises(ValueError, match="no LABEL_SOURCE_N"):
        out_of_corpus.read_docs(tmp_path / "empty")


def test_pair_claims_by_hand():
    # K=2, E=4, 4 tokens: {0,1} {0,1} {2,3} {2,0}. load: 0:3, 1:2, 2:2, 3:1; T = 4
    # lift(0,1) = 2 * 4 / (3 * 2) = 1.33; lift(2,3) = 1 * 4 / (2 * 1) = 2 (the strongest); lift(0,2) = 4/6 = 0.67
    e = np.array([[0, 1], [0, 1], [2, 3], [2, 0]]).reshape(-1, 1, 2)
    tokens = pd.DataFrame({"doc_id": ["a"] * 4, "position": np.arange(4), "token_id": 0, "label": "code"})
    trace = SimpleNamespace(n_experts=4, experts_array=lambda: e, tokens=tokens)
    pairs = pd.DataFrame({"layer": [0, 0, 0], "pair": ["0+1", "2+3", "0+2"], "lift": [2.0, 2.0, 2.0]})
    out = out_of_corpus.pair_claims_table(pairs, trace, top=1).set_index("pair")
    assert out.loc["0+1", "ooc_lift"] == pytest.approx(4 / 3) and out.loc["0+1", "ooc_rank"] == 2
    assert out.loc["2+3", "ooc_lift"] == pytest.approx(2.0) and out.loc["2+3", "ooc_rank"] == 1
    assert out["verdict"].tolist() == ["partly", "held", "did not hold"]
