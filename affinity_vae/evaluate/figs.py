"""The evaluate stage's figures (torch-free, reused by the `figures` stage)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from affinity_vae.evaluate.plots import (
    class_colors,
    draw_embedding,
    draw_heatmap,
    plt,
    save,
)


def draw_prior_vs_learned(axes: Sequence[plt.Axes], affinity: pd.DataFrame,
                          learned: pd.DataFrame, r: float, label: str = "") -> None:
    """Affinity matrix | learned class-mean cosine similarity | scatter of off-diagonal pairs."""
    classes = list(affinity.index)
    learned = learned.loc[classes, classes]
    a, s = affinity.to_numpy(float), learned.to_numpy(float)
    draw_heatmap(axes[0], a, classes, classes, "affinity (prior)", fmt=".2f", annotate=False)
    off = s[~np.eye(len(classes), dtype=bool)]
    lo = float(np.nanmin(off)) if np.isfinite(off).any() else -1.0
    # colour range from the data (a shared offset of mu can put every cosine near 1)
    draw_heatmap(axes[1], s, classes, classes,
                 f"{label} class-mean cosine similarity".strip(), vmin=lo, vmax=1.0,
                 annotate=False)
    iu = np.triu_indices(len(classes), k=1)
    ax = axes[2]
    ax.scatter(a[iu], s[iu], s=10, color="tab:blue")
    ax.set_xlabel("affinity")
    ax.set_ylabel("latent cosine similarity")
    ax.set_title(f"off-diagonal pairs: Pearson r = {r:.3f}", fontsize=9)


def prior_vs_learned(affinity: pd.DataFrame, learned: pd.DataFrame, r: float, path: str | Path,
                     label: str = "", dpi: int = 150) -> None:
    """Write the prior-vs-learned figure (Fig. 3a beside Fig. 6a) as a PNG."""
    n = len(affinity)
    size = max(4.0, 0.3 * n + 2)
    fig, axes = plt.subplots(1, 3, figsize=(3 * size + 2, size), layout="constrained")
    draw_prior_vs_learned(axes, affinity, learned, r, label)
    save(fig, path, dpi)


def unseen_figure(placement: Mapping[str, Mapping], classes: Sequence[str], path: str | Path,
                  dpi: int = 150) -> None:
    """Bars of each unseen class's nearest-training-class distribution; the most-affine class
    is outlined in black and named in the title."""
    names = sorted(placement)
    if not names:
        fig, ax = plt.subplots(figsize=(5, 2))
        ax.text(0.5, 0.5, "no unseen-class particles in this run\n"
                "(set dataset.unseen_classes)", ha="center", va="center")
        ax.axis("off")
        save(fig, path, dpi)
        return
    fig, axes = plt.subplots(len(names), 1, figsize=(max(5, 0.4 * len(classes) + 2),
                                                     2.2 * len(names)), squeeze=False)
    colors = class_colors(classes)
    for ax, u in zip(axes[:, 0], names):
        p = placement[u]
        vals = [p["distribution"].get(c, 0.0) for c in classes]
        edge = ["black" if c == p["most_affine_training_class"] else "none" for c in classes]
        ax.bar(range(len(classes)), vals, color=[colors[c] for c in classes], edgecolor=edge,
               linewidth=2)
        ax.set_xticks(range(len(classes)), classes, rotation=90, fontsize=7)
        ax.set_ylim(0, 1)
        ax.set_ylabel("fraction")
        ax.set_title(f"unseen {u} (n={p['n']}): nearest {p['nearest_training_class']}, "
                     f"most affine {p['most_affine_training_class']}", fontsize=9)
    fig.tight_layout()
    save(fig, path, dpi)


def embedding_figure(emb: pd.DataFrame, method: str, classes: Sequence[str], path: str | Path,
                     title: str, dpi: int = 150) -> None:
    """Scatter of embedding columns ``<method>_x/_y`` of ``emb`` coloured by class."""
    fig, ax = plt.subplots(figsize=(6, 5))
    draw_embedding(ax, emb[[f"{method}_x", f"{method}_y"]].to_numpy(), emb["class"],
                   emb["split"] == "unseen", classes, title)
    save(fig, path, dpi)


def pose_scatter(ax: plt.Axes, pose: np.ndarray, angle: np.ndarray, labels: Sequence[str],
                 classes: Sequence[str], rho: float) -> None:
    """Inferred pose against the true angle, coloured by class (paper Fig. 2c)."""
    colors = class_colors(classes)
    labels = np.asarray(labels, dtype=object)
    for c in classes:
        m = labels == c
        if m.any():
            ax.scatter(angle[m], pose[m], s=5, color=colors[c], label=c)
    ax.set_xlabel("true angle (deg)")
    ax.set_ylabel("pose")
    ax.set_title(f"pose vs angle: Spearman rho = {rho:.3f}", fontsize=9)
    ax.legend(fontsize=6, markerscale=2, frameon=False)


def pose_figure(kind: str, data: Mapping, path: str | Path, dpi: int = 150) -> None:
    """kind '2d': scatter (data: pose, angle, labels, classes, rho); '3d': histograms of
    symmetry-aware angular errors (data: series {label: errors (n,) degrees}, scored_on), all
    classes pooled, each series' median marked by a dashed line of its colour."""
    fig, ax = plt.subplots(figsize=(6, 4))
    if kind == "2d":
        pose_scatter(ax, data["pose"], data["angle"], data["labels"], data["classes"],
                     data["rho"])
    else:
        colors = ["tab:blue", "tab:red", "tab:green", "tab:orange", "tab:purple"]
        for (label, err), color in zip(data["series"].items(), colors):
            err = np.asarray(err, float)
            err = err[np.isfinite(err)]
            if not len(err):
                continue
            med = float(np.median(err))
            ax.hist(err, bins=36, range=(0, 180), density=True, histtype="step", lw=1.5,
                    color=color, label=f"{label}: median {med:.1f} deg (n={len(err)})")
            ax.axvline(med, color=color, ls="--", lw=1)
        ax.set_xlabel("angular error (deg), modulo each class's symmetry")
        ax.set_ylabel("density")
        ax.set_title(f"3D pose error, pooled over classes ({data.get('scored_on', '')} "
                     "particles)", fontsize=9)
        ax.legend(fontsize=7)
    save(fig, path, dpi)


def not_applicable(path: str | Path, text: str, dpi: int = 100) -> None:
    """A small figure stating why a panel does not apply to this run."""
    fig, ax = plt.subplots(figsize=(5, 1.5))
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=9, wrap=True)
    ax.axis("off")
    save(fig, path, dpi)
