"""2-D projections of the router's input space (PCA or UMAP), for one MoE layer of a trace.

`project(trace, layer, method)`:
1. takes the router inputs `trace.hidden[:, layer]` of the tokens `trace.hidden_rows`;
2. caps them at `max_points` with a stratified subsample (strata: top-1 expert or label; each stratum keeps
   its share of the points, at least one, chosen with a seeded RNG), so rare experts stay visible;
3. PCA to 2 dims (fast, the default), or PCA to `pca_dims` then UMAP (`umap-learn`, seeded; exact
   neighbours from sklearn and PCA initialisation, see `_umap`);
4. scores the top-1 expert partition with the silhouette coefficient (sklearn, euclidean, on at most
   `silhouette_points` seeded points): `silhouette` in the router-input space itself (does the router carve
   its input space into compact regions?) and `silhouette_2d` in the projected plane;
5. returns token_row, x, y, token_text, doc_id, label, expert (top-1 at that layer), one row per point.

Cost (2 cores, 20k points): the first UMAP ever on a machine spends ~25 s compiling (numba JIT); umap declares
its functions without a disk cache, so `enable_numba_cache()` (called before every fit) turns it on and every
later process loads the machine code instead: ~10 s for its first 20k-point UMAP, ~8 s for the next ones
(docs/BENCHMARKS.md). Call `warm_up_umap()` early (e.g. in a background thread), and pass a `cache_dir`:
results are stored there as parquet (token_row, x, y; JSON in the key-value metadata), keyed by the SHA-256 of
(run, step, layer, method, params, trace content hash). No pickle.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from analysis.trace import RoutingTrace
from moe_core.files import atomic_write

METHODS = ("pca", "umap")
MAX_POINTS = 50_000  # hard cap on `max_points`: UMAP's neighbour graph grows with the points (memory, minutes)
CACHE_VERSION = 2  # bump when the computation changes, so old cache files are not reused
_CACHE_KEY = b"moe_explorer_projection"


@dataclass(frozen=True)
class ProjectionParams:
    """Everything that changes the coordinates (all part of the cache key)."""

    method: str = "pca"  # "pca" or "umap"
    max_points: int = 5000  # cap on projected points (stratified subsample above it)
    stratify: str = "expert"  # strata of the subsample: "expert" (top-1) or "label"
    seed: int = 0  # subsample, PCA solver and UMAP seed
    pca_dims: int = 32  # UMAP only: PCA pre-reduction (cuts UMAP time ~5x)
    n_neighbors: int = 15  # UMAP only
    min_dist: float = 0.1  # UMAP only
    silhouette_points: int = 2000  # cap on points scored by the silhouette

    def validate(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"projection method must be one of {METHODS}, got {self.method!r}")
        if self.stratify not in ("expert", "label"):
            raise ValueError(f"stratify must be 'expert' or 'label', got {self.stratify!r}")
        for name in ("max_points", "pca_dims", "n_neighbors", "silhouette_points"):
            if getattr(self, name) < 2:
                raise ValueError(f"{name} must be >= 2, got {getattr(self, name)}")
        for name in ("max_points", "silhouette_points"):
            if getattr(self, name) > MAX_POINTS:
                raise ValueError(f"{name} is {getattr(self, name):,}; at most {MAX_POINTS:,} points can be projected")


@dataclass
class Projection:
    coords: pd.DataFrame  # token_row, x, y, token_text, doc_id, label, expert
    silhouette: float | None  # top-1 expert partition, in the router-input space (None: < 2 experts)
    silhouette_2d: float | None  # ... in the projected plane
    layer: int
    params: ProjectionParams
    from_cache: bool = False
    seconds: float = 0.0  # time of the fit (0 when read from the cache)
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. PCA explained variance ratio


def project(
    trace: RoutingTrace,
    layer: int = 0,
    method: str = "pca",
    *,
    params: ProjectionParams | None = None,
    cache_dir: str | os.PathLike | None = None,
    run: str | None = None,
    step: int | None = None,
) -> Projection:
    """Project the router inputs of MoE layer `layer` (0..L-1); see the module docstring.

    `params` overrides the defaults (its `method` wins over `method` when given). `run`/`step` default to
    the trace's meta and only enter the cache key. A cache that cannot be read or written is ignored.
    """
    params = params or ProjectionParams(method=method)
    params.validate()
    if trace.hidden is None or len(trace.hidden_rows) == 0:
        raise ValueError("this trace has no router inputs to project (record it with max_hidden > 0)")
    if not 0 <= layer < trace.n_layers:
        raise ValueError(f"layer must be in 0..{trace.n_layers - 1}, got {layer}")
    run = trace.meta.get("run") if run is None else run
    step = trace.meta.get("step") if step is None else step

    key = cache_key(trace, layer, params, run, step)
    cache_file = Path(cache_dir) / f"{key[:32]}.parquet" if cache_dir is not None else None
    cached = _read_cache(cache_file, key) if cache_file is not None else None
    if cached is not None:
        rows, xy, header = cached
        return Projection(
            coords=_join(trace, rows, xy, layer),
            silhouette=header["silhouette"],
            silhouette_2d=header["silhouette_2d"],
            layer=layer,
            params=params,
            from_cache=True,
            extra=header.get("extra", {}),
        )

    start = time.perf_counter()
    rows_all = trace.hidden_rows
    experts_all = trace.experts_array()[rows_all, layer, 0]
    strata = experts_all if params.stratify == "expert" else trace.tokens["label"].to_numpy()[rows_all]
    keep = stratified_sample(strata, params.max_points, params.seed)
    rows = rows_all[keep]
    X = trace.hidden[keep, layer].astype(np.float32)  # (N, D)
    if len(X) < 3:
        raise ValueError(f"need at least 3 router inputs to project, got {len(X)}")
    xy, extra = _fit(X, params)
    extra["points_total"] = int(len(rows_all))  # before the max_points cap (the page says when it cut)
    experts = experts_all[keep]
    sil = silhouette(X, experts, params.silhouette_points, params.seed)
    sil_2d = silhouette(xy, experts, params.silhouette_points, params.seed)
    seconds = time.perf_counter() - start
    if cache_file is not None:
        header = {"key": key, "silhouette": sil, "silhouette_2d": sil_2d, "extra": extra, "params": asdict(params)}
        _write_cache(cache_file, rows, xy, header)
    return Projection(_join(trace, rows, xy, layer), sil, sil_2d, layer, params, seconds=seconds, extra=extra)


def cache_key(trace: RoutingTrace, layer: int, params: ProjectionParams, run: Any, step: Any) -> str:
    """SHA-256 of (run, step, layer, method + params, trace content hash, cache version)."""
    payload = {
        "version": CACHE_VERSION,
        "run": run,
        "step": step,
        "layer": layer,
        "params": asdict(params),
        "trace": trace.content_hash(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def stratified_sample(strata: np.ndarray, cap: int, seed: int) -> np.ndarray:
    """Sorted indices of at most `cap` items: each stratum keeps round(cap * its share) items (at least 1;
    largest remainders fill up to `cap`), picked at random with `seed`. All indices when len <= cap."""
    n = len(strata)
    if n <= cap:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    values, inverse, counts = np.unique(np.asarray(strata), return_inverse=True, return_counts=True)
    exact = cap * counts / n
    quota = np.maximum(np.floor(exact).astype(int), 1)
    quota = np.minimum(quota, counts)
    left = cap - quota.sum()
    if left > 0:  # hand out the rest by largest remainder (never above a stratum's size)
        for s in np.argsort(-(exact - np.floor(exact)), kind="stable"):
            if left == 0:
                break
            if quota[s] < counts[s]:
                quota[s] += 1
                left -= 1
    picked = [rng.permutation(np.flatnonzero(inverse == s))[: quota[s]] for s in range(len(values))]
    return np.sort(np.concatenate(picked))[:cap]


def silhouette(X: np.ndarray, labels: np.ndarray, max_points: int = 2000, seed: int = 0) -> float | None:
    """Mean silhouette coefficient s = (b - a) / max(a, b) of the partition `labels` (euclidean), on at most
    `max_points` random points; None when there are fewer than 2 labels or every point is its own label."""
    from sklearn.metrics import silhouette_score

    n_labels = len(np.unique(labels))
    if n_labels < 2 or n_labels >= len(labels):
        return None
    sample = min(max_points, len(labels))
    return float(silhouette_score(X, labels, sample_size=sample, random_state=seed))


def enable_numba_cache() -> int:
    """Let every numba function of umap and pynndescent cache its machine code on disk (NUMBA_CACHE_DIR, else
    __pycache__ next to the package), so a later process loads it instead of compiling (the 40-70 s of the
    first UMAP). umap declares most of its functions without `cache=True`; numba allows turning it on after
    the fact. Returns how many functions were switched on; an unwritable cache folder only warns (numba)."""
    import sys
    import warnings

    import numba.core.registry
    import pynndescent  # noqa: F401  (imports its modules)
    import umap  # noqa: F401
    from numba.core.errors import NumbaWarning

    # a few pynndescent functions hold dynamic globals: numba compiles them as before and warns once each
    warnings.filterwarnings("ignore", message="Cannot cache compiled function", category=NumbaWarning)
    switched = 0
    for name, module in list(sys.modules.items()):
        if not name.startswith(("umap", "pynndescent")) or module is None:
            continue
        for obj in list(vars(module).values()):
            if isinstance(obj, numba.core.registry.CPUDispatcher) and not getattr(obj, "_moe_cached", False):
                obj.enable_caching()
                obj._moe_cached = True
                switched += 1
    return switched


def warm_up_umap() -> float:
    """Import umap and fit it once on small random inputs, so numba compiles (or loads from its disk cache)
    now rather than on the user's first projection. Returns the seconds it took."""
    start = time.perf_counter()
    rng = np.random.default_rng(0)
    # umap takes all pairwise distances below 4,096 points and our neighbours from 4,096 on: compile both
    for n in (64, 4096):
        _umap(rng.standard_normal((n, 8)).astype(np.float32), n_neighbors=5, min_dist=0.1, seed=0, n_epochs=10)
    return time.perf_counter() - start


# --- internals -------------------------------------------------------------------------------------------


def _fit(X: np.ndarray, params: ProjectionParams) -> tuple[np.ndarray, dict[str, Any]]:
    """(N, 2) float32 coordinates of X (N, D)."""
    from sklearn.decomposition import PCA

    n, d = X.shape
    if params.method == "pca":
        pca = PCA(n_components=min(2, d), random_state=params.seed)
        xy = pca.fit_transform(X)
        if xy.shape[1] < 2:
            xy = np.hstack([xy, np.zeros((n, 1))])
        return xy.astype(np.float32), {"explained_variance_ratio": pca.explained_variance_ratio_.tolist()}
    dims = min(params.pca_dims, d, n - 1)
    Z = PCA(n_components=dims, random_state=params.seed).fit_transform(X) if dims < d else X
    xy = _umap(Z.astype(np.float32), params.n_neighbors, params.min_dist, params.seed)
    return xy.astype(np.float32), {"pca_dims": int(dims)}


def _umap(Z: np.ndarray, n_neighbors: int, min_dist: float, seed: int, n_epochs: int | None = None) -> np.ndarray:
    """(N, 2) UMAP of Z (N, d), seeded (hence single-threaded), with two changes from umap's defaults that
    cut a fresh process's 20k-point fit from 25 s to under 10 s (docs/BENCHMARKS.md):
    - exact neighbours (sklearn, brute force on BLAS: ~1 s for 20k points in 32 dims) instead of umap's
      NN-descent, whose pynndescent functions compile again in every process (~13 s) and are approximate;
    - PCA initialisation instead of spectral: fast, deterministic, and spectral fails on router inputs
      (repeated tokens in the same context are identical points: "too small an eigengap", then random init).
    """
    import warnings

    from sklearn.neighbors import NearestNeighbors

    enable_numba_cache()  # a later process loads umap's machine code instead of compiling it again
    import umap

    k = min(n_neighbors, len(Z) - 1)
    dists, idx = NearestNeighbors(n_neighbors=k, algorithm="brute").fit(Z).kneighbors(Z)  # (N, k), self first
    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=k,
        min_dist=min_dist,
        init="pca",
        n_epochs=n_epochs,
        random_state=seed,
        n_jobs=1,
        precomputed_knn=(idx, dists, None),  # no search index: we never `transform` new points
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"precomputed_knn\[2\]", category=UserWarning)
        return reducer.fit_transform(Z)


def _join(trace: RoutingTrace, rows: np.ndarray, xy: np.ndarray, layer: int) -> pd.DataFrame:
    tokens = trace.tokens.iloc[rows]
    return pd.DataFrame(
        {
            "token_row": rows.astype(np.int32),
            "x": xy[:, 0].astype(np.float32),
            "y": xy[:, 1].astype(np.float32),
            "token_text": tokens["token_text"].to_numpy(),
            "doc_id": tokens["doc_id"].to_numpy(),
            "label": tokens["label"].to_numpy(),
            "expert": trace.experts_array()[rows, layer, 0],
        }
    )


def _read_cache(path: Path, key: str) -> tuple[np.ndarray, np.ndarray, dict] | None:
    if not path.is_file():
        return None
    try:
        table = pq.read_table(path)
        header = json.loads(table.schema.metadata[_CACHE_KEY])
        if header.get("key") != key:
            return None
        rows = table.column("token_row").to_numpy().astype(np.int64)
        xy = np.stack([table.column("x").to_numpy(), table.column("y").to_numpy()], axis=1)
        return rows, xy, header
    except (OSError, pa.ArrowException, KeyError, ValueError, TypeError):
        return None  # a broken cache file is recomputed (and overwritten)


def _write_cache(path: Path, rows: np.ndarray, xy: np.ndarray, header: dict) -> None:
    table = pa.table({"token_row": rows.astype(np.int64), "x": xy[:, 0], "y": xy[:, 1]})
    table = table.replace_schema_metadata({_CACHE_KEY: json.dumps(header).encode()})
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: pq.write_table(table, tmp))
    except OSError:
        pass  # a read-only run folder (e.g. an installed package): just don't cache
