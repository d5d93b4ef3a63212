"""One real-browser test: the app served headless on a tiny run, driven by Playwright + Debian chromium.

Pastes text on Token routing and checks the coloured tokens, then box-selects points in the Router
geometry projection and checks the selected-tokens table. The screenshot goes to docs/screenshot.png when
MOE_EXPLORER_SCREENSHOT=1 (else to the test's tmp folder); MOE_EXPLORER_E2E_RUN picks another run
(e.g. the shipped one, for a nicer screenshot).
"""

from __future__ import annotations

import os
import re

import pytest

from tests.app.conftest import ROOT
from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS, settle

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian chromium: apt-get install chromium")
def test_paste_text_and_select_points(server, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (pip install playwright)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(server + "/token_routing")  # a first request for a page (not the root) must work too
        settle(page)
        box = page.locator("textarea").first
        box.fill("def greet(name):\n    return 'Hello, ' + name\n\nThe quick brown fox jumps over the lazy dog.")
        box.press("Control+Enter")
        settle(page)
        tokens = page.locator(".moe-tokens span[data-expert]")
        tokens.first.wait_for(timeout=30_000)
        assert tokens.count() > 10
        page.locator("[data-testid='stPlotlyChart'] .main-svg").first.wait_for(timeout=30_000)  # the grid drawn
        page.wait_for_timeout(500)
        keep = os.environ.get("MOE_EXPLORER_SCREENSHOT") == "1"
        shot = ROOT / "docs" / "screenshot.png" if keep else tmp_path / "screenshot.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shot), full_page=False)

        drag = page.locator("[data-testid='stPlotlyChart']").first.locator(".nsewdrag").first
        drag.scroll_into_view_if_needed()  # below the selected token's panel
        grid = drag.bounding_box()
        page.mouse.click(grid["x"] + grid["width"] * 0.5, grid["y"] + grid["height"] * 0.25)  # a cell mid-text
        settle(page)
        picked = int(page.locator("input[aria-label^='Token index']").input_value())
        assert picked > 0 and page.locator("[data-testid='stText']", has_text=f"Token {picked}: ").count() == 1

        page.goto(server + "/geometry")
        settle(page)
        chart = page.locator("[data-testid='stPlotlyChart']").first
        chart.wait_for(timeout=30_000)
        chart.scroll_into_view_if_needed()
        chart.hover()
        chart.locator(".modebar-btn[data-val='select']").first.click()  # box select
        drag = chart.locator(".nsewdrag").first.bounding_box()
        x0, y0 = drag["x"] + 5, drag["y"] + 5
        page.mouse.move(x0, y0)
        page.mouse.down()
        page.mouse.move(x0 + drag["width"] * 0.5, y0 + drag["height"] * 0.5, steps=12)
        page.mouse.move(drag["x"] + drag["width"] - 5, drag["y"] + drag["height"] - 5, steps=12)
        page.mouse.up()
        settle(page)
        page.locator("[data-testid='stDataFrame']").first.wait_for(timeout=30_000)  # the selected-tokens table
        heading = page.get_by_text(re.compile(r"^\d+ selected tokens$")).first.inner_text()
        assert int(heading.split()[0]) > 0
        page.screenshot(path=str(tmp_path / "geometry.png"), full_page=True)

        # a teacher's shared link, opened in a fresh tab: that lesson, with the rate from the URL
        learn = browser.new_page(viewport={"width": 1400, "height": 1000})
        learn.goto(server + "/lesson_3_bias?u=0.01")
        settle(learn)
        learn.get_by_role("heading", name="Imbalance and the bias rule").first.wait_for(timeout=30_000)
        assert "0.01" in learn.locator("[data-testid='stMain'] [data-testid='stSlider']").first.inner_text()
        browser.close()
