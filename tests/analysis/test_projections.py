"""Projections: stratified cap, coordinates joined to tokens, silhouette, on-disk cache (PCA fast, UMAP once)."""

import numpy as np
import pyarrow.parquet as pq
import pytest

from analysis.projections import ProjectionParams, project, silhouette, stratified_sample, warm_up_umap
from analysis.trace import build_trace


def clustered_trace(n=120, L=2, K=2, E=4, D=16, seed=0, separated=True):
    """Router inputs sit around one centroid per top-1 expert (layer 0) when `separated`, else pure noise."""
    rng = np.random.default_rng(seed)
    top1 = rng.integers(0, E, n)
    top1[:E] = np.arange(E)  # every expert present
    experts = np.stack([top1, (top1 + 1) % E], axis=-1)[:, None, :].repeat(L, axis=1)  # (n, L, K)
    centroids = rng.standard_normal((E, D)) * 5
    noise = rng.standard_normal((n, L, D))
    hidden = noise + (centroids[top1][:, None, :] if separated else 0)
    return build_trace(
        tokens={
            "doc_id": [str(i % 3) for i in range(n)],
            "position": np.arange(n) // 3,
            "token_id": rng.integers(0, 50, n),
            "token_text": [f"<tok{i}>" for i in range(n)],
            "char_start": np.zeros(n, int),
            "char_end": np.ones(n, int),
            "label": ["code" if i % 3 == 0 else "prose" for i in range(n)],
        },
        experts=experts,
        weights=np.full((n, L, K), 0.5),
        scores_k=np.full((n, L, K), 0.5),
        biased_k=np.full((n, L, K), 0.5),
        flips=np.zeros((n, L, K), bool),
        shared_share=np.zeros((n, L)),
        entropy=np.zeros((n, L)),
        meta={"n_experts": E, "run": "toy", "step": 3},
        hidden=hidden,
        hidden_rows=np.arange(n),
    )


def test_stratified_sample_keeps_shares_and_rare_strata():
    strata = np.array([0] * 90 + [1] * 9 + [2] * 1)
    idx = stratified_sample(strata, cap=20, seed=0)
    assert len(idx) == 20 and np.all(np.diff(idx) > 0)
    counts = np.bincount(strata[idx], minlength=3)
    assert counts.tolist() == [18, 1, 1] or counts.tolist() == [17, 2, 1]
    assert counts[2] == 1  # the rare stratum survives
    np.testing.assert_array_equal(idx, stratified_sample(strata, cap=20, seed=0))
    assert not np.array_equal(idx, stratified_sample(strata, cap=20, seed=1))
    np.testing.assert_array_equal(stratified_sample(strata, cap=500, seed=0), np.arange(100))


def test_silhouette_by_hand():
    # two tight pairs far apart: a = 1, b = 10 (mean distance to the other pair is 10 +- 0)
    X = np.array([[0.0, 0], [1, 0], [10, 0], [11, 0]])
    s = silhouette(X, np.array([0, 0, 1, 1]))
    # points 0 and 3: a=1, b=(10+11)/2=10.5; points 1 and 2: a=1, b=(9+10)/2=9.5
    assert s == pytest.approx(np.mean([1 - 1 / 10.5, 1 - 1 / 9.5, 1 - 1 / 9.5, 1 - 1 / 10.5]))
    assert silhouette(X, np.zeros(4)) is None


def test_pca_coordinates_joined_to_tokens():
    tr = clustered_trace()
    p = project(tr, layer=0)
    df = p.coords
    assert list(df.columns) == ["token_row", "x", "y", "token_text", "doc_id", "label", "expert"]
    assert len(df) == tr.n_tokens and not p.from_cache
    row = df.iloc[7]
    assert row["token_text"] == "<tok7>" and row["label"] == "prose"
    assert row["expert"] == tr.experts_array()[7, 0, 0]
    # PCA of centred data: coordinates have mean 0
    assert abs(df["x"].mean()) < 1e-4 and df["x"].std() > df["y"].std() * 0.5
    assert p.silhouette > 0.5 and p.silhouette_2d > 0.0
    assert project(clustered_trace(separated=False), layer=0).silhouette < 0.1


def test_cap_and_stratify_by_label():
    tr = clustered_trace(n=120)
    p = project(tr, layer=1, params=ProjectionParams(max_points=30, stratify="label"))
    assert len(p.coords) == 30
    assert (p.coords["label"] == "code").sum() == 10  # a third of the tokens are code


def test_cache_roundtrip_and_key(tmp_path):
    tr = clustered_trace()
    first = project(tr, layer=0, cache_dir=tmp_path)
    files = list(tmp_path.glob("*.parquet"))
    assert len(files) == 1 and pq.read_table(files[0]).column_names == ["token_row", "x", "y"]
    again = project(tr, layer=0, cache_dir=tmp_path)
    assert again.from_cache and again.silhouette == first.silhouette
    np.testing.assert_array_equal(again.coords["x"], first.coords["x"])
    assert again.coords.equals(first.coords)
    # another layer, step or seed is another entry
    project(tr, layer=1, cache_dir=tmp_path)
    project(tr, layer=0, cache_dir=tmp_path, step=99)
    project(tr, layer=0, params=ProjectionParams(seed=1), cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.parquet"))) == 4
    # a corrupt cache file is recomputed
    files[0].write_bytes(b"garbage")
    assert not project(tr, layer=0, cache_dir=tmp_path).from_cache


def test_errors():
    tr = clustered_trace()
    with pytest.raises(ValueError, match="layer must be in 0..1"):
        project(tr, layer=2)
    with pytest.raises(ValueError, match="method"):
        project(tr, method="tsne")
    bare = tr.select_docs(doc_ids=["0"])
    bare.hidden = bare.hidden_rows = None
    with pytest.raises(ValueError, match="no router inputs"):
        project(bare)


@pytest.mark.slow
def test_umap_tiny():
    assert warm_up_umap() > 0  # compiles both neighbour paths; the fit below reuses them
    tr = clustered_trace(n=60, D=8)
    p = project(tr, layer=0, params=ProjectionParams(method="umap", n_neighbors=5, pca_dims=4))
    assert p.coords[["x", "y"]].notna().all().all() and len(p.coords) == 60
    assert p.extra["pca_dims"] == 4 and p.silhouette_2d > 0.3
    again = project(tr, layer=0, params=ProjectionParams(method="umap", n_neighbors=5, pca_dims=4))
    np.testing.assert_array_equal(p.coords[["x", "y"]], again.coords[["x", "y"]])  # seeded: the cache is sound
