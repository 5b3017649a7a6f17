"""Classification metrics: per-class precision/recall/F1, macro/micro, group F1, confusion matrices.

Group F1: every class of a grouping scheme is mapped to its group (classes outside the scheme keep
their own name), the true and predicted labels are mapped the same way, and a group's F1 is the
F1 of that group as one label -- "the particle landed in the right family".
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

log = logging.getLogger(__name__)

SHREC_SIZE_GROUPS: dict[str, list[str]] = {
    "small": ["1s3x", "3qm1", "3gl1", "3h84", "2cg9"],
    "medium": ["3d2f", "1u6g", "3cf3", "1bxn", "1qvr"],
    "large": ["4cr2", "5mrc"],
}


def classification_metrics(y_true: Sequence[str], y_pred: Sequence[str],
                           classes: Sequence[str]) -> dict:
    """Per-class precision/recall/F1/support and macro/micro summaries.

    Returns:
        {macro_f1, micro_f1, accuracy, per_class: {class: {precision, recall, f1, support}}};
        classes with no test particle are left out of per_class and of the macro average.
    """
    y_true = np.asarray(y_true, dtype=object)
    y_pred = np.asarray(y_pred, dtype=object)
    present = [c for c in classes if np.any(y_true == c)]
    if not present:
        raise ValueError("no test particle of any seen class")
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=present,
                                                 zero_division=0)
    per_class = {c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                     "support": int(s[i])} for i, c in enumerate(present)}
    _, _, micro, _ = precision_recall_fscore_support(y_true, y_pred, labels=present,
                                                     average="micro", zero_division=0)
    return {"macro_f1": float(np.mean(f)), "micro_f1": float(micro),
            "accuracy": float(np.mean(y_true == y_pred)), "per_class": per_class}


def build_groups(classes: Sequence[str], manifest: pd.DataFrame | None,
                 structural: Mapping[str, Sequence[str]],
                 extra: Mapping[str, Sequence[str]]) -> dict[str, dict[str, str]]:
    """Grouping schemes applicable to ``classes``: {scheme: {class: group}}.

    Schemes: ``size`` (SHREC size groups) and ``structure`` (``structural``) when SHREC classes
    are present, ``family`` (the manifest's shape family of generated molecules), ``user``.
    A scheme is kept only when it has at least two groups among ``classes``.
    """
    lower = {c.lower(): c for c in classes}
    schemes: dict[str, dict[str, str]] = {}

    def from_lists(groups: Mapping[str, Sequence[str]]) -> dict[str, str]:
        return {lower[m.lower()]: g for g, members in groups.items()
                for m in members if m.lower() in lower}

    schemes["size"] = from_lists(SHREC_SIZE_GROUPS)
    schemes["structure"] = from_lists(structural)
    schemes["user"] = from_lists(extra)
    if manifest is not None and {"class", "family"} <= set(manifest.columns):
        size_names = set(SHREC_SIZE_GROUPS)
        fam = {}
        for cls, family in zip(manifest["class"].astype(str), manifest["family"]):
            if cls in classes and isinstance(family, str) and family and family not in size_names:
                fam[cls] = family
        schemes["family"] = fam
    return {k: v for k, v in schemes.items() if len(set(v.values())) >= 2}


def group_f1(y_true: Sequence[str], y_pred: Sequence[str],
             schemes: Mapping[str, Mapping[str, str]]) -> dict[str, float]:
    """F1 of every group, keyed ``<scheme>/<group>`` (see module docstring)."""
    out: dict[str, float] = {}
    for scheme, mapping in schemes.items():
        t = np.array([mapping.get(c, f"~{c}") for c in y_true], dtype=object)
        p = np.array([mapping.get(c, f"~{c}") for c in y_pred], dtype=object)
        groups = sorted(g for g in set(mapping.values()) if np.any(t == g))
        if not groups:
            continue
        _, _, f, _ = precision_recall_fscore_support(t, p, labels=groups, zero_division=0)
        out.update({f"{scheme}/{g}": float(v) for g, v in zip(groups, f)})
    return out


def confusion_tables(y_true: Sequence[str], y_pred: Sequence[str],
                     classes: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Confusion matrix (rows true, columns predicted) as counts and row-normalised."""
    present = [c for c in classes if c in set(y_true) or c in set(y_pred)]
    cm = confusion_matrix(y_true, y_pred, labels=present)
    counts = pd.DataFrame(cm, index=pd.Index(present, name="true"), columns=present)
    rows = counts.sum(axis=1).replace(0, 1)
    return counts, counts.div(rows, axis=0)


def plot_confusion(table: pd.DataFrame, path: str | Path, title: str, normalised: bool,
                   dpi: int = 150) -> None:
    """A heatmap PNG of a confusion table (written atomically)."""
    from affinity_vae.evaluate.plots import heatmap

    heatmap(table.to_numpy(float), list(table.index), list(table.columns), path, title,
            xlabel="predicted", ylabel="true", vmin=0.0,
            vmax=1.0 if normalised else None, fmt=".2f" if normalised else "d", cmap="Blues",
            dpi=dpi)
