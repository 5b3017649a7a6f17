"""Small matplotlib (Agg) helpers shared by evaluate and figures: heatmaps, class colours, saving.

Imports only numpy and matplotlib, so the `figures` stage can use it without torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from affinity_vae.io.atomic import atomic_path


def save(fig: plt.Figure, path: str | Path, dpi: int = 150) -> None:
    """Save a figure atomically and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    plt.close(fig)


def class_colors(classes: Sequence[str]) -> dict[str, tuple]:
    """A stable colour per class (tab10/tab20, then a hsv ramp)."""
    n = len(classes)
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20" if n <= 20 else "hsv")
    return {c: cmap(i if n <= 20 else i / n) for i, c in enumerate(classes)}


def draw_heatmap(ax: plt.Axes, values: np.ndarray, rows: Sequence[str], cols: Sequence[str],
                 title: str, vmin: float | None = None, vmax: float | None = None,
                 fmt: str = ".2f", cmap: str = "viridis", annotate: bool = True) -> None:
    """Draw a labelled heatmap (values (len(rows), len(cols))) with a colour bar on ``ax``."""
    im = ax.imshow(values, vmin=vmin, vmax=vmax, cmap=cmap)
    ax.set_xticks(range(len(cols)), cols, rotation=90, fontsize=7)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    ax.set_title(title, fontsize=9)
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if annotate and values.size <= 400:
        hi = np.nanmax(values) if values.size else 1.0
        lo = np.nanmin(values) if values.size else 0.0
        mid = (hi + lo) / 2
        for i in range(values.shape[0]):
            for j in range(values.shape[1]):
                v = values[i, j]
                text = format(int(round(v)), "d") if fmt == "d" else format(v, fmt)
                ax.text(j, i, text, ha="center", va="center", fontsize=5,
                        color="white" if (v > mid) == (cmap == "Blues") else "black")


def heatmap(values: np.ndarray, rows: Sequence[str], cols: Sequence[str], path: str | Path,
            title: str, xlabel: str = "", ylabel: str = "", vmin: float | None = None,
            vmax: float | None = None, fmt: str = ".2f", cmap: str = "viridis",
            dpi: int = 150) -> None:
    """One labelled heatmap written as a PNG."""
    size = max(4.0, 0.35 * max(len(rows), len(cols)) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    draw_heatmap(ax, values, rows, cols, title, vmin, vmax, fmt, cmap)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    save(fig, path, dpi)


def draw_embedding(ax: plt.Axes, xy: np.ndarray, labels: Sequence[str], unseen: Sequence[bool],
                   classes: Sequence[str], title: str) -> None:
    """Scatter of a 2D embedding xy (N, 2) coloured by class; unseen particles as black-edged X."""
    labels = np.asarray(labels, dtype=object)
    unseen = np.asarray(unseen, dtype=bool)
    colors = class_colors(classes)
    for c in classes:
        m = labels == c
        if not m.any():
            continue
        u = bool(unseen[m].any())
        ax.scatter(xy[m, 0], xy[m, 1], s=28 if u else 6, color=colors[c],
                   marker="X" if u else "o", edgecolors="black" if u else "none",
                   linewidths=0.5, label=f"{c} (unseen)" if u else c, alpha=0.9 if u else 0.7)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=6, markerscale=1.5, loc="center left", bbox_to_anchor=(1.0, 0.5),
              frameon=False)
