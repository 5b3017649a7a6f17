"""The particle STAR table written by `extract` (starfile), one row a particle, stack order.

Columns (DESIGN.md contract): RELION 4 names for tomogram, coordinates (voxels) and angles
(RELION ZYZ, degrees), plus ``avae*`` columns for the class name, split, stack index and the
original SHREC ZXZ angles. The table is written as the data block ``data_particles``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import starfile

from affinity_vae.errors import InputError
from affinity_vae.io.atomic import atomic_path

STAR_COLUMNS = [
    "rlnTomoName",
    "rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ",
    "rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi",
    "rlnClassNumber",
    "rlnImageName",
    "avaeClass", "avaeSplit", "avaeStackIndex",
    "avaeEulerZ1", "avaeEulerX", "avaeEulerZ2",
]
SPLITS = ("train", "validation", "test", "unseen")
BLOCK = "particles"


def particle_table(tomo: str, stack_name: str, classes: np.ndarray, class_list: list[str],
                   splits: np.ndarray, xyz: np.ndarray, zyz: np.ndarray,
                   zxz: np.ndarray) -> pd.DataFrame:
    """Build the STAR table of n particles in stack order.

    Args:
        tomo: tomogram name (rlnTomoName).
        stack_name: file name of the stack (for rlnImageName ``<i>@<stack_name>``).
        classes: (n,) class names; each must be in ``class_list``.
        class_list: all class names; rlnClassNumber = 1 + index in ``sorted(class_list)``.
        splits: (n,) one of train | validation | test | unseen.
        xyz: (n, 3) coordinates in voxels, x y z order.
        zyz: (n, 3) RELION rot, tilt, psi in degrees.
        zxz: (n, 3) SHREC Z1, X, Z2 in degrees.
    """
    n = len(classes)
    order = {c: i + 1 for i, c in enumerate(sorted(class_list))}
    unknown = sorted(set(classes) - set(order))
    if unknown:
        raise ValueError(f"classes {unknown} are not in the class list {sorted(order)}")
    bad = sorted(set(splits) - set(SPLITS))
    if bad:
        raise ValueError(f"unknown split(s) {bad}; allowed {SPLITS}")
    xyz, zyz, zxz = (np.asarray(a, dtype=float).reshape(n, 3) for a in (xyz, zyz, zxz))
    idx = np.arange(n)
    return pd.DataFrame({
        "rlnTomoName": [tomo] * n,
        "rlnCoordinateX": xyz[:, 0], "rlnCoordinateY": xyz[:, 1], "rlnCoordinateZ": xyz[:, 2],
        "rlnAngleRot": zyz[:, 0], "rlnAngleTilt": zyz[:, 1], "rlnAnglePsi": zyz[:, 2],
        "rlnClassNumber": np.array([order[c] for c in classes], dtype=int),
        "rlnImageName": [f"{i + 1}@{stack_name}" for i in idx],
        "avaeClass": list(classes),
        "avaeSplit": list(splits),
        "avaeStackIndex": idx,
        "avaeEulerZ1": zxz[:, 0], "avaeEulerX": zxz[:, 1], "avaeEulerZ2": zxz[:, 2],
    }, columns=STAR_COLUMNS)


def write_star(path: str | os.PathLike, table: pd.DataFrame) -> None:
    """Write the particle table atomically as block ``data_particles``."""
    missing = [c for c in STAR_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"STAR table lacks columns {missing}")
    with atomic_path(path) as tmp:
        starfile.write({BLOCK: table[STAR_COLUMNS]}, tmp, float_format="%.6f", na_rep="nan")


def read_star(path: str | os.PathLike) -> pd.DataFrame:
    """Read a particle STAR file written by `extract`, checking its columns.

    Raises:
        InputError: the file is missing, unreadable or lacks contract columns.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: STAR file not found -- run the extract stage first")
    try:
        data = starfile.read(path, always_dict=True)
    except Exception as exc:  # starfile raises a variety of parser errors
        raise InputError(f"{path}: unreadable STAR file ({exc}) -- re-run extract") from None
    table = data.get(BLOCK, next(iter(data.values()), None)) if data else None
    if not isinstance(table, pd.DataFrame):
        raise InputError(f"{path}: no particle table in the STAR file -- re-run extract")
    missing = [c for c in STAR_COLUMNS if c not in table.columns]
    if missing:
        raise InputError(f"{path}: STAR file lacks columns {missing} -- re-run extract")
    table["rlnTomoName"] = table["rlnTomoName"].astype(str)
    table["avaeClass"] = table["avaeClass"].astype(str)
    return table
