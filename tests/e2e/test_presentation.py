"""The guided presentation in a real browser at projector size (1280x720): the main figure fits the first screen,
arrow keys walk the lessons, and Exit brings the sidebar back. Served like tests/e2e/test_shared_links.py."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import CHROMIUM, settle

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.skipif(not CHROMIUM.exists(), reason="needs chromium")]
MAIN_H1 = "[data-testid='stMain'] h1"  # the sidebar has a title of its own


def title(page) -> str:
    return page.locator(MAIN_H1).first.inner_text().strip()


def wait_title(page, expected: str) -> None:
    page.wait_for_function(
        "([sel, t]) => { const h = document.querySelector(sel); return h && h.innerText.includes(t); }",
        arg=[MAIN_H1, expected],
        timeout=60_000,
    )
    settle(page)


def press(page, key: str, expected: str) -> None:
    page.evaluate("document.activeElement && document.activeElement.blur()")  # keys go to the page, not a widget
    page.keyboard.press(key)
    wait_title(page, expected)
    settle(page)


def test_arrow_keys_walk_the_lessons_and_exit_restores_the_sidebar(server, browser):
    page = browser.new_context(viewport={"width": 1280, "height": 720}).new_page()
    page.goto(server + "/lesson_1_partition?present=1")
    settle(page)
    assert title(page) == "A router partitions input space"
    assert not page.get_by_test_id("stSidebar").is_visible()
    chart = page.locator(".js-plotly-plot").first.bounding_box()
    assert chart["y"] >= 0 and chart["y"] + chart["height"] <= 720  # the whole main figure on the first screen

    press(page, "ArrowRight", "Top-k and gates")
    assert "present=1" in page.url and "lesson_2_gates" in page.url
    press(page, "ArrowRight", "Imbalance and the bias rule")
    press(page, "ArrowLeft", "Top-k and gates")
    page.get_by_role("button", name="Next").click()
    wait_title(page, "Imbalance and the bias rule")

    page.get_by_role("button", name="Exit presentation").click()
    settle(page)
    assert page.get_by_test_id("stSidebar").is_visible()
    assert "present=" not in page.url and title(page) == "Imbalance and the bias rule"
