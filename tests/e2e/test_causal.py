"""The causal views in a real browser (Playwright + Debian chromium, the tiny run): the Causal check page runs
its sweep and draws the scatter, the expert profile states what removing the expert does and shows its logit
lens, and the what-if
controls under Token routing re-run the text with a forced expert."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS, settle

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
NO_CHROMIUM = "needs Debian chromium: apt-get install chromium"


def browser_page(p):
    browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
    return browser, browser.new_page(viewport={"width": 1400, "height": 1000})


def no_exception(page) -> None:
    assert page.locator("[data-testid='stException']").count() == 0


@pytest.mark.skipif(not CHROMIUM.exists(), reason=NO_CHROMIUM)
def test_causal_page_sweep_scatter_and_expert_profile(server, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (pip install playwright)")
    with sync_api.sync_playwright() as p:
        browser, page = browser_page(p)
        page.goto(server + "/causal")
        settle(page)
        assert page.get_by_text("12 ablations (2 layers × 4 experts").count() == 1
        page.get_by_role("button", name="Run the sweep").click()
        settle(page, timeout=120_000)
        no_exception(page)
        page.locator(".js-plotly-plot").first.wait_for(timeout=30_000)
        agreement = "can: one per (layer, domain)), the domain the expert is most specialised in"
        assert page.get_by_text(agreement).count() == 1
        assert page.get_by_role("button", name="Download every ablation (CSV)").count() == 1
        page.screenshot(path=str(tmp_path / "causal.png"), full_page=True)

        page.goto(server + "/expert?layer=1&expert=3")
        settle(page, timeout=120_000)
        page.get_by_text("Measure it: remove this expert and re-run the eval documents").click()
        settle(page, timeout=120_000)
        no_exception(page)
        summary = page.locator(".moe-profile-summary", has_text="Removing E3 at layer 1")
        assert summary.count() == 1 and "over all 6 documents" in summary.inner_text()
        page.get_by_text("Logit lens: the next tokens its output promotes and suppresses").click()
        settle(page, timeout=120_000)
        no_exception(page)
        assert page.get_by_text("Suppresses", exact=True).count() == 1
        page.screenshot(path=str(tmp_path / "expert.png"), full_page=True)
        browser.close()


@pytest.mark.skipif(not CHROMIUM.exists(), reason=NO_CHROMIUM)
def test_what_if_controls_force_an_expert(server, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (pip install playwright)")
    with sync_api.sync_playwright() as p:
        browser, page = browser_page(p)
        page.goto(server + "/token_routing")
        settle(page)
        box = page.locator("textarea").first
        box.fill("def greet(name):\n    return 'Hello, ' + name")
        box.press("Control+Enter")
        settle(page)
        page.get_by_text("What if the router chose differently?").scroll_into_view_if_needed()
        page.get_by_text("force an expert").click()  # the forced expert defaults to E0
        page.get_by_role("button", name="Apply").click()
        settle(page, timeout=120_000)
        no_exception(page)
        assert page.get_by_text("Δ loss = loss with the change − without").count() == 1
        page.locator("[data-testid='stDataFrame']").nth(1).wait_for(timeout=60_000)  # drawn after the idle state
        assert page.locator("[data-testid='stDataFrame']").count() >= 2  # the summary and the token table
        assert page.get_by_role("button", name="Download the what-if table (CSV)").count() == 1
        page.screenshot(path=str(tmp_path / "what_if.png"), full_page=True)
        browser.close()
