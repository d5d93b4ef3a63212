"""app: the Streamlit front end and the `moe-explorer` command line."""
