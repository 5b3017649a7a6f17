"""A folder of per-particle subtomograms, the reference Affinity-VAE code's input convention.

Layout::

    <folder>/<class>_<anything>.mrc      one particle per file (.mrc or .mrcs), 3D (d, d, d)
    <folder>/test/<class>_<anything>.mrc optional: particles that are always in the test split
    <folder>/classes.csv                 optional: one header row of class names; only these
                                         classes are used

The class of a particle is the file name up to the first underscore. Files are taken in sorted
order of their path relative to the folder (this is the stack order of the import). 2D images
(y, x) are accepted too, as long as every file has the same shape.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from affinity_vae.errors import InputError
from affinity_vae.io.mrc import read_volume

SUFFIXES = (".mrc", ".mrcs")


def find_particles(folder: str | os.PathLike) -> pd.DataFrame:
    """All particle files of the folder, sorted by relative path.

    Returns:
        DataFrame with columns path (str), class (raw name from the file name), test (bool:
        the file lies in the test/ subfolder).
    Raises:
        InputError: no particle file, or a file name without ``<class>_``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: folder not found -- set dataset.path to your subtomograms")
    files = [p for sub in (folder, folder / "test") if sub.is_dir()
             for p in sub.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES]
    if not files:
        raise InputError(f"{folder}: no .mrc/.mrcs particle files -- put files named "
                         f"<class>_<anything>.mrc there")
    files.sort(key=lambda p: p.relative_to(folder).as_posix())
    bad = [p.name for p in files if "_" not in p.stem or p.stem.startswith("_")]
    if bad:
        raise InputError(f"{folder / bad[0]}: file name has no '<class>_' prefix ({len(bad)} such "
                         f"file(s)) -- rename to <class>_<anything>{Path(bad[0]).suffix}")
    return pd.DataFrame({
        "path": [str(p) for p in files],
        "class": [p.stem.split("_", 1)[0] for p in files],
        "test": [p.parent != folder for p in files],
    })


def read_classes_csv(folder: str | os.PathLike) -> list[str] | None:
    """Class names from ``<folder>/classes.csv`` (its header row), or None when absent."""
    path = Path(folder) / "classes.csv"
    if not path.is_file():
        return None
    try:
        names = [str(c).strip() for c in pd.read_csv(path, nrows=0).columns]
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: unreadable ({exc}) -- write one header row of class "
                         f"names, e.g. 1bxn,1qvr") from None
    names = [n for n in names if n and not n.startswith("Unnamed")]
    if not names:
        raise InputError(f"{path}: no class names in the header row -- write e.g. 1bxn,1qvr")
    return names


def read_particle(path: str | os.PathLike) -> tuple[np.ndarray, float]:
    """One particle: (d, d, d) volume or (d, d) image, float32, and the header voxel size.

    Raises:
        InputError: unreadable file, non-cubic/square box, or NaN/Inf values.
    """
    data, voxel = read_volume(path)
    if data.ndim == 3 and data.shape[0] == 1 and Path(path).suffix.lower() == ".mrcs":
        data = data[0]  # a one-image stack
    if data.ndim not in (2, 3) or len(set(data.shape)) != 1:
        raise InputError(f"{path}: particle of shape {data.shape} is not a cubic volume or "
                         f"square image -- crop it to a cube")
    if not np.isfinite(data).all():
        raise InputError(f"{path}: NaN/Inf values in the particle -- fix or remove the file")
    return data, voxel
