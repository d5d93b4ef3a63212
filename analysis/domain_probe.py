"""The linear domain probe: can a document's label be read off its routing histogram? (Cross-validated
logistic regression on each document's normalised expert histogram, per layer and all layers together.)

Inputs as in analysis.specialization (shape legend: L layers, N documents, E experts).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis import specialization


def doc_histograms(experts: np.ndarray | pd.DataFrame, tokens: pd.DataFrame, n_experts: int):
    """(L, N, E) normalised routing histogram of each labelled document (rows sum to 1 per layer), label codes
    (N,) and label names: hist[l, n, i] = routings of doc n to expert i at layer l / (tokens of doc n * K)."""
    docs = specialization.doc_counts(experts, tokens, n_experts)
    hist = docs.counts_LNE / (docs.tokens_N[None, :, None] * docs.top_k)
    return hist, docs.label_N, docs.labels


def domain_probe(
    experts: np.ndarray | pd.DataFrame, tokens: pd.DataFrame, n_experts: int, *, n_splits: int = 5, seed: int = 0
) -> pd.DataFrame:
    """Cross-validated accuracy of a linear classifier predicting a document's label from its routing histogram.

    Features: the doc's normalised histogram over experts (`doc_histograms`), per layer (E features) and all
    layers concatenated (L*E). Model: StandardScaler + LogisticRegression, stratified k-fold (shuffled, seeded);
    accuracy = mean over folds (std across folds given). chance = majority-class share of the documents.
    Raises ValueError with fewer than 2 labels or fewer than n_splits documents in some label.
    Returns columns: layer (-1 = all layers), features, accuracy, accuracy_std, chance, n_docs, n_splits.
    """
    hist, y, labels = doc_histograms(experts, tokens, n_experts)
    N = hist.shape[1]
    per_label = np.bincount(y, minlength=len(labels))
    if len(labels) < 2:
        raise ValueError(f"domain probe needs documents of at least 2 labels, got {len(labels)} ({labels})")
    if n_splits < 2:
        raise ValueError("domain probe needs n_splits >= 2")
    if per_label.min() < n_splits:
        few = labels[int(per_label.argmin())]
        raise ValueError(
            f"domain probe with {n_splits}-fold CV needs >= {n_splits} documents per label; "
            f"label {few!r} has {per_label.min()} (use more documents or a smaller n_splits)"
        )
    rows = []
    for layer, name, Xf in probe_features(hist):  # L + 1 small fits on N documents
        acc = probe_accuracy(Xf, y, n_splits=n_splits, seed=seed)
        rows.append((layer, name, acc.mean(), acc.std(), per_label.max() / N, N, n_splits))
    return pd.DataFrame(rows, columns=["layer", "features", "accuracy", "accuracy_std", "chance", "n_docs", "n_splits"])


def probe_features(hist_LNE: np.ndarray) -> list[tuple[int, str, np.ndarray]]:
    """The probe's feature sets: (layer, name, (N, E) features) per layer, then (-1, "all layers", (N, L*E))."""
    L, N, E = hist_LNE.shape
    sets = [(l, f"layer {l}", hist_LNE[l]) for l in range(L)]
    return sets + [(-1, "all layers", hist_LNE.transpose(1, 0, 2).reshape(N, L * E))]


def probe_accuracy(X_NF: np.ndarray, y_N: np.ndarray, *, n_splits: int = 5, seed: int = 0) -> np.ndarray:
    """(n_splits,) fold accuracies of StandardScaler + LogisticRegression, stratified k-fold (shuffled, seeded)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    cv = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    # one BLAS thread: the matrices are tiny, extra threads only fight other work (0.5 s, not 2-4 s, on 2 cores)
    with threadpool_limits(1):
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        return cross_val_score(model, X_NF, y_N, cv=cv, scoring="accuracy")
