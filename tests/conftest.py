"""Fixtures shared by every test folder."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def entry() -> str:
    """The app's entry script (it calls st.navigation; the pages live in app/views/)."""
    return str(Path(__file__).resolve().parents[1] / "app" / "main.py")


@pytest.fixture
def one_thread():
    """Torch on one thread: tiny models run faster so, and the 2-core machine is shared (e.g. with a training job)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
