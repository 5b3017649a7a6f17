"""Affinity matrices as files: overrides, scaling, CSV writer and clustered heatmap.

CSV format written here: a square table with a header row of class names and an index column of
the same names (``pandas.DataFrame.to_csv`` with index). The one reader and its validator live in
affinity_vae.io.affinity_csv (re-exported here: :func:`read_affinity`, :func:`validate_matrix`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from affinity_vae.errors import InputError
from affinity_vae.io.affinity_csv import (  # noqa: F401  (re-exported: the one reader)
    RANGES,
    bad_cells,
    first_problem,
    read_affinity,
    usable_classes,
    validate_matrix,
)
from affinity_vae.io.atomic import atomic_path


def apply_overrides(df: pd.DataFrame, overrides: Sequence[Sequence]) -> pd.DataFrame:
    """Set ``A[a, b] = A[b, a] = value`` for each ``[a, b, value]`` (the paper's hand
    adjustment); values on the matrix's own scale before :func:`apply_scale`."""
    out = df.copy()
    for item in overrides or []:
        if len(item) != 3:
            raise InputError(f"config key 'affinity.overrides': entry {item!r} is not "
                             f"[class_a, class_b, value] -- fix it")
        a, b, v = str(item[0]), str(item[1]), item[2]
        for c in (a, b):
            if c not in out.index:
                raise InputError(f"config key 'affinity.overrides': unknown class '{c}' "
                                 f"(classes: {list(out.index)}) -- fix the name")
        try:  # snakemake --config passes nested numbers as strings
            v = float(v)
        except (TypeError, ValueError):
            v = float("nan")
        if not -1.0 <= v <= 1.0:
            raise InputError(f"config key 'affinity.overrides': value {v!r} for ({a}, {b}) "
                             f"is not a number in [-1, 1] -- fix it")
        if a == b and float(v) != 1.0:
            raise InputError(f"config key 'affinity.overrides': diagonal ({a}, {a}) must stay 1")
        out.loc[a, b] = out.loc[b, a] = float(v)
    return out


def apply_scale(df: pd.DataFrame, scale: str) -> pd.DataFrame:
    """``unit``/``keep``: unchanged; ``signed``: a -> 2a - 1 (maps [0, 1] onto [-1, 1])."""
    if scale == "signed":
        return 2.0 * df - 1.0
    if scale in ("unit", "keep"):
        return df.copy()
    raise ValueError(f"unknown scale {scale!r}")


def write_affinity(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write the matrix CSV atomically (header of class names, index column of the same)."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, float_format="%.6f")


def cluster_order(values: np.ndarray, scale: str = "unit") -> np.ndarray:
    """Leaf order (n,) of average-linkage clustering on distance ``1 - a`` (``(1 - a) / 2`` on
    [-1, 1] scales), with optimal leaf ordering."""
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform

    if len(values) < 3:
        return np.arange(len(values))
    dist = (1.0 - values) if scale == "unit" else (1.0 - values) / 2.0
    dist = np.clip(0.5 * (dist + dist.T), 0.0, None)
    np.fill_diagonal(dist, 0.0)
    link = linkage(squareform(dist, checks=False), method="average", optimal_ordering=True)
    return leaves_list(link)


def cluster_labels(values: np.ndarray, n_clusters: int, scale: str = "unit") -> np.ndarray:
    """Flat cluster labels (n,) from average-linkage clustering cut into ``n_clusters``."""
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    dist = (1.0 - values) if scale == "unit" else (1.0 - values) / 2.0
    dist = np.clip(0.5 * (dist + dist.T), 0.0, None)
    np.fill_diagonal(dist, 0.0)
    link = linkage(squareform(dist, checks=False), method="average")
    return fcluster(link, n_clusters, criterion="maxclust")


def plot_heatmap(df: pd.DataFrame, path: str | os.PathLike, title: str = "",
                 scale: str = "unit", dpi: int = 100) -> None:
    """Heatmap PNG of the matrix, rows/columns ordered by hierarchical clustering."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = cluster_order(df.to_numpy(), scale)
    d = df.iloc[order, order]
    n = len(d)
    size = min(12.0, 2.5 + 0.32 * n)
    lo = 0.0 if scale == "unit" else -1.0
    vals = d.to_numpy()
    off = vals[~np.eye(n, dtype=bool)]
    vmin = max(lo, float(off.min())) if off.size else lo
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    im = ax.imshow(vals, cmap="viridis", vmin=vmin, vmax=1.0)
    ax.set_xticks(range(n), d.columns, rotation=90, fontsize=8)
    ax.set_yticks(range(n), d.index, fontsize=8)
    if n <= 16:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, f"{vals[i, j]:.2f}", ha="center", va="center", fontsize=6,
                        color="w" if vals[i, j] < (vmin + 1) / 2 else "k")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_title(title or Path(path).stem, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
