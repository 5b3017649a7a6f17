"""Classification metrics: per-class precision/recall/F1, macro/micro, group scores, confusions.

Two group scores, both keyed ``<scheme>/<group>`` (schemes: ``size``, ``structure``, ``family``,
``user``; see :func:`build_groups`):

* **Group F1 (the paper's scoring, Table 1)** -- :func:`group_f1` / :func:`mean_f1_by_group`:
  the mean of the per-class F1 of the group's classes present among the test labels. Confusing
  two classes of the same group lowers it. This is ``metrics.json["groups"]``.
* **Merged-label group F1** -- :func:`merged_group_f1`: every class of a scheme is mapped to its
  group (classes outside the scheme keep their own name), true and predicted labels alike, and a
  group's score is the F1 of that group as one label: a confusion inside a group counts as
  correct ("the particle landed in the right family"). This is ``metrics.json["groups_merged"]``;
  it is not what the paper reports.
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
"""SHREC 2021 size groups (Gubins et al. 2021), the rows of the paper's Table 1 (lower case)."""

PAPER_STRUCTURAL_GROUPS: dict[str, list[str]] = {
    "i": ["1s3x", "3qm1", "3gl1"],
    "ii": ["3h84", "2cg9", "3d2f", "1u6g"],
    "iii": ["3cf3", "1bxn", "1qvr"],
    "iv": ["4cr2", "5mrc"],
}
"""The paper's four structural groups (Affinity-VAE, section 4.2), named by the paper's own
numerals (i)-(iv); members verbatim, lower case. ``evaluate.structural_groups`` defaults to these
(workflow/schemas/evaluate.schema.yaml; a test checks the two agree)."""


def mean_f1_by_group(per_class_f1: Mapping[str, float],
                     groups: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """The paper's group score: per group, the mean per-class F1 of its classes present.

    Args:
        per_class_f1: {class: F1} of the classes present among the test labels.
        groups: {group: [class, ...]}; class names are matched case-insensitively.
    Returns:
        {group: mean F1 of the group's members found in ``per_class_f1``}; groups with no
        present member are omitted.
    """
    f1 = {str(c).lower(): float(v) for c, v in per_class_f1.items()}
    out: dict[str, float] = {}
    for g, members in groups.items():
        vals = [f1[m] for m in dict.fromkeys(str(m).lower() for m in members) if m in f1]
        if vals:
            out[g] = float(np.mean(vals))
    return out


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


def group_f1(per_class: Mapping[str, Mapping[str, float] | float],
             schemes: Mapping[str, Mapping[str, str]]) -> dict[str, float]:
    """The paper's group scores of every scheme, keyed ``<scheme>/<group>``.

    Args:
        per_class: ``classification_metrics(...)["per_class"]`` ({class: {f1, ...}}) or
            {class: F1}; only the classes present among the test labels.
        schemes: {scheme: {class: group}} from :func:`build_groups`.
    Returns:
        {"<scheme>/<group>": mean per-class F1 of the group's present classes}.
    """
    f1 = {c: float(v["f1"]) if isinstance(v, Mapping) else float(v)
          for c, v in per_class.items()}
    out: dict[str, float] = {}
    for scheme, mapping in schemes.items():
        lists: dict[str, list[str]] = {}
        for c, g in mapping.items():
            lists.setdefault(g, []).append(c)
        scores = mean_f1_by_group(f1, lists)
        out.update({f"{scheme}/{g}": scores[g] for g in sorted(scores)})
    return out


def merged_group_f1(y_true: Sequence[str], y_pred: Sequence[str],
                    schemes: Mapping[str, Mapping[str, str]]) -> dict[str, float]:
    """Merged-label group F1, keyed ``<scheme>/<group>``: a confusion inside a group counts as
    correct (each group's classes merged into one label; see module docstring). Not the paper's
    score -- that is :func:`group_f1`."""
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
