"""Prior vs learned geometry, and where unseen classes land in latent space.

- ``class_mean_cosine``: cosine similarity of the class means of mu (the paper's Fig. 6a), to be
  set beside the affinity matrix (Fig. 3a) in the same class order; ``offdiag_pearson`` is their
  Pearson r over the off-diagonal pairs.
- ``place_unseen``: for each unseen class, the distribution of nearest training classes of its
  particles (``centroid``: highest cosine similarity to a training-class mean of mu; ``knn``:
  majority of the k most cosine-similar training particles), next to the training class the
  affinity matrix calls most similar.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import pandas as pd


def _unit(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(n, 1e-12)


def class_means(mu: np.ndarray, labels: Sequence[str], classes: Sequence[str]) -> np.ndarray:
    """Mean of mu (N, L) per class -> (C, L); NaN rows for classes without particles."""
    labels = np.asarray(labels, dtype=object)
    out = np.full((len(classes), mu.shape[1]), np.nan)
    for i, c in enumerate(classes):
        m = labels == c
        if m.any():
            out[i] = mu[m].mean(axis=0)
    return out


def class_mean_cosine(mu: np.ndarray, labels: Sequence[str],
                      classes: Sequence[str]) -> pd.DataFrame:
    """Cosine similarity between class means of mu (N, L): a (C, C) DataFrame, diagonal 1."""
    means = _unit(class_means(mu, labels, classes))
    return pd.DataFrame(means @ means.T, index=list(classes), columns=list(classes))


def offdiag_pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson r of two square matrices over their off-diagonal entries (upper triangle).

    NaN entries (classes without particles) are dropped; NaN when fewer than 3 pairs remain.
    """
    a = np.asarray(a, float)
    b = np.asarray(b, float)
    iu = np.triu_indices(a.shape[0], k=1)
    x, y = a[iu], b[iu]
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or np.std(x[ok]) == 0 or np.std(y[ok]) == 0:
        return float("nan")
    return float(np.corrcoef(x[ok], y[ok])[0, 1])


def nearest_training_class(mu: np.ndarray, train_mu: np.ndarray, train_labels: Sequence[str],
                           classes: Sequence[str], method: str = "centroid",
                           k: int = 5) -> np.ndarray:
    """Nearest training class of each row of mu (N, L) by cosine similarity -> (N,) class names."""
    train_labels = np.asarray(train_labels, dtype=object)
    if method == "centroid":
        means = class_means(train_mu, train_labels, classes)
        ok = np.isfinite(means).all(axis=1)
        sims = _unit(mu) @ _unit(means[ok]).T
        return np.asarray(classes, dtype=object)[ok][np.argmax(sims, axis=1)]
    if method == "knn":
        sims = _unit(mu) @ _unit(train_mu).T
        k = min(k, sims.shape[1])
        idx = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        order = {c: i for i, c in enumerate(classes)}
        out = []
        for row in train_labels[idx]:
            counts = Counter(row)
            best = max(counts.values())  # ties: the earlier class in the affinity order
            out.append(min((c for c, n in counts.items() if n == best), key=order.get))
        return np.asarray(out, dtype=object)
    raise ValueError(f"unknown placement method {method!r} (centroid or knn)")


def most_affine(affinity: pd.DataFrame, cls: str, training: Sequence[str]) -> str | None:
    """The training class with the highest affinity to ``cls`` (None when cls is not in it)."""
    if cls not in affinity.index:
        return None
    cands = [c for c in training if c in affinity.columns and c != cls]
    if not cands:
        return None
    return str(affinity.loc[cls, cands].astype(float).idxmax())


def place_unseen(mu: np.ndarray, labels: Sequence[str], train_mu: np.ndarray,
                 train_labels: Sequence[str], classes: Sequence[str], affinity: pd.DataFrame,
                 method: str = "centroid", k: int = 5) -> dict[str, dict]:
    """Placement of every unseen class present in ``labels``.

    Args:
        mu: (N, L) latent means of unseen particles, labels: (N,) their class names.
        train_mu, train_labels: latents of the training particles; classes: training classes.

    Returns:
        {class: {nearest_training_class (the most common), most_affine_training_class,
        distribution {training class: fraction}, n, agrees}}.
    """
    labels = np.asarray(labels, dtype=object)
    nearest = nearest_training_class(mu, train_mu, train_labels, classes, method, k)
    out = {}
    for u in sorted(set(labels)):
        counts = Counter(nearest[labels == u])
        n = int(sum(counts.values()))
        dist = {c: counts[c] / n for c in classes if counts.get(c)}
        top = max(dist, key=lambda c: (dist[c], -list(classes).index(c)))
        aff = most_affine(affinity, u, classes)
        out[u] = {"nearest_training_class": top, "most_affine_training_class": aff,
                  "distribution": dist, "n": n, "agrees": aff == top if aff else None}
    return out
