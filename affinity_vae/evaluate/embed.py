"""2D embeddings of the latent means: UMAP (umap-learn) and t-SNE (scikit-learn), seeded."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Sequence

import numpy as np

log = logging.getLogger(__name__)


def subsample(labels: Sequence[str], max_points: int, seed: int) -> np.ndarray:
    """Indices of at most ``max_points`` particles, stratified by class (sorted, seeded)."""
    labels = np.asarray(labels, dtype=object)
    n = len(labels)
    if n <= max_points:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    keep = []
    for c in sorted(set(labels)):
        idx = np.flatnonzero(labels == c)
        take = max(1, int(round(max_points * len(idx) / n)))
        keep.append(rng.choice(idx, size=min(take, len(idx)), replace=False))
    return np.sort(np.concatenate(keep))


@functools.cache
def cache_umap_jit() -> int:
    """Turn on numba's on-disk cache for umap-learn's compiled functions, as ``cache=True``
    would (pynndescent's have it, umap's not): their compilation -- most of a small UMAP's
    time, about 14 of 16 s for 1000 points on a busy core -- then happens once per machine
    instead of once per job. numba keeps the cache next to umap's sources (or in its
    user-wide cache folder, or ``NUMBA_CACHE_DIR``) and recompiles when they or numba change;
    the compiled code, hence the embedding, is the same. Returns the functions switched."""
    os.environ.setdefault("NUMBA_NUM_THREADS", "1")
    import umap.distances
    import umap.layouts
    import umap.spectral
    import umap.umap_
    import umap.utils
    from numba.core.registry import CPUDispatcher

    found = [f for m in (umap.umap_, umap.utils, umap.layouts, umap.distances, umap.spectral)
             for f in vars(m).values() if isinstance(f, CPUDispatcher)]
    for f in found:
        f.enable_caching()
    return len(found)


def umap_embedding(mu: np.ndarray, seed: int, n_neighbors: int = 15) -> np.ndarray:
    """UMAP of mu (N, L) -> (N, 2) (deterministic with the seed; single-threaded)."""
    os.environ.setdefault("NUMBA_NUM_THREADS", "1")
    import umap  # imported lazily: numba compilation takes seconds

    cache_umap_jit()

    n_neighbors = int(min(n_neighbors, max(2, len(mu) - 1)))
    reducer = umap.UMAP(n_neighbors=n_neighbors, min_dist=0.1, random_state=seed,
                        n_jobs=1, init="spectral" if len(mu) > n_neighbors + 2 else "random")
    return np.asarray(reducer.fit_transform(np.asarray(mu, np.float32)), float)


def tsne_embedding(mu: np.ndarray, seed: int, perplexity: float = 30.0) -> np.ndarray:
    """t-SNE of mu (N, L) -> (N, 2); perplexity is capped below N/3 for small sets."""
    from sklearn.manifold import TSNE

    perplexity = float(min(perplexity, max(2.0, (len(mu) - 1) / 3)))
    tsne = TSNE(n_components=2, perplexity=perplexity, random_state=seed, init="pca",
                n_jobs=1)
    return np.asarray(tsne.fit_transform(np.asarray(mu, np.float64)), float)
