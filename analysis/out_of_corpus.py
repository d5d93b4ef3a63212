"""Do named-expert claims hold on text from sources the corpus never contained?

A co-activation claim "experts i+j of layer l are chosen together more often than independence predicts" (lift,
`metrics.coactivation`) is re-measured the same way: "held" when its lift on the out-of-corpus tokens is above
1 and the pair is still among the `top` strongest pairs of its layer there, "partly" when only the lift is
above 1, "did not hold" otherwise.

A claim "expert i of layer l prefers domain d" comes from the eval set (`significance.familywise_domain_null`:
the most specialised expert per (layer, domain)). It is re-measured on out-of-corpus documents labelled with
the domain they stand in for (e.g. JavaScript for `code`): the expert's ratio (share of the label's tokens
whose top-k contains it / uniform K/E) with a bootstrap CI over those documents, and whether the claimed domain
is still the expert's highest-ratio domain there.

verdict: "held" when the CI lies above 1x AND the claimed domain is still its top domain; "partly" when only
one of the two holds; "did not hold" when neither does.

    docs = read_docs(FOLDER)                       # FOLDER/LABEL_SOURCE_N.txt, one document per file
    table = claims_table(claims, trace_of(run, docs))
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis import metrics, specialization
from analysis.trace import RoutingTrace
from moe_core.corpus.docs import Doc
from moe_core.run import Run

N_BOOT = 1000  # bootstrap resamples of the out-of-corpus documents
CI = 0.95


def read_docs(folder: str | Path) -> list[Doc]:
    """One `Doc` per FOLDER/LABEL_SOURCE_N.txt (label and source from the name), sorted by name."""
    docs = []
    for i, path in enumerate(sorted(Path(folder).glob("*.txt"))):
        parts = path.stem.split("_")
        if len(parts) < 3:
            raise ValueError(f"{path.name}: expected LABEL_SOURCE_N.txt")
        docs.append(Doc(text=path.read_text(encoding="utf-8"), label=parts[0], source=parts[1], doc_id=i))
    if not docs:
        raise ValueError(f"no LABEL_SOURCE_N.txt documents in {folder}")
    return docs


def trace_of(run: Run, docs: list[Doc]) -> RoutingTrace:
    """Route `docs` through the run's final checkpoint (no hidden states kept)."""
    from analysis.recording import record

    step = run.checkpoints()[-1]
    return record(run.load_model(step), run.tokenizer(), docs, max_hidden=0, meta={"step": step})


def claims_table(claims: pd.DataFrame, trace: RoutingTrace, *, n_boot: int = N_BOOT, seed: int = 0) -> pd.DataFrame:
    """Each claim (columns layer, label, expert, ratio) re-measured on `trace` (labelled out-of-corpus docs).

    Returns columns: layer, label, expert, eval_ratio (the claim's ratio on the eval set), ooc_ratio, ooc_lo,
    ooc_hi (bootstrap CI over the out-of-corpus docs), ooc_top_label (the expert's highest-ratio label there),
    n_docs (out-of-corpus docs of the label), verdict.
    """
    E = trace.n_experts
    ex = trace.experts_array()
    cells = specialization.domain_specialization(ex, trace.tokens, E)
    ci = specialization.specialization_bootstrap_ci(ex, trace.tokens, E, n_boot=n_boot, ci=CI, seed=seed)
    by_cell = ci.set_index(["layer", "label", "expert"])
    top = cells.loc[cells.groupby(["layer", "expert"])["ratio"].idxmax()].set_index(["layer", "expert"])["label"]
    n_docs = trace.tokens.groupby("label")["doc_id"].nunique()
    rows = []
    for c in claims.itertuples(index=False):
        key = (int(c.layer), str(c.label), int(c.expert))
        if key not in by_cell.index:
            raise ValueError(f"no out-of-corpus documents labelled {c.label!r}")
        r = by_cell.loc[key]
        above, still_top = bool(r["lo"] > 1), top.loc[(key[0], key[2])] == key[1]
        verdict = "held" if above and still_top else "partly" if above or still_top else "did not hold"
        rows.append(
            {
                "layer": key[0],
                "label": key[1],
                "expert": key[2],
                "eval_ratio": float(c.ratio),
                "ooc_ratio": float(r["ratio"]),
                "ooc_lo": float(r["lo"]),
                "ooc_hi": float(r["hi"]),
                "ooc_top_label": top.loc[(key[0], key[2])],
                "n_docs": int(n_docs.get(key[1], 0)),
                "verdict": verdict,
            }
        )
    return pd.DataFrame(rows)


def verdict_counts(table: pd.DataFrame) -> dict[str, int]:
    """{"held": n, "partly": n, "did not hold": n} of a `claims_table`."""
    counts = table["verdict"].value_counts()
    return {v: int(counts.get(v, 0)) for v in ("held", "partly", "did not hold")}


def pair_claims_table(pairs: pd.DataFrame, trace: RoutingTrace, top: int = 3) -> pd.DataFrame:
    """Each co-activation claim (columns layer, pair "i+j", lift) re-measured on `trace`.

    Returns columns: layer, pair, eval_lift, ooc_lift, ooc_rank (1 = the layer's strongest pair there), verdict.
    """
    lift_LEE = metrics.coactivation(trace.experts_array(), trace.n_experts).lift_LEE
    rows = []
    for c in pairs.itertuples(index=False):
        i, j = (int(x) for x in str(c.pair).split("+"))
        lift = np.where(
            np.eye(lift_LEE.shape[1], dtype=bool) | ~np.isfinite(lift_LEE[c.layer]), -np.inf, lift_LEE[c.layer]
        )
        ooc = float(lift[i, j])
        rank = int((np.triu(lift, 1) > ooc).sum()) + 1  # pairs with a higher lift, each counted once
        above = np.isfinite(ooc) and ooc > 1
        verdict = "held" if above and rank <= top else "partly" if above else "did not hold"
        rows.append({"layer": int(c.layer), "pair": c.pair, "eval_lift": float(c.lift), "ooc_lift": ooc,
                     "ooc_rank": rank, "verdict": verdict})  # fmt: skip
    return pd.DataFrame(rows)
