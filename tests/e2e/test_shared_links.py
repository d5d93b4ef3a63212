"""Shared links in a real browser: the state in the URL opens the same view in a new browser context, and
/overview opens the Overview page (not Streamlit's "Page not found" dialog). Served like tests/e2e/test_browser.py:
the app headless on a tiny run (checkpoints 10 and 20, two MoE layers), Playwright driving Debian chromium."""

from __future__ import annotations

from urllib.parse import parse_qs, urlparse

import pytest

from tests.e2e.conftest import CHROMIUM, settle

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.skipif(not CHROMIUM.exists(), reason="needs chromium")]


def query(url: str) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(urlparse(url).query).items()}


def shown_state(page) -> tuple[str, str]:
    """(step, layer) as the Expert heatmaps page shows them to the reader."""
    caption = page.get_by_text("at step").first.inner_text()
    heading = page.get_by_role("heading", name="Domain specialization, layer").first.inner_text()
    return caption.rsplit(" ", 1)[-1], heading.rsplit(" ", 1)[-1]


def choose(page, label: str, option: str, tries: int = 5) -> None:
    """Pick `option` of the select box `label`; a rerun that lands while the list is open closes it (a busy
    machine makes that likely), so open it again until the option can be clicked."""
    for _ in range(tries):
        page.get_by_test_id("stSelectbox").filter(has_text=label).click()
        item = page.get_by_role("option", name=option, exact=True)
        try:
            item.wait_for(timeout=5_000)
            item.click(timeout=5_000)
            return
        except Exception:  # noqa: BLE001 - playwright's TimeoutError: the list closed under us; try again
            settle(page)
    raise AssertionError(f"could not choose {option!r} in {label!r}")


def test_a_copied_link_opens_the_same_view_in_a_new_browser(server, browser):
    first = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = first.new_page()
    page.goto(server + "/heatmaps")
    settle(page)
    assert shown_state(page) == ("20", "0")
    choose(page, "MoE layer", "1")  # layer 0 -> 1
    settle(page)
    slider = page.get_by_test_id("stSidebar").get_by_role("slider")  # checkpoint step 20 -> 10
    slider.focus()
    slider.press("ArrowLeft")
    settle(page)
    page.get_by_text("at step 10").first.wait_for(timeout=60_000)
    assert shown_state(page) == ("10", "1")
    link = page.url
    assert {k: query(link).get(k) for k in ("step", "layer")} == {"step": "10", "layer": "1"} and query(link)["run"]
    first.close()

    fresh = browser.new_context(viewport={"width": 1400, "height": 1000})  # no cookies, no session: a new reader
    page = fresh.new_page()
    page.goto(link)
    settle(page)
    page.get_by_text("at step").first.wait_for(timeout=60_000)
    assert shown_state(page) == ("10", "1")
    assert page.get_by_test_id("stSidebar").get_by_role("slider").get_attribute("aria-valuetext") == "10"
    assert {k: query(page.url).get(k) for k in ("step", "layer")} == {"step": "10", "layer": "1"}
    fresh.close()


def test_overview_opens_at_its_own_address(server, browser):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    for address in ("/overview?step=10", "/"):
        page.goto(server + address)
        settle(page)
        page.get_by_role("heading", name="Architecture").wait_for(timeout=30_000)  # the Overview page
        assert page.get_by_text("Page not found").count() == 0 and page.get_by_role("dialog").count() == 0
        caption = page.get_by_text("(change both in the sidebar)").first.inner_text()
        assert ("checkpoint step 10" in caption) == (address != "/"), caption  # the link's query is kept
    page.goto(server + "/token_routing")  # a link to a page works as before
    settle(page)
    assert page.get_by_role("heading", name="Token routing").count() == 1
