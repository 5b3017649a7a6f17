"""Affinity matrices as files: the validator, overrides, scaling, CSV and clustered heatmap.

CSV format written here: a square table with a header row of class names and an index column of
the same names (``pandas.DataFrame.to_csv`` with index). :func:`read_affinity` also reads the
reference Affinity-VAE implementation's format: a header row of class names and no index column.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from affinity_vae.errors import InputError
from affinity_vae.io.atomic import atomic_path

#: value range of each scale: ``unit`` [0, 1]; ``signed`` (and ``keep``) [-1, 1]
RANGES = {"unit": (0.0, 1.0), "signed": (-1.0, 1.0), "keep": (-1.0, 1.0)}


def _parse(path: Path) -> tuple[list[str], np.ndarray]:
    """Class names and (n, n) values of an affinity CSV, with or without index column."""
    try:
        with open(path, newline="") as fh:
            rows = [r for r in csv.reader(fh) if any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read affinity CSV ({exc}) -- check the path "
                         f"(config key affinity.path)") from None
    if len(rows) < 2:
        raise InputError(f"{path}: affinity CSV needs a header row of class names and one row "
                         f"per class -- see docs/affinity.md for the format")
    header = [c.strip() for c in rows[0]]
    body = [[c.strip() for c in r] for r in rows[1:]]
    n = len(body)
    indexed = len(header) == n + 1
    if indexed:
        names, index = header[1:], [r[0] if r else "" for r in body]
        body = [r[1:] for r in body]
    elif len(header) == n:
        names, index = header, None
    else:
        raise InputError(f"{path}: not square ({n} rows, {len(header)} header columns) -- "
                         f"give one row and one column per class")
    dup = sorted({c for c in names if names.count(c) > 1})
    if dup or any(not c for c in names):
        what = f"duplicated class name(s) {dup}" if dup else "an empty class name"
        raise InputError(f"{path}: {what} in the header -- each class once")
    if index is not None and index != names:
        if sorted(index) != sorted(names):
            raise InputError(f"{path}: row names {index} differ from the header's {names} -- "
                             f"use the same class names on both axes")
        order = [index.index(c) for c in names]
        body = [body[i] for i in order]
    values = np.empty((n, n))
    for i, row in enumerate(body):
        if len(row) != n:
            raise InputError(f"{path}: row '{names[i]}' has {len(row)} values, expected {n} "
                             f"-- make the matrix square")
        for j, cell in enumerate(row):
            try:
                values[i, j] = float(cell)
            except ValueError:
                raise InputError(f"{path}: non-numeric value {cell!r} at row '{names[i]}', "
                                 f"column '{names[j]}' -- use numbers only") from None
    return names, values


def validate_matrix(values: np.ndarray, names: Sequence[str], where: str,
                    scale: str = "keep", tol: float = 1e-2) -> None:
    """Raise InputError unless ``values`` (n, n) is finite, symmetric within ``tol``, has a unit
    diagonal (within ``tol``) and lies in the range of ``scale``."""
    lo, hi = RANGES[scale]
    if not np.isfinite(values).all():
        i, j = np.argwhere(~np.isfinite(values))[0]
        raise InputError(f"{where}: non-finite value at ('{names[i]}', '{names[j]}') -- "
                         f"use finite numbers")
    asym = np.abs(values - values.T)
    if asym.max() > tol:
        i, j = np.unravel_index(asym.argmax(), asym.shape)
        raise InputError(f"{where}: not symmetric: ('{names[i]}', '{names[j]}') = "
                         f"{values[i, j]:.4g} but ('{names[j]}', '{names[i]}') = "
                         f"{values[j, i]:.4g} (tolerance {tol}) -- make it symmetric")
    diag = np.abs(np.diag(values) - 1.0)
    if diag.max() > tol:
        i = int(diag.argmax())
        raise InputError(f"{where}: diagonal entry of '{names[i]}' is {values[i, i]:.4g}, "
                         f"must be 1 -- set the diagonal to 1")
    bad = (values < lo - 1e-9) | (values > hi + 1e-9)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise InputError(f"{where}: value {values[i, j]:.4g} at ('{names[i]}', '{names[j]}') is "
                         f"outside [{lo:g}, {hi:g}] (scale '{scale}') -- fix the value or the "
                         f"config key affinity.scale")


def read_affinity(path: str | os.PathLike, classes: Iterable[str] | None = None,
                  scale: str = "keep", tol: float = 1e-2) -> pd.DataFrame:
    """Read and validate an affinity matrix CSV (this project's or the reference format).

    Args:
        classes: class names that must be present; the result is restricted and ordered to them.
        scale: ``unit`` requires values in [0, 1]; ``signed``/``keep`` in [-1, 1].
        tol: tolerance on symmetry and on the unit diagonal.
    Returns:
        (n, n) float64 DataFrame, index and columns the class names, exactly symmetrised
        ((A + A^T) / 2) with an exact unit diagonal.
    Raises:
        InputError: one line naming the file, the offending entry and the fix.
    """
    if scale not in RANGES:
        raise ValueError(f"scale must be one of {sorted(RANGES)}, got {scale!r}")
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: affinity matrix not found -- check the path "
                         f"(config key affinity.path)")
    names, values = _parse(path)
    validate_matrix(values, names, str(path), scale, tol)
    values = 0.5 * (values + values.T)
    np.fill_diagonal(values, 1.0)
    df = pd.DataFrame(values, index=names, columns=names)
    if classes is not None:
        classes = list(classes)
        missing = [c for c in classes if c not in names]
        if missing:
            raise InputError(f"{path}: class(es) {missing} missing from the affinity matrix "
                             f"(it has {names}) -- add a row and column for each")
        df = df.loc[classes, classes]
    return df


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
