"""The particle STAR table written by `extract` (starfile), one row a particle, stack order.

Columns (DESIGN.md contract): RELION 4 names for tomogram, coordinates (voxels) and angles
(RELION ZYZ, degrees), plus ``avae*`` columns for the class name, split, stack index and the
original SHREC ZXZ angles. The table is written as the data block ``data_particles``.
"""

from __future__ import annotations

import linecache
import math
import os
from pathlib import Path
from typing import Any

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


def _particle_block(path: Path, not_found: str, fix: str) -> pd.DataFrame | None:
    """The ``particles`` block (else the first table) of a STAR file, None when it has no table.

    Raises:
        InputError: ``<path>: <not_found>`` when the file is missing; unreadable -> ``fix``.
    """
    if not path.is_file():
        raise InputError(f"{path}: {not_found}")
    # starfile reads lines through the global linecache and clears it only after a successful
    # parse: after a failed one, the next read of the same path would see the old lines.
    linecache.cache.pop(str(path), None)
    try:
        data = starfile.read(path, always_dict=True)
    except Exception as exc:  # noqa: BLE001 -- starfile raises a variety of parser errors
        why = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise InputError(f"{path}: unreadable STAR file ({why}) -- {fix}") from None
    finally:
        linecache.cache.pop(str(path), None)
    table = data.get(BLOCK, next(iter(data.values()), None)) if data else None
    return table if isinstance(table, pd.DataFrame) else None


def read_star(path: str | os.PathLike) -> pd.DataFrame:
    """Read a particle STAR file written by `extract`, checking its columns.

    Raises:
        InputError: the file is missing, unreadable or lacks contract columns.
    """
    path = Path(path)
    table = _particle_block(path, "STAR file not found -- run the extract stage first",
                            "re-run extract")
    if table is None:
        raise InputError(f"{path}: no particle table in the STAR file -- re-run extract")
    missing = [c for c in STAR_COLUMNS if c not in table.columns]
    if missing:
        raise InputError(f"{path}: STAR file lacks columns {missing} -- re-run extract")
    for col in NUMERIC_COLUMNS:
        table[col] = _numeric(table[col], path, col, "re-run extract",
                              finite=col not in ANGLE_COLUMNS)
    table["rlnTomoName"] = table["rlnTomoName"].astype(str)
    table["avaeClass"] = table["avaeClass"].astype(str)
    return table


#: Contract columns that hold numbers (angles may be NaN, as SHREC writes for vesicles).
ANGLE_COLUMNS = ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi",
                 "avaeEulerZ1", "avaeEulerX", "avaeEulerZ2")
NUMERIC_COLUMNS = ("rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ", "rlnClassNumber",
                   "avaeStackIndex", *ANGLE_COLUMNS)


def _numeric(column: pd.Series, path: Path, name: str, fix: str,
             finite: bool = False) -> pd.Series:
    """``column`` as numbers (unchanged when it already is); InputError naming the first row
    that is not a number (with ``finite``: not a finite number; else NaN is allowed)."""
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        values = column
    else:
        values = pd.to_numeric(column.map(_number), errors="coerce")
        nan_text = column.map(lambda v: str(v).strip().lower() in ("nan", "+nan", "-nan"))
        bad = np.flatnonzero(values.isna().to_numpy() & ~nan_text.to_numpy())
        if len(bad):
            raise InputError(f"{path}: particle {bad[0] + 1} has a non-numeric {name} "
                             f"'{column.iloc[bad[0]]}' -- {fix}")
    if finite:
        bad = np.flatnonzero(~np.isfinite(values.to_numpy(float)))
        if len(bad):
            raise InputError(f"{path}: particle {bad[0] + 1} has a non-finite {name} "
                             f"'{column.iloc[bad[0]]}' -- {fix}")
    return values


def _number(value: Any) -> float:
    """A STAR cell as a float (NaN when it is not one; booleans are not numbers)."""
    if isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


#: Columns of a coordinates STAR file (predict.tomograms[].coordinates) that are read.
COORDINATE_COLUMNS = ("rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ")
UNLABELLED = "unlabelled"


def read_coordinates_star(path: str | os.PathLike, shape: tuple[int, ...] | None = None
                          ) -> pd.DataFrame:
    """Particle positions from any STAR file with rlnCoordinateX/Y/Z (voxels, x-y-z).

    The class is ``avaeClass`` or ``rlnClassName`` when present, else ``unlabelled``; the
    SHREC Euler angles ``avaeEulerZ1/X/Z2`` when present, else 0 (predict infers the pose).

    Args:
        path: the STAR file (its ``particles`` block, else its first table).
        shape: (Z, Y, X) of the tomogram; every coordinate must lie inside it.
    Returns:
        DataFrame with the columns of affinity_vae.io.shrec.COLUMNS
        (class, x, y, z, z1, x_angle, z2), one row a particle in file order.
    Raises:
        InputError: one line naming the file and the fix.
    """
    from affinity_vae.io.shrec import COLUMNS

    path = Path(path)
    table = _particle_block(path, "coordinates file not found -- fix predict.tomograms",
                            f"give a STAR file with {', '.join(COORDINATE_COLUMNS)}")
    if table is None or any(c not in table for c in COORDINATE_COLUMNS):
        raise InputError(f"{path}: no table with {', '.join(COORDINATE_COLUMNS)} -- give the "
                         f"particle coordinates in voxels in those columns")
    xyz = table[list(COORDINATE_COLUMNS)].apply(pd.to_numeric, errors="coerce").to_numpy(float)
    bad = np.flatnonzero(~np.isfinite(xyz).all(axis=1))
    if len(bad):
        raise InputError(f"{path}: particle {bad[0] + 1} has a non-numeric coordinate -- fix "
                         f"that row")
    if shape is not None:
        limit = np.array([shape[-1], shape[-2], shape[-3]], float)
        out = np.flatnonzero(((xyz < 0) | (xyz >= limit)).any(axis=1))
        if len(out):
            x, y, z = xyz[out[0]]
            raise InputError(f"{path}: particle {out[0] + 1} at (x={x:g}, y={y:g}, z={z:g}) lies "
                             f"outside the tomogram (x < {shape[-1]}, y < {shape[-2]}, "
                             f"z < {shape[-3]} voxels) -- fix it or use the matching tomogram")
    name = next((c for c in ("avaeClass", "rlnClassName") if c in table), None)
    classes = table[name].astype(str) if name else pd.Series([UNLABELLED] * len(table))
    angles = [_numeric(table[c], path, c, "fix that row").to_numpy(float) if c in table
              else np.zeros(len(table)) for c in ("avaeEulerZ1", "avaeEulerX", "avaeEulerZ2")]
    return pd.DataFrame(dict(zip(COLUMNS, [classes.to_numpy(), *xyz.T, *angles])))

