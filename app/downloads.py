"""Download buttons: a table as CSV, a routing trace as CSV or Parquet. Files are made only when clicked."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import streamlit as st


def download_csv(
    df: pd.DataFrame | Callable[[], pd.DataFrame], file_name: str, label: str = "Download data (CSV)", key=None
) -> None:
    """A CSV download button; the CSV is made only when clicked (pass a callable to defer building the table too)."""
    st.download_button(
        label,
        data=lambda: (df() if callable(df) else df).to_csv(index=False).encode("utf-8"),
        file_name=file_name,
        mime="text/csv",
        key=key or f"dl-{file_name}",
        on_click="ignore",
    )


def trace_downloads(trace) -> None:
    """Download buttons, made when clicked: CSV (one row per token, layer, rank) and the RoutingTrace parquet
    file (tidy tables + metadata; `analysis.trace.load` reads it back exactly)."""
    c1, c2 = st.columns(2)
    csv = lambda: trace.wide().to_csv(index=False).encode("utf-8")  # noqa: E731
    c1.download_button("Trace (CSV)", csv, "routing_trace.csv", "text/csv", on_click="ignore")
    c2.download_button("Trace (Parquet)", trace.to_parquet_bytes, "routing_trace.parquet", on_click="ignore")
