"""Click-to-inspect and the expert profile in a real browser (Playwright + Debian chromium, the tiny run).

A click on a token in the coloured text selects it (ringed, its details in the panel below the text, its router
steps drawn); a grid cell selects its token and its layer; the tooltip is CSS (no title attribute), shows on
hover and never stays open on the selected token (on a phone-sized touch screen too); a legend chip opens that
expert's profile in the same session (the pasted text is still there when coming back).
Screenshots go to the test's tmp folder (MOE_EXPLORER_SHOTS=DIR keeps them there).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS, settle

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
TEXT = "def greet(name):\n    return 'Hello, ' + name\n\nThe quick brown fox jumps over the lazy dog."


def shots(tmp_path: Path) -> Path:
    out = Path(os.environ.get("MOE_EXPLORER_SHOTS") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    return out


def route_text(page, url: str) -> None:
    page.goto(url + "/token_routing")
    settle(page)
    box = page.locator("textarea").first
    box.fill(TEXT)
    box.press("Control+Enter")
    settle(page)
    page.locator(".moe-tokens span[data-token]").first.wait_for(timeout=30_000)


def step_line(page) -> str:
    return page.locator("[data-testid='stText']", has_text=re.compile(r"^Token \d+: ")).first.inner_text()


def after(locator) -> str:
    """The CSS tooltip of a token as drawn now ("none" when there is none)."""
    return locator.evaluate("e => getComputedStyle(e, '::after').content")


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian chromium: apt-get install chromium")
def test_click_token_and_grid_cell_select_token_and_layer(server, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (pip install playwright)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        route_text(page, server)
        tokens = page.locator(".moe-tokens span[data-token]")
        assert tokens.count() > 10 and page.locator(".moe-tokens [title]").count() == 0  # no browser tooltip
        charts = page.locator("[data-testid='stMain'] [data-testid='stPlotlyChart']")
        charts.first.locator(".main-svg").first.wait_for(timeout=30_000)
        assert charts.count() == 1  # the grid; the router steps wait for a token to be picked
        target = tokens.nth(6)
        index = target.get_attribute("data-token")
        target.click()
        settle(page)
        selected = page.locator(".moe-tokens .moe-sel")
        assert selected.get_attribute("data-token") == index  # highlighted
        assert step_line(page).startswith(f"Token {index}: ") and step_line(page).endswith("at layer 0")
        panel = page.locator(".st-key-tr_panel")
        assert re.search(r"layer 0: E\d+ [01]\.\d\d", panel.inner_text())  # its experts and gate weights
        charts.nth(1).locator(".main-svg").first.wait_for(timeout=30_000)  # its router steps
        assert charts.count() == 2
        page.mouse.move(1, 1)
        assert after(selected) == "none"  # no tooltip stays open over the next line
        selected.hover()
        assert after(selected) == "none"  # the selected token's details are in the panel, not a tooltip
        tokens.nth(2).hover()
        assert "token 2 · layer 0: E" in after(tokens.nth(2))  # any other token: the CSS tooltip on hover

        drag = charts.first.locator(".nsewdrag").first
        drag.scroll_into_view_if_needed()
        grid = drag.bounding_box()
        page.mouse.click(grid["x"] + grid["width"] * 0.3, grid["y"] + grid["height"] * 0.75)  # a cell of layer 1
        settle(page)
        line = step_line(page)
        picked = re.match(r"Token (\d+): ", line).group(1)
        assert line.endswith("at layer 1") and picked != index
        assert page.locator(".moe-tokens .moe-sel").get_attribute("data-token") == picked  # the text follows
        assert re.search(r"[?&]layer=1(&|$)", page.url) and re.search(rf"[?&]token={picked}(&|$)", page.url)
        grid = drag.bounding_box()  # again, on the redrawn grid (its selected cell outlined): layer 0
        page.mouse.click(grid["x"] + grid["width"] * 0.8, grid["y"] + grid["height"] * 0.25)
        settle(page)
        again = re.match(r"Token (\d+): ", step_line(page)).group(1)
        assert step_line(page).endswith("at layer 0") and int(again) > int(picked)
        page.screenshot(path=str(shots(tmp_path) / "inspect_1400.png"), full_page=True)

        phone = browser.new_page(viewport={"width": 400, "height": 800}, has_touch=True, is_mobile=True)
        route_text(phone, server)
        phone.locator(".moe-tokens span[data-token]").nth(3).tap()
        settle(phone)
        selected = phone.locator(".moe-tokens .moe-sel")
        assert selected.get_attribute("data-token") == "3"
        assert after(selected) == "none"  # the tap's sticky hover shows no tooltip over the next line
        assert step_line(phone).startswith("Token 3: ")  # the details: in the panel
        selected.scroll_into_view_if_needed()
        phone.screenshot(path=str(shots(tmp_path) / "inspect_400x800.png"))
        browser.close()


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian chromium: apt-get install chromium")
def test_legend_chip_opens_the_expert_profile_in_the_same_session(server, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (pip install playwright)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        route_text(page, server)
        page.evaluate("window.__moe_same_page = 1")
        page.locator(".moe-legend a[data-expert-link='1']").click()
        summary = page.locator(".moe-profile-summary").first  # the causal sentence is a second one
        summary.wait_for(timeout=60_000)
        settle(page)
        assert summary.inner_text().startswith("E1 at layer 0 takes ")
        assert "of routings (uniform 25.0%)" in summary.inner_text()
        assert re.search(r"/expert\?(layer=0&expert=1|expert=1&layer=0)", page.url), page.url
        assert page.evaluate("window.__moe_same_page") == 1  # no reload: the same page and session
        page.screenshot(path=str(shots(tmp_path) / "profile_1400.png"), full_page=True)

        page.locator("[data-testid='stSidebarNav'] a[href$='token_routing']").click()  # back, same session
        settle(page)
        assert page.locator("textarea").first.input_value() == TEXT

        fresh = browser.new_page(viewport={"width": 400, "height": 800})  # a link opened on its own
        fresh.goto(server + "/expert?layer=1&expert=2")
        fresh.locator(".moe-profile-summary").first.wait_for(timeout=60_000)
        assert fresh.locator(".moe-profile-summary").first.inner_text().startswith("E2 at layer 1 takes ")
        fresh.screenshot(path=str(shots(tmp_path) / "profile_400x800.png"), full_page=True)
        browser.close()
