"""Token routing's "Compare with step" in a real browser (Playwright + Debian chromium, the tiny run: weights at
steps 10 and 20): the share of changed tokens per layer, the two coloured texts side by side with every token at
the same place in both, changed tokens boxed, and the choice in the URL (a copied link reopens it; "—" drops it)."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlparse

import pytest

from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS, settle
from tests.e2e.test_shared_links import choose

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.skipif(not CHROMIUM.exists(), reason="needs chromium")]


def query(url: str) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(urlparse(url).query).items()}


def compared(page) -> tuple[int, int]:
    """(changed, tokens) as the comparison's caption states them, once its chart and both texts are drawn."""
    page.locator(".st-key-tr_cmp_bars .main-svg").first.wait_for(timeout=60_000)
    assert page.locator(".moe-tokens").count() == 3  # the page's text, then step A and step B side by side
    caption = page.get_by_text(re.compile(r"^Denominator: the [\d,]+ tokens")).first.inner_text()
    changed, total = re.search(r"layer 0: ([\d,]+) of ([\d,]+) tokens have another top-1", caption).groups()
    return int(changed.replace(",", "")), int(total.replace(",", ""))


def test_compare_with_another_step_side_by_side_and_in_the_link(server):
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (pip install playwright)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        first = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = first.new_page()
        page.goto(server + "/token_routing?sample=Math")
        settle(page)
        page.locator(".moe-tokens span[data-token]").first.wait_for(timeout=30_000)
        assert "compare" not in query(page.url)
        choose(page, "Compare with step", "step 10")
        settle(page)
        changed, total = compared(page)
        a, b = page.locator(".moe-tokens").nth(1), page.locator(".moe-tokens").nth(2)
        assert a.locator("[data-token]").count() == b.locator("[data-token]").count() == total
        assert a.locator(".moe-changed").count() == b.locator(".moe-changed").count() == changed
        box_a, box_b = a.bounding_box(), b.bounding_box()
        assert box_b["x"] > box_a["x"] + box_a["width"] - 1  # side by side
        for i in (0, total // 2, total - 1):  # the same token at the same place in both texts
            ta = a.locator(f"[data-token='{i}']").bounding_box()
            tb = b.locator(f"[data-token='{i}']").bounding_box()
            assert abs((ta["x"] - box_a["x"]) - (tb["x"] - box_b["x"])) < 1
            assert abs((ta["y"] - box_a["y"]) - (tb["y"] - box_b["y"])) < 1
        link = page.url
        assert query(link)["compare"] == "10" and query(link)["sample"] == "Math"
        first.close()

        fresh = browser.new_context(viewport={"width": 1400, "height": 1000})  # a new reader opens the link
        page = fresh.new_page()
        page.goto(link)
        settle(page)
        assert compared(page) == (changed, total)
        choose(page, "Compare with step", "—")
        settle(page)
        assert "compare" not in query(page.url) and page.locator(".moe-tokens").count() == 1
        browser.close()
