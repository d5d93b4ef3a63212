"""Fixtures of the analysis tests: tiny hand-made routing tables and history, tiny HF checkpoints."""

import pandas as pd
import pytest

XSS = "<script>alert(1)</script>"


@pytest.fixture
def tiny_routing():
    """(text, tokens, routing): 3 tokens of the text 'ab<script>…', 2 layers, 3 experts, top-2."""
    text = "ab" + XSS
    tokens = pd.DataFrame(
        {
            "doc_id": [0, 0, 0],
            "position": [0, 1, 2],
            "token_id": [5, 6, 7],
            "token_text": ["a", "b", XSS],
            "char_start": [0, 1, 2],
            "char_end": [1, 2, len(text)],
            "label": ["code", "code", "prose"],
        }
    )
    # (token_row, layer, rank, expert, weight)
    rows = [
        (0, 0, 0, 2, 0.7), (0, 0, 1, 0, 0.3), (0, 1, 0, 1, 0.6), (0, 1, 1, 2, 0.4),
        (1, 0, 0, 0, 0.5), (1, 0, 1, 1, 0.5), (1, 1, 0, 1, 0.9), (1, 1, 1, 0, 0.1),
        (2, 0, 0, 1, 0.8), (2, 0, 1, 2, 0.2), (2, 1, 0, 0, 0.55), (2, 1, 1, 1, 0.45),
    ]  # fmt: skip
    routing = pd.DataFrame(rows, columns=["token_row", "layer", "rank", "expert", "weight"])
    return text, tokens, routing


@pytest.fixture
def tiny_history():
    """Two logged steps of one MoE layer with two experts."""
    return pd.DataFrame(
        {
            "step": [1, 2],
            "loss": [5.0, 4.0],
            "load": [[[3, 1]], [[2, 2]]],  # (N, L=1, E=2)
            "bias": [[[0.0, 0.0]], [[-0.001, 0.001]]],
            "maxvio_batch": [[0.5], [0.0]],
        }
    )


@pytest.fixture(scope="session")
def hf_folders(tmp_path_factory):
    """family -> folder of a tiny random checkpoint of every supported Hugging Face family (needs transformers)."""
    pytest.importorskip("transformers", reason="the HF adapter needs the optional extra: pip install .[hf]")
    from analysis.hf import FAMILIES
    from tests.hf_fixtures import save_tiny_hf_model

    root = tmp_path_factory.mktemp("hf")
    return {family: save_tiny_hf_model(root / family, family) for family in FAMILIES}
