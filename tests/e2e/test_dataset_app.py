"""The app opened on a routing dataset (`moe-explorer app --dataset DIR`): Expert heatmaps and an Expert
profile draw from its DuckDB aggregates, in a real browser (Playwright + Debian chromium)."""

from __future__ import annotations

import pytest

from moe_core.paths import default_run_path
from tests.analysis.dataset_fixtures import make_trace, write_dataset
from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS, serve, settle

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian chromium: apt-get install chromium")
def test_heatmaps_and_expert_profile_of_a_dataset(tmp_path, monkeypatch):
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (pip install playwright)")
    pytest.importorskip("duckdb")
    traces = {100: make_trace(seed=7, routing_seed=1, step=100), 200: make_trace(seed=7, routing_seed=2, step=200)}
    root = write_dataset(tmp_path / "tinyset", traces)
    monkeypatch.setenv("MOE_EXPLORER_DATASET", str(root))  # what `app --dataset` sets: the app opens on it
    T = traces[200].n_tokens
    with serve(default_run_path(), tmp_path) as url, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url + "/heatmaps")
        settle(page)
        page.get_by_text(f"{T:,} tokens of 9 documents at step 200").wait_for(timeout=60_000)
        charts = page.locator("[data-testid='stPlotlyChart'] .main-svg")
        charts.nth(3).wait_for(timeout=30_000)  # load, specialization, co-activation and flow drawn
        assert page.locator("[data-testid='stException']").count() == 0
        page.goto(url + "/expert?layer=1&expert=2")
        settle(page)
        page.get_by_text("Share of routings").wait_for(timeout=60_000)
        page.get_by_text("Chosen together with").wait_for(timeout=30_000)
        assert page.locator("[data-testid='stException']").count() == 0
        assert f"{T:,} tokens of 9 documents at step 200" in page.inner_text("body")
        browser.close()
