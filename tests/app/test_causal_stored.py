"""The Causal check page shows a sweep stored with the run at once (no button, nothing re-run), and says which
stored file it could not read."""

import shutil

import pandas as pd
from streamlit.testing.v1 import AppTest

from analysis.causal.ablation import sweep_ablations
from analysis.causal.stored_sweep import COLUMNS, sweep_path
from analysis.sources import open_source
from tests.app.conftest import ROOT


def write_sweep(run, step: int, delta: float) -> None:
    """A stored sweep of every ablation the page asks for, with a recognisable Δ."""
    source = open_source(run)
    card = source.card()
    rows = []
    for ab in sweep_ablations(card.n_layers, card.n_experts, "reroute"):
        for label in ("code", "prose", "all"):
            e = -1 if ab.expert is None else ab.expert
            rows.append((ab.name, ab.layer, ab.mode, e, label, 2, 20, delta, delta / 2, delta * 2))
    path = sweep_path(run, step, "reroute")
    path.parent.mkdir(exist_ok=True)
    pd.DataFrame(rows, columns=list(COLUMNS)).to_csv(path, index=False)


def test_a_stored_sweep_shows_without_running(app_env, entry, tmp_path, monkeypatch):
    run = tmp_path / "stored"
    shutil.copytree(app_env, run)  # the session's tiny run stays untouched
    monkeypatch.setenv("MOE_EXPLORER_RUN", str(run))
    step = open_source(run).default_step()
    write_sweep(run, step, 0.1234)
    sweep_path(run, step, "zero").write_text("not,a,sweep\n1,2,3\n")
    at = AppTest.from_file(entry, default_timeout=90)
    at.run()
    at.switch_page(str(ROOT / "app" / "views" / "causal.py")).run()
    assert not at.exception, [e.value for e in at.exception]
    assert "ca_run" not in [b.key for b in at.button]  # nothing to run: every ablation is stored
    assert any("From the sweep stored with the model" in c.value for c in at.caption)
    assert any("sweep_step" in w.value and "missing columns" in w.value for w in at.warning)
    refs = next(d.value for d in at.dataframe if "delta" in d.value and "ablation" in d.value)
    assert (refs["delta"] == 0.1234).all()
