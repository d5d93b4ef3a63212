"""Fixtures of the analysis tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def hf_folders(tmp_path_factory):
    """family -> folder of a tiny random checkpoint of every supported Hugging Face family (needs transformers)."""
    pytest.importorskip("transformers", reason="the HF adapter needs the optional extra: pip install .[hf]")
    from analysis.hf import FAMILIES
    from tests.hf_fixtures import save_tiny_hf_model

    root = tmp_path_factory.mktemp("hf")
    return {family: save_tiny_hf_model(root / family, family) for family in FAMILIES}
