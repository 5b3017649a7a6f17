"""The paper's 2D alphanumeric experiment (Famili et al. section 4.1, Fig. 2) as pipeline data.

Two rule entries (workflow/rules/alphanumeric.smk):

- :func:`main_dataset` (rule ``alphanumeric_dataset``): renders rotated glyphs
  (:func:`affinity_vae.glyphs.make_dataset`) and writes them in the extract stage's contract, so
  train / evaluate / figures read them like any subtomogram stack: ``subtomos/alphanumeric.mrcs``
  (MRC image stack (n, H, W) float32, pixel size ``dataset.voxel_size``) and
  ``subtomos/alphanumeric.star`` (one row an image, stack order).
- :func:`main_affinity` (rule ``alphanumeric_affinity``): the glyph shape affinity
  (:func:`affinity_vae.glyphs.glyph_affinity`) as ``affinity/glyph.csv`` + heatmap; the
  ``affinity_matrix`` rule reads it through ``affinity.method: file`` (overrides still apply).

Angles: theta (degrees, integer, -max_angle < theta < max_angle) is the counter-clockwise
rotation of the upright glyph as displayed (row 0 at the top). The STAR keeps it unchanged in
``rlnAnglePsi``, ``avaeEulerZ1`` (what evaluate scores the pose against) and ``avaeAngle``;
rlnAngleRot/Tilt and avaeEulerX/Z2 are 0. Coordinates are 0 (the images are not cut from a
tomogram).

Splits: per class, a seeded random ``test_fraction`` of the images is ``test`` and a
``validation_fraction`` is ``validation``, the rest ``train``; every image of a class listed in
``dataset.unseen_classes`` is ``unseen`` (never trained on).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from affinity_vae.errors import InputError
from affinity_vae.glyphs import glyph_affinity, make_dataset
from affinity_vae.io.atomic import atomic_path
from affinity_vae.io.mrc import write_volume
from affinity_vae.io.star import BLOCK, STAR_COLUMNS, particle_table

log = logging.getLogger(__name__)

TOMO = "alphanumeric"  # rlnTomoName and the stack's file stem
EXTRA_COLUMNS = ["avaeAngle", "avaeScale"]


def check_settings(cfg: Mapping[str, Any], unseen: Sequence[str]) -> list[str]:
    """Validate ``dataset.alphanumeric`` (schema defaults filled) and ``dataset.unseen_classes``.

    Returns:
        the characters (classes), in the configured order.
    Raises:
        InputError: one line naming the key and the fix.
    """
    chars = [str(c) for c in cfg["chars"]]
    key = "config key 'dataset.alphanumeric.chars'"
    bad = [c for c in chars if len(c) != 1 or not c.isprintable() or c.isspace()]
    if bad:
        raise InputError(f"{key}: {bad} are not single printable non-space characters -- "
                         f"list one character per entry")
    dup = sorted({c for c in chars if chars.count(c) > 1})
    if dup:
        raise InputError(f"{key}: duplicate character(s) {dup} -- list each class once")
    if len(chars) < 2:
        raise InputError(f"{key}: needs at least 2 characters, got {chars}")
    missing = [c for c in unseen if str(c) not in chars]
    if missing:
        raise InputError(f"config key 'dataset.unseen_classes': {missing} not among "
                         f"dataset.alphanumeric.chars {chars} -- add them there or remove them")
    if len(set(chars) - {str(c) for c in unseen}) < 2:
        raise InputError("config key 'dataset.unseen_classes': at least 2 characters must stay "
                         "seen (trained on) -- list fewer unseen classes")
    frac = float(cfg["test_fraction"]) + float(cfg["validation_fraction"])
    if frac >= 1:
        raise InputError("config keys 'dataset.alphanumeric.test_fraction' + "
                         f"'validation_fraction' = {frac:g} leave no training images -- make "
                         f"their sum < 1")
    return chars


def assign_splits(labels: Sequence[str], unseen: Sequence[str], test_fraction: float,
                  validation_fraction: float, seed: int = 0) -> np.ndarray:
    """Split label per image: per class a seeded random ``test_fraction`` is ``test``, a
    ``validation_fraction`` ``validation``, the rest ``train``; unseen classes are ``unseen``.

    Args:
        labels: (N,) class name per image.
    Returns:
        (N,) object array of train | validation | test | unseen.
    """
    labels = np.asarray(labels, dtype=object)
    out = np.full(len(labels), "train", dtype=object)
    rng = np.random.default_rng([seed, 8])  # a stream of its own, not the rendering's
    unseen = {str(c) for c in unseen}
    for c in sorted(set(labels.tolist())):
        idx = np.flatnonzero(labels == c)
        if c in unseen:
            out[idx] = "unseen"
            continue
        idx = rng.permutation(idx)
        n_test = int(round(test_fraction * len(idx)))
        n_val = int(round(validation_fraction * len(idx)))
        out[idx[:n_test]] = "test"
        out[idx[n_test:n_test + n_val]] = "validation"
    return out


def star_table(table: pd.DataFrame, splits: np.ndarray, classes: Sequence[str],
               stack_name: str) -> pd.DataFrame:
    """The STAR rows of the rendered images (extract contract plus avaeAngle, avaeScale).

    Args:
        table: make_dataset's table (class, angle, scale), stack order.
        splits: (N,) split labels; classes: all class names (rlnClassNumber = 1 + sorted index).
    """
    n = len(table)
    theta = table["angle"].to_numpy(float)
    zeros = np.zeros(n)
    star = particle_table(TOMO, stack_name, table["class"].astype(str).to_numpy(), list(classes),
                          splits, np.zeros((n, 3)), np.column_stack([zeros, zeros, theta]),
                          np.column_stack([theta, zeros, zeros]))
    star["avaeAngle"] = theta
    star["avaeScale"] = table["scale"].to_numpy(float)
    return star


def write_dataset(stack: str | os.PathLike, star: str | os.PathLike, cfg: Mapping[str, Any],
                  unseen: Sequence[str], voxel_size: float, seed: int = 0
                  ) -> tuple[np.ndarray, pd.DataFrame]:
    """Render the glyph data set and write the stack + STAR (atomically).

    Args:
        cfg: ``dataset.alphanumeric`` (chars, n_per_class, size, max_angle, noise_std,
            scale_jitter, test_fraction, validation_fraction).
    Returns:
        images (N, size, size) float32 and the STAR table, as written.
    """
    chars = check_settings(cfg, unseen)
    images, table = make_dataset(chars, int(cfg["n_per_class"]), int(cfg["size"]),
                                 int(cfg["max_angle"]), float(cfg["noise_std"]),
                                 float(cfg["scale_jitter"]), seed)
    splits = assign_splits(table["class"], unseen, float(cfg["test_fraction"]),
                           float(cfg["validation_fraction"]), seed)
    rows = star_table(table, splits, chars, Path(stack).name)
    write_volume(stack, images, voxel_size, stack=True)
    with atomic_path(star) as tmp:
        import starfile

        starfile.write({BLOCK: rows[STAR_COLUMNS + EXTRA_COLUMNS]}, tmp, float_format="%.6f")
    counts = pd.crosstab(rows["avaeClass"], rows["avaeSplit"])
    log.info("%d glyph images %s of %d classes; images per class and split:\n%s", len(rows),
             images.shape[1:], len(chars), counts.to_string())
    return images, rows


def write_glyph_affinity(csv: str | os.PathLike, png: str | os.PathLike, chars: Sequence[str],
                         size: int, angle_step: float = 3.0, dpi: int = 100
                         ) -> pd.DataFrame:
    """The glyph shape affinity (best NCC over rotations, in [0, 1]) as CSV + heatmap PNG."""
    from affinity_vae.affinity.matrix import plot_heatmap, write_affinity

    df = glyph_affinity(tuple(str(c) for c in chars), size=size, angle_step=angle_step)
    write_affinity(df, csv)
    plot_heatmap(df, png, title="glyph affinity (best NCC over rotations)", scale="unit",
                 dpi=dpi)
    return df


def main_dataset(smk: Any) -> None:
    """Rule ``alphanumeric_dataset``: params dataset, seed -> output stack, star."""
    ds = smk.params.dataset
    write_dataset(smk.output.stack, smk.output.star, ds["alphanumeric"],
                  ds["unseen_classes"], float(ds["voxel_size"]), int(smk.params.seed))


def main_affinity(smk: Any) -> None:
    """Rule ``alphanumeric_affinity``: params alphanumeric -> output csv, png."""
    cfg = smk.params.alphanumeric
    chars = check_settings(cfg, [])
    df = write_glyph_affinity(smk.output.csv, smk.output.png, chars, int(cfg["size"]))
    nearest = {c: df.loc[c].drop(c).idxmax() for c in df.index}
    log.info("glyph affinity of %d classes; most affine other class: %s", len(df), nearest)
