"""A live class in real browsers: a teacher's context at projector size starts a class; student contexts at
phone size (400 px) open the shared join link fresh, join and answer; the teacher's tally counts each of them
once. Served like tests/e2e/test_shared_links.py, with the class store in a temporary SQLite file."""

from __future__ import annotations

import pytest

from app.classroom.store import ClassStore, StoreConfig
from tests.app.conftest import make_tiny_run
from tests.e2e.conftest import CHROMIUM, serve, settle

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.skipif(not CHROMIUM.exists(), reason="needs chromium")]
PHONE = {"width": 400, "height": 800}


@pytest.fixture
def class_server(tmp_path, monkeypatch):
    db = tmp_path / "classes.sqlite3"
    monkeypatch.setenv("MOE_EXPLORER_CLASS_DB", str(db))
    with serve(make_tiny_run(tmp_path / "runs" / "tiny"), tmp_path) as url:
        yield url, db


def start_class(browser, url: str):
    teacher = browser.new_context(viewport={"width": 1280, "height": 720}).new_page()
    teacher.goto(url + "/class_teacher")
    settle(teacher)
    teacher.get_by_role("button", name="Start a class").click()
    heading = teacher.get_by_role("heading", name="Code:")
    heading.wait_for(timeout=60_000)
    code = heading.inner_text().split(":")[1].strip()
    link = teacher.get_by_test_id("stCode").first.inner_text().strip()
    return teacher, code, link


def join(browser, link: str, name: str = ""):
    page = browser.new_context(viewport=PHONE).new_page()
    page.goto(link)
    settle(page)
    if name:
        page.get_by_role("textbox", name="Your name (optional)").fill(name)
    page.get_by_role("button", name="Join").click()
    page.get_by_text("With all biases at 0").wait_for(timeout=60_000)
    return page


def answer(page, option: str) -> None:
    page.get_by_text(option, exact=True).click()
    page.get_by_role("button", name="Send my answer").click()
    page.get_by_text("Sent: " + option).wait_for(timeout=60_000)


def test_students_on_phones_answer_and_the_teacher_sees_the_tally(class_server, browser):
    url, db = class_server
    teacher, code, link = start_class(browser, url)
    assert link.endswith(f"/class_join?class={code}")
    choices = ["Nothing: the regions stay the same", "Nothing: the regions stay the same", "The regions rotate"]
    students = [join(browser, link, name="<b>Ada</b>" if i == 0 else "") for i in range(len(choices))]
    for page, option in zip(students, choices):
        answer(page, option)
    answer(students[2], choices[2])  # the same session again: still one answer
    assert ClassStore(StoreConfig(db)).tally(code) == [0, 2, 1]
    teacher.get_by_text("3 joined · 3 answered").wait_for(timeout=60_000)  # the tally refreshes on its own
    assert teacher.get_by_text("Names given by students (1)").is_visible()
    assert not students[1].get_by_text("Ada").count()  # a student never sees another's name

    teacher.get_by_text("Reveal the answer").click()
    students[0].get_by_text("Answer: ").wait_for(timeout=60_000)  # the phone picks up the reveal on its own


def test_a_shared_class_link_opened_fresh_and_a_wrong_code(class_server, browser):
    url, _ = class_server
    _, code, link = start_class(browser, url)
    page = browser.new_context(viewport=PHONE).new_page()
    page.goto(link)
    settle(page)
    expect = pytest.importorskip("playwright.sync_api").expect
    expect(page.get_by_role("textbox", name="Class code")).to_have_value(code, timeout=60_000)  # from the link
    page.get_by_role("textbox", name="Class code").fill("ZZZZ9")
    page.get_by_role("button", name="Join").click()
    page.get_by_text("There is no class with the code ZZZZ9").wait_for(timeout=60_000)
