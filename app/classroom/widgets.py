"""The live class in Streamlit: the teacher's panel (code, QR code, question, live tally, reveal) and the
students' panel (join, answer from a phone). State shared between sessions lives only in the `ClassStore`;
a session keeps just its own class code and token. Students' names are shown to the teacher as table cells
(never as Markdown or HTML) and never to other students.
"""

from __future__ import annotations

import io
from urllib.parse import urlencode, urlsplit

import pandas as pd
import segno
import streamlit as st

from analysis import figures
from app import settings
from app.classroom import content
from app.classroom.store import ClassError, ClassStore, StoreConfig, new_student_token, normalise_code
from app.views.learn import LESSONS

TEACHER_KEY, TEACHER_CODE = "class_teacher_token", "class_teacher_code"
STUDENT_KEY, STUDENT_CODE = "class_student_token", "class_student_code"
JOIN_PAGE = "class_join"  # the students' page url_path (app/main.py)
TALLY_EVERY_S = 2.0  # the teacher's tally refreshes this often
STUDENT_EVERY_S = 5.0  # a phone looks for a new question this often (30 phones: 6 small reruns a second)
LESSON_TITLES = {f"l{i + 1}": title for i, (_, title, _) in enumerate(LESSONS)}


@st.cache_resource
def get_store(path: str, hours: float) -> ClassStore:
    return ClassStore(StoreConfig(path, ttl_s=hours * 3600))


def store() -> ClassStore:
    return get_store(str(settings.class_db()), settings.class_hours())


def qr_png(text: str) -> bytes:
    """A QR code of `text` as PNG bytes (segno: pure Python)."""
    buf = io.BytesIO()
    segno.make(text, error="m").save(buf, kind="png", scale=8, border=2)
    return buf.getvalue()


def join_link(code: str) -> str:
    """The students' link, on the address the teacher's browser used (open the app by its network address)."""
    url = st.context.url or ""
    parts = urlsplit(url)
    base = f"{parts.scheme}://{parts.netloc}" if parts.netloc else ""
    return f"{base}/{JOIN_PAGE}?{urlencode({'class': code})}"


# --- the teacher ---------------------------------------------------------------------------------------------


def teacher_class() -> tuple[str, str] | None:
    """(code, teacher token) of the class this session started, if it is still running."""
    code, token = st.session_state.get(TEACHER_CODE), st.session_state.get(TEACHER_KEY)
    if not code:
        return None
    try:
        store().get_class(code)
    except ClassError:
        st.session_state.pop(TEACHER_CODE, None)
        return None
    return code, token


def open_question(lesson: str) -> None:
    """Open `lesson`'s question in this session's class (no-op without a class or when it is already open)."""
    running = teacher_class()
    question = content.QUESTIONS.get(lesson)
    if running is None or question is None or store().get_class(running[0]).question == lesson:
        return
    store().set_question(*running, lesson, len(question.options))


def _start() -> None:
    code, token = store().start_class()
    st.session_state[TEACHER_CODE], st.session_state[TEACHER_KEY] = code, token
    open_question(st.session_state.get("class_lesson", "l1"))


def _end(code: str, token: str) -> None:
    store().end_class(code, token)
    st.session_state.pop(TEACHER_CODE, None)
    st.query_params.pop("class", None)


def _choose_lesson() -> None:
    open_question(st.session_state["class_lesson"])


def teacher_panel() -> None:
    running = teacher_class()
    if running is None:
        watched = normalise_code(st.query_params.get("class"))
        if watched:  # e.g. the teacher's page reloaded: a new session, without the class's secret token
            _class_view(watched, None)
            return
        st.markdown(
            "Start a class and your students join from their phones with the code or the QR code: no accounts. "
            "They answer each lesson's question; you see how many chose each answer (names only from students "
            "who choose to give one) and reveal the answer when you want."
        )
        st.button("Start a class", type="primary", icon=":material/groups:", on_click=_start, key="class_start")
        return
    if st.query_params.get("class") != running[0]:
        st.query_params["class"] = running[0]  # a reload of this page still shows the class (read-only)
    _class_view(*running)


def _class_view(code: str, token: str | None) -> None:
    """Code, QR code, link and the live tally; with the teacher's token also the question, reveal and names."""
    try:
        info = store().get_class(code)
    except ClassError as err:
        st.error(str(err))  # the code in it is A-Z and 0-9 only
        st.button("Start a class", type="primary", icon=":material/groups:", on_click=_start, key="class_start")
        return
    link = join_link(code)
    left, right = st.columns([1, 2])
    with left:
        st.markdown(f"### Code: `{code}`")
        st.image(qr_png(link), caption="Scan to join", width=240)
        st.code(link, language=None)
    with right:
        if token is None:
            st.info(
                "This browser session did not start the class, so it shows the counts only: choosing the "
                "question, revealing the answer and students' names stay with the session that started it."
            )
        else:
            st.session_state["class_lesson"] = info.question or st.session_state.get("class_lesson", "l1")
            st.selectbox(
                "Question from lesson",
                list(content.QUESTIONS),
                key="class_lesson",
                format_func=LESSON_TITLES.get,
                on_change=_choose_lesson,
            )
        live_tally(code, token)
    if token is not None:
        st.button("End the class", key="class_end", on_click=_end, args=(code, token))


def _current_question(code: str):
    """(the class, its open question or None); (None, None) after showing why the class cannot be read."""
    try:
        info = store().get_class(code)
    except ClassError as err:
        st.error(str(err))
        return None, None
    return info, content.QUESTIONS.get(info.question)


@st.fragment(run_every=TALLY_EVERY_S)
def live_tally(code: str, token: str | None) -> None:
    """The current question and its tally (counts only); for the teacher (`token`) also the reveal switch and the
    names students chose to give. Reruns on its own every few seconds."""
    info, question = _current_question(code)
    if info is None:
        return
    if question is None:
        st.info("Choose a lesson to open its question.")
        return
    counts = store().tally(code)
    st.markdown(f"**{question.text}**")
    st.caption(f"{store().n_students(code)} joined · {sum(counts)} answered")
    st.plotly_chart(
        figures.lessons.tally_figure(list(question.options), counts, question.answer if info.revealed else None),
        key="class_tally",
        config={"displayModeBar": False},
    )
    reveal = info.revealed
    if token is not None:
        reveal = st.toggle("Reveal the answer", value=info.revealed, key=f"class_reveal_{info.question}")
        if reveal != info.revealed:
            store().reveal(code, token, reveal)
    if reveal:
        st.success(f"**{question.options[question.answer]}**. {question.explanation}")
    names = store().names(code) if token is not None else []
    if names:
        with st.expander(f"Names given by students ({len(names)})"):
            table = pd.DataFrame([(n, question.options[o]) for n, o in names], columns=["name", "answer"])
            st.dataframe(table, hide_index=True)  # table cells: a name is never read as markup


def lesson_status(lesson: str) -> None:
    """On a lesson page, for the teacher of a running class: open this lesson's question, show the count."""
    running = teacher_class()
    if running is None:
        return
    open_question(lesson)
    counts = store().tally(running[0])
    st.caption(f"Live class {running[0]}: {sum(counts)} answers to this lesson's question.")


# --- the students ---------------------------------------------------------------------------------------------


def _join() -> None:
    token = st.session_state.setdefault(STUDENT_KEY, new_student_token())
    code = normalise_code(st.session_state.get("class_code_input"))
    try:
        store().join(code, token, st.session_state.get("class_name_input"))
    except ClassError as err:
        st.session_state["class_join_error"] = str(err)
        return
    st.session_state[STUDENT_CODE] = code
    st.session_state.pop("class_join_error", None)


def student_panel() -> None:
    code = st.session_state.get(STUDENT_CODE)
    if not code:
        if "class_code_input" not in st.session_state:
            st.session_state["class_code_input"] = normalise_code(st.query_params.get("class", ""))
        st.text_input("Class code", key="class_code_input", max_chars=16, placeholder="e.g. K7QXM")
        st.text_input(
            "Your name (optional)",
            key="class_name_input",
            max_chars=40,
            help="Only your teacher sees it, next to your answer. Other students never see names.",
        )
        st.button("Join", type="primary", on_click=_join, key="class_join", width="stretch")
        if st.session_state.get("class_join_error"):
            st.error(st.session_state["class_join_error"])  # the code in it is A-Z and 0-9 only
        return
    if st.query_params.get("class") != code:
        st.query_params["class"] = code
    st.caption(f"Class {code}")
    student_question(code, st.session_state[STUDENT_KEY])


@st.fragment(run_every=STUDENT_EVERY_S)
def student_question(code: str, token: str) -> None:
    """The class's current question and this student's answer; looks for the next question on its own."""
    info, question = _current_question(code)
    if info is None:
        return
    if question is None:
        st.info("Waiting for the teacher to open a question…")
        return
    st.markdown(f"**{question.text}**")
    choice = st.radio(
        "Your answer",
        range(len(question.options)),
        index=None,
        key=f"class_pick_{info.question}",
        format_func=lambda i: question.options[i],
        label_visibility="collapsed",
    )
    if st.button("Send my answer", key=f"class_send_{info.question}", type="primary", width="stretch"):
        if choice is None:
            st.warning("Pick an answer first.")
        else:
            try:
                store().answer(code, token, info.question, int(choice))
            except ClassError as err:
                st.error(str(err))
    mine = store().my_answer(code, token, info.question)
    if mine is not None:
        st.success(f"Sent: {question.options[mine]}. You can change it until the teacher moves on.")
    if info.revealed:
        counts = store().tally(code)
        st.info(f"Answer: **{question.options[question.answer]}**. {question.explanation}")
        st.caption("The class: " + " · ".join(f"{o}: {n}" for o, n in zip(question.options, counts)))
