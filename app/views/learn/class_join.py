"""Live class, a student's phone: join with the code (or the QR code's link) and answer the current question."""

import streamlit as st

from app.classroom import widgets

st.title("Join a class")
widgets.student_panel()
