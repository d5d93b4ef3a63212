"""Live class, the teacher's screen: start a class, show its code, QR code and link, open a lesson's question,
watch the answers come in and reveal the right one (app.classroom.widgets)."""

import streamlit as st

from app.classroom import widgets

st.title("Live class")
widgets.teacher_panel()
st.caption(
    "Phones must reach this server: open this page by the computer's network address (http://YOUR-IP:8501, not "
    "localhost), so that the QR code carries an address students can open. While a class runs, each lesson "
    "you open (presented or not) opens its own question in the class."
)
