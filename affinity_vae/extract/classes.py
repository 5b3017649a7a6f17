"""Class names and splits of stage `extract`: its settings, the class filter and rename map,
the dataset's class list (rlnClassNumber), and the train / validation / test / unseen splits."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from affinity_vae.classnames import class_key
from affinity_vae.errors import InputError


@dataclass(frozen=True)
class Settings:
    """The `extract` config section. No defaults here: they live in
    workflow/schemas/extract.schema.yaml (library callers: ``Settings.from_config(
    schema_defaults("extract", {...}))``)."""

    source: str  # which volume the rule hands in (the cutting is the same)
    box_size: int
    edge: str
    pad_value: str
    normalise: str
    invert: bool
    bin_to: int | None
    bin_method: str
    exclude_classes: tuple[str, ...]
    rename: dict[str, str]
    class_case: str
    classes: tuple[str, ...] | None
    chunk_mb: int
    isolated: dict[str, Any]  # extract.isolated ({snr})

    @property
    def snr(self) -> float | None:
        """extract.isolated.snr: per-box SNR of the noise added to isolated boxes (None: none)."""
        snr = self.isolated["snr"]
        return None if snr is None else float(snr)

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> Settings:
        """From the full, validated config section ``extract``."""
        cfg = dict(cfg)
        for key in ("exclude_classes", "classes"):
            if cfg.get(key) is not None:
                cfg[key] = tuple(cfg[key])
        return cls(**cfg)

    def check(self, box: int | None = None, where: str = "config key 'extract.box_size'"
              ) -> None:
        """Raise InputError for inconsistent sizes (box: the box actually cut, from ``where``)."""
        box = self.box_size if box is None else box
        if box % 2:
            raise InputError(f"{where}: box size {box} is odd -- use an even size (e.g. "
                             f"{box + 1}) so the particle sits on the box centre voxel")
        if self.bin_to is None:
            return
        if self.bin_to % 2 or self.bin_to >= box:
            raise InputError(f"config key 'extract.bin_to': {self.bin_to} must be even and "
                             f"smaller than the box ({box}) -- change it or set it to null")
        if self.bin_method == "mean" and box % self.bin_to:
            raise InputError(f"config key 'extract.bin_to': block-mean binning needs box "
                             f"{box} to be a multiple of {self.bin_to} -- use bin_method: "
                             f"fourier or another bin_to")

    def out_box(self, box: int | None = None) -> int:
        return self.bin_to or (self.box_size if box is None else box)


def map_classes(raw: Iterable[str], s: Settings) -> np.ndarray:
    """Final class name of each raw name, or None where the particle is dropped.

    Order: exclude (case-insensitive, on the raw name), rename (keys case-insensitive) or
    apply class_case, exclude again on the new name, then keep only ``s.classes`` if set
    (case-insensitive, spelled as configured).
    """
    excluded = {c.lower() for c in s.exclude_classes}
    rename = {k.lower(): v for k, v in s.rename.items()}
    keep = None if s.classes is None else {c.lower(): c for c in s.classes}
    case = {"lower": str.lower, "upper": str.upper, "keep": str}[s.class_case]
    out = []
    for r in raw:
        r = str(r)
        new = rename.get(r.lower(), case(r))
        if r.lower() in excluded or new.lower() in excluded:
            new = None
        elif keep is not None:
            new = keep.get(new.lower())
        out.append(new)
    return np.array(out, dtype=object)


def dataset_classes(raw_names: Iterable[str], s: Settings, source: str,
                    classes_key: str = "config key 'extract.classes'") -> list[str]:
    """Sorted class list of the whole dataset after filtering (raw_names: every particle's).

    ``classes_key`` names where ``s.classes`` came from in messages (a subtomo folder's
    classes.csv, see :func:`folder_settings`).

    Raises:
        InputError: a configured class has no particle, or nothing is left at all.
    """
    raw = sorted(set(map(str, raw_names)))
    unknown = sorted({k.lower() for k in s.rename} - {r.lower() for r in raw})
    if unknown:
        raise InputError(f"config key 'extract.rename': class(es) {unknown} do not occur in "
                         f"{source} (classes present: {raw}) -- fix the names")
    found = {c for c in map_classes(raw, s) if c is not None}
    if s.classes is not None:
        empty = sorted(set(s.classes) - found)
        if empty:
            raise InputError(f"{classes_key}: class(es) {empty} have no particle in {source} "
                             f"after filtering (found {sorted(found)}) -- remove them there or "
                             f"check extract.exclude_classes/rename")
        return sorted(s.classes)
    if not found:
        raise InputError(f"{source}: no particles left after excluding {list(s.exclude_classes)}"
                         f" (classes present: {raw}) -- change extract.exclude_classes")
    return sorted(found)


def folder_settings(s: Settings, folder: str | os.PathLike, csv_classes: Sequence[str] | None,
                    unseen: Sequence[str], raw_names: Iterable[str]) -> tuple[Settings, str]:
    """The settings of a subtomo_folder import and where their class list comes from (for
    messages): the folder's classes.csv (when extract.classes is unset) lists the classes to
    use, and every class of ``dataset.unseen_classes`` that has particle files is kept as well
    (classes.csv usually lists the training classes only)."""
    if s.classes is not None or csv_classes is None:
        return s, "config key 'extract.classes'"
    listed = {class_key(c) for c in csv_classes}
    present = {class_key(n): n for n in map_classes(raw_names, replace(s, classes=None))
               if n is not None}
    extra = [present[class_key(u)] for u in unseen
             if class_key(u) not in listed and class_key(u) in present]
    return (replace(s, classes=tuple(csv_classes) + tuple(extra)),
            f"{Path(folder) / 'classes.csv'}")


def check_unseen(unseen: Sequence[str], class_list: Sequence[str], source: str) -> dict[str, str]:
    """Map lower-case name -> class for dataset.unseen_classes; each must exist."""
    lower = {c.lower(): c for c in class_list}
    missing = [u for u in unseen if u.lower() not in lower]
    if missing:
        raise InputError(f"config key 'dataset.unseen_classes': {missing} have no particle in "
                         f"{source} after filtering (classes: {list(class_list)}) -- fix the "
                         f"names or extract.exclude_classes")
    return {u.lower(): lower[u.lower()] for u in unseen}


def tomogram_split(tomo: str, splits: dict[str, Sequence[str]], tomograms: Sequence[str]) -> str:
    """train / validation / test for a tomogram from dataset.splits (validated: test and
    validation lists; names must exist)."""
    test, val = list(splits["test"]), list(splits["validation"])
    for key, names in (("test", test), ("validation", val)):
        bad = sorted(set(names) - set(tomograms))
        if bad:
            raise InputError(f"config key 'dataset.splits.{key}': tomogram(s) {bad} are not in "
                             f"the dataset ({list(tomograms)}) -- fix the names")
    both = sorted(set(test) & set(val))
    if both:
        raise InputError(f"config key 'dataset.splits': {both} are both test and validation "
                         f"-- list each tomogram once")
    return "test" if tomo in test else "validation" if tomo in val else "train"


def folder_splits(classes: np.ndarray, in_test: np.ndarray, fractions: dict[str, float],
                  seed: int) -> np.ndarray:
    """train / validation / test per particle: the test/ subfolder when it has files, else a
    seeded draw of round(fraction * n) particles of each class (stratified); ``fractions`` is
    the validated dataset.folder_splits {test, validation}."""
    split = np.full(len(classes), "train", dtype=object)
    if in_test.any():
        split[in_test] = "test"
        return split
    test, val = fractions["test"], fractions["validation"]
    if test + val >= 1:
        raise InputError(f"config key 'dataset.folder_splits': test {test} + validation {val} "
                         f"leaves no training particles -- lower them")
    rng = np.random.default_rng(seed)
    for c in sorted(set(classes)):
        idx = rng.permutation(np.flatnonzero(classes == c))
        n_test, n_val = int(round(test * len(idx))), int(round(val * len(idx)))
        split[idx[:n_test]] = "test"
        split[idx[n_test:n_test + n_val]] = "validation"
    return split
