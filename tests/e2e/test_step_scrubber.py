"""The step scrubber in a real browser on the shipped run (weights at step 2000 only, eval traces at 250…2000):
moving the sidebar's step slider to the first step marks it on the Training dynamics curves, and Expert heatmaps
then shows that step's stored routing (its step and token count in the caption)."""

from __future__ import annotations

from pathlib import Path

import pytest

from analysis.sources import RunSource
from moe_core.paths import default_run_path
from tests.e2e.conftest import CHROMIUM, settle

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian chromium: apt-get install chromium")
def test_sidebar_step_slider_moves_the_pages(shipped_server, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (pip install playwright)")
    source = RunSource(default_run_path())
    first = source.steps()[0]
    assert first < source.default_step() and first not in source.model_steps()  # a step without weights
    n_tokens = source.stored_trace(first).n_tokens
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(shipped_server + "/training")
        settle(page)
        page.get_by_role("heading", name="Training dynamics").first.wait_for(timeout=60_000)
        settle(page)
        thumb = page.locator("[data-testid='stSidebar'] input[type='range']").first  # the step slider's thumb
        assert thumb.get_attribute("aria-valuetext") == str(source.default_step())
        thumb.focus()
        thumb.press("Home")  # the keyboard moves a slider as a drag does
        settle(page)
        assert thumb.get_attribute("aria-valuetext") == str(first)
        main = page.locator("[data-testid='stMain']")
        main.get_by_text(f"step {first}", exact=True).first.wait_for(timeout=30_000)  # the marker on a curve
        page.screenshot(path=str(tmp_path / "training.png"), full_page=False)

        page.locator("[data-testid='stSidebarNav'] a", has_text="Expert heatmaps").click()  # same session
        settle(page)
        caption = main.get_by_text(f"{n_tokens:,} tokens of").first
        caption.wait_for(timeout=60_000)
        assert caption.inner_text().endswith(f"at step {first}")
        assert thumb.get_attribute("aria-valuetext") == str(first)  # the sidebar kept the step
        page.screenshot(path=str(tmp_path / "heatmaps.png"), full_page=False)
        browser.close()
