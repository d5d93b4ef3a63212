"""The Learn lessons as a guided presentation: previous / next (arrow keys), a visible exit (Esc), projector-sized
figures, and teacher notes toggled on and off.

Presentation mode lives in the session (so it follows the teacher from lesson to lesson) and in the URL
(`present=1`, so a link opens a lesson presented). Figures are scaled by `analysis.figures.lessons.for_projector`.
"""

from __future__ import annotations

import streamlit as st
from streamlit.errors import StreamlitAPIException

from analysis import figures
from app.classroom import content
from app.views.learn import LESSONS

PRESENT_KEY = "learn_present"  # plain session state (not a widget key: it must outlive the page's widgets)
NOTES_KEY = "learn_notes"
EXPLORE_PAGE = "views/overview.py"
MAIN_FIGURE_HEIGHT = 470  # with the title and the bar above it, the whole figure fits a 1280x720 projector
# A constant: no user string ever goes into this CSS.
PRESENTATION_CSS = """
<style>
[data-testid="stSidebar"], [data-testid="stSidebarCollapsedControl"], [data-testid="collapsedControl"],
[data-testid="stSidebarNav"], header[data-testid="stHeader"] { display: none !important; }
[data-testid="stMain"] .block-container { max-width: 100%; padding-top: 0.6rem; padding-bottom: 2rem; }
[data-testid="stMarkdownContainer"] p, [data-testid="stMarkdownContainer"] li,
[data-testid="stWidgetLabel"] p { font-size: 1.6rem !important; line-height: 1.4; }
h1 { font-size: 2.3rem !important; padding: 0 0 0.3rem 0 !important; }
h2 { font-size: 2.2rem !important; } h3 { font-size: 1.9rem !important; }
[data-testid="stMetricValue"] { font-size: 2.6rem !important; }
[data-testid="stSliderThumbValue"], [data-testid="stTickBar"] { font-size: 1.2rem !important; }
</style>
"""
# Narrow screens: smaller headings, so that a phone shows the first figure early. Constant CSS too.
PHONE_CSS = """
<style>
@media (max-width: 640px) {
  h1 { font-size: 1.6rem !important; } h3 { font-size: 1.25rem !important; }
  [data-testid="stMain"] .block-container { padding-left: 0.6rem; padding-right: 0.6rem; padding-top: 2.8rem; }
}
</style>
"""


def lesson_pages() -> list[str]:
    """The lessons' page paths (relative to app/main.py), in order."""
    return [f"views/learn/{file}" for file, _, _ in LESSONS]


def neighbours(index: int) -> tuple[tuple[str, str], tuple[str, str]]:
    """((page, label) before, (page, label) after) lesson `index` (0-based); the ends lead back to exploring."""
    pages, titles = lesson_pages(), [title for _, title, _ in LESSONS]
    before = (pages[index - 1], titles[index - 1]) if index > 0 else (EXPLORE_PAGE, "Explore the model")
    after = (pages[index + 1], titles[index + 1]) if index + 1 < len(pages) else (EXPLORE_PAGE, "Explore the model")
    return before, after


def lesson_index(prefix: str) -> int:
    return int(prefix.lstrip("l")) - 1  # "l3" is the third lesson


def presenting() -> bool:
    if PRESENT_KEY not in st.session_state:  # first page of the session: the link decides
        st.session_state[PRESENT_KEY] = st.query_params.get("present", "") in ("1", "true", "on")
    return bool(st.session_state[PRESENT_KEY])


def _set_presenting(on: bool) -> None:
    st.session_state[PRESENT_KEY] = on


def _keep_notes() -> None:
    st.session_state[NOTES_KEY] = st.session_state[NOTES_KEY + "_toggle"]


def _go(page: str) -> None:
    leaving = page == EXPLORE_PAGE
    if leaving:
        st.session_state[PRESENT_KEY] = False  # the explore pages are not slides
    try:
        st.switch_page(page, query_params={} if leaving else {"present": "1"})
    except StreamlitAPIException:  # this page runs outside the app's navigation (tests of one page)
        st.warning("Open the app (`moe-explorer app`) to move between lessons.")


def bar(prefix: str) -> bool:
    """The row under a lesson's title: Present (or Previous / Next / Exit) and the teacher-notes toggle."""
    on = presenting()
    st.markdown(PHONE_CSS, unsafe_allow_html=True)
    if on:
        st.markdown(PRESENTATION_CSS, unsafe_allow_html=True)
        (prev_page, prev_label), (next_page, next_label) = neighbours(lesson_index(prefix))
        cols = st.columns([1, 1, 1, 1], vertical_alignment="center")
        if cols[0].button("◀ Previous", key="present_prev", shortcut="Left", help=prev_label, width="stretch"):
            _go(prev_page)
        if cols[1].button("Next ▶", key="present_next", shortcut="Right", help=next_label, width="stretch"):
            _go(next_page)
        cols[3].button(
            "✕ Exit presentation",
            key="present_exit",
            shortcut="Esc",
            on_click=_set_presenting,
            args=(False,),
            width="stretch",
        )
    else:
        cols = st.columns([1, 1, 2], vertical_alignment="center")
        cols[0].button(
            "Present",
            key="present_on",
            icon=":material/slideshow:",
            on_click=_set_presenting,
            args=(True,),
            help="Full screen for a projector: large text and figures, ◀ ▶ between lessons, Esc to leave.",
        )
    st.session_state[NOTES_KEY + "_toggle"] = st.session_state.get(NOTES_KEY, False)
    cols[2].toggle("Teacher notes", key=NOTES_KEY + "_toggle", on_change=_keep_notes)
    if on != (st.query_params.get("present") == "1"):
        if on:
            st.query_params["present"] = "1"
        else:
            del st.query_params["present"]
    return on


def show(where, fig, key: str, config: dict, main: bool = False) -> None:
    """Draw a lesson figure in `where` (st or a column); projector-sized while presenting."""
    if presenting():
        fig = figures.lessons.for_projector(fig, MAIN_FIGURE_HEIGHT if main else None)
    where.plotly_chart(fig, key=key, config=config)


def notes(prefix: str) -> None:
    """The lesson's teacher notes, when the toggle is on."""
    note = content.NOTES.get(prefix)
    if note is None or not st.session_state.get(NOTES_KEY, False):
        return
    with st.container(border=True, key=f"{prefix}_notes"):
        st.markdown(f"**Teacher notes** · about {note.minutes} minutes")
        st.markdown(f"**Ask:** {note.ask}")
        st.markdown(f"**Students usually say:** {note.usual}")
