"""heatmaps page (in progress)."""

import streamlit as st

st.title("heatmaps")
st.info("Coming soon.")
