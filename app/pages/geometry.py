"""geometry page (in progress)."""

import streamlit as st

st.title("geometry")
st.info("Coming soon.")
