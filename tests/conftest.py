"""Fixtures shared by every test folder."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def entry() -> str:
    """The app's entry script (it calls st.navigation; the pages live in app/views/)."""
    return str(Path(__file__).resolve().parents[1] / "app" / "main.py")
