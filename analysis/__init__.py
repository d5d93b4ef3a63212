"""analysis: everything computed from a model's routing (plain Python, no Streamlit)."""
