"""SHREC 2021 tomogram folders: ``particle_locations.txt`` and the ``model_<k>/`` layout.

A folder holds ``reconstruction.mrc`` and ``particle_locations.txt`` (required) and optionally
``grandmodel.mrc``, ``class_mask.mrc``, ``occupancy_mask.mrc`` (and, from our simulator,
``class_conversion_table.txt``). ``particle_locations.txt`` has one particle a line:
``CLASS x y z Z1 X Z2`` -- x, y, z in voxels (x = last array axis), Euler angles ZXZ in degrees
(see affinity_vae/rotation.py; ``NaN`` angles are allowed, e.g. for vesicles and fiducials).
Line i (1-based, counting particle lines only) is label i of ``occupancy_mask.mrc``.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd

from affinity_vae.errors import InputError
from affinity_vae.io.atomic import atomic_path
from affinity_vae.io.mrc import read_volume

log = logging.getLogger(__name__)

COLUMNS = ["class", "x", "y", "z", "z1", "x_angle", "z2"]
FORMAT = "CLASS x y z Z1 X Z2"
OPTIONAL_VOLUMES = ("grandmodel", "class_mask", "occupancy_mask")


def _number(text: str) -> float:
    value = float(text)  # accepts NaN / nan, which SHREC writes for vesicles and fiducials
    if math.isinf(value):
        raise ValueError(text)
    return value


def read_particle_locations(path: str | os.PathLike, shape: Sequence[int] | None = None,
                            classes: Iterable[str] | None = None) -> pd.DataFrame:
    """Parse and validate a SHREC ``particle_locations.txt``.

    Args:
        path: the file.
        shape: (Z, Y, X) of the tomogram; when given, every x, y, z must lie in
            [0, X) x [0, Y) x [0, Z).
        classes: known class names; when given, every CLASS must be one of them (matched
            case-insensitively and returned in the spelling of ``classes``).
    Returns:
        DataFrame with columns class (str), x, y, z, z1, x_angle, z2 (float), one row a particle
        line in file order (blank lines and ``#`` comments are skipped).
    Raises:
        InputError: one line naming the file, the line number, the problem and the fix.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found -- each tomogram folder needs its "
                         f"particle_locations.txt ({FORMAT} per line)")
    known = None if classes is None else {str(c).lower(): str(c) for c in classes}
    rows = []
    for lineno, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        fields = text.split()
        where = f"{path}:{lineno}"
        if len(fields) != 7:
            raise InputError(f"{where}: expected 7 whitespace-separated fields '{FORMAT}', got "
                             f"{len(fields)} -- fix or delete that line")
        name = fields[0]
        try:
            values = [_number(f) for f in fields[1:]]
        except ValueError:
            bad = next(f for f in fields[1:] if not _is_number(f))
            raise InputError(f"{where}: field '{bad}' is not a number ('{FORMAT}': x y z in "
                             f"voxels, angles in degrees) -- fix that line") from None
        if any(math.isnan(v) for v in values[:3]):
            raise InputError(f"{where}: coordinate is NaN -- give x y z in voxels on that line")
        if known is not None:
            if name.lower() not in known:
                raise InputError(f"{where}: unknown class '{name}' (known: "
                                 f"{', '.join(sorted(known.values()))}) -- add its structure or "
                                 f"drop the line")
            name = known[name.lower()]
        if shape is not None:
            nz, ny, nx = (int(s) for s in shape[-3:])
            x, y, z = values[:3]
            if not (0 <= x < nx and 0 <= y < ny and 0 <= z < nz):
                raise InputError(f"{where}: coordinate (x={x:g}, y={y:g}, z={z:g}) lies outside "
                                 f"the tomogram (x < {nx}, y < {ny}, z < {nz} voxels) -- fix the "
                                 f"line or use the matching tomogram")
        rows.append([name, *values])
    table = pd.DataFrame(rows, columns=COLUMNS)
    table["class"] = table["class"].astype(str)
    for col in COLUMNS[1:]:
        table[col] = table[col].astype(float)
    return table


def _is_number(text: str) -> bool:
    try:
        _number(text)
        return True
    except ValueError:
        return False


def write_particle_locations(path: str | os.PathLike, table: pd.DataFrame) -> None:
    """Write a table with :data:`COLUMNS` as ``particle_locations.txt`` (atomically): integer
    coordinates are written without decimals, angles with 3."""
    lines = []
    for row in table[COLUMNS].itertuples(index=False):
        coords = " ".join(f"{v:g}" if float(v) != int(v) else str(int(v)) for v in row[1:4])
        angles = " ".join(f"{v:.3f}" for v in row[4:7])
        lines.append(f"{row[0]} {coords} {angles}\n")
    with atomic_path(path) as tmp:
        tmp.write_text("".join(lines))


def write_class_table(path: str | os.PathLike, class_index: dict[str, int]) -> None:
    """``class_conversion_table.txt``: one ``<label> <class>`` line a class (0 = background)."""
    with atomic_path(path) as tmp:
        tmp.write_text("".join(f"{i} {c}\n" for c, i in sorted(class_index.items(),
                                                              key=lambda kv: kv[1])))


def read_class_table(path: str | os.PathLike) -> dict[int, str]:
    """Inverse of :func:`write_class_table`: label -> class name."""
    out = {}
    for lineno, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if line.strip():
            parts = line.split()
            if len(parts) != 2 or not parts[0].isdigit():
                raise InputError(f"{path}:{lineno}: expected '<label> <class>' -- fix that line")
            out[int(parts[0])] = parts[1]
    return out


@dataclass(frozen=True)
class ShrecTomogram:
    """One ``model_<k>/`` folder, read the same way whether simulated or downloaded.

    Attributes:
        name: folder name, e.g. ``model_3``.
        folder: the folder.
        shape: (Z, Y, X) of the reconstruction (after ``z_offset`` cropping).
        voxel_size: Angstrom, from the reconstruction header.
        particles: validated particle_locations table (columns :data:`COLUMNS`).
        files: name -> path of every volume present (reconstruction, grandmodel, ...).
        z_offset: slices cut from the bottom of a reconstruction that is thicker than the
            labelled volume (its extra slices split evenly above and below); 0 normally.
    """

    name: str
    folder: Path
    shape: tuple[int, int, int]
    voxel_size: float
    particles: pd.DataFrame
    files: dict[str, Path]
    z_offset: int = 0

    def volume(self, kind: str = "reconstruction", mmap: bool = True) -> np.ndarray:
        """A (Z, Y, X) float32 volume of the folder, in the particle coordinates' frame."""
        if kind not in self.files:
            raise InputError(f"{self.folder}: no {kind}.mrc -- this folder only has "
                             f"{', '.join(sorted(self.files))}")
        data, _ = read_volume(self.files[kind], mmap=mmap)
        if kind == "reconstruction" and self.z_offset:
            data = data[self.z_offset:self.z_offset + self.shape[0]]
        return data


def volume_header(path: str | os.PathLike) -> tuple[tuple[int, ...], float]:
    """Shape ((z, y, x), or (n, z, y, x) for a volume stack) and voxel size in Angstrom of an MRC
    file, from its header alone (no data is read; a file shorter than its header promises is
    refused, as a truncated download)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found -- check the path in your config")
    size = path.stat().st_size
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            with mrcfile.open(path, mode="r", header_only=True) as mrc:
                h = mrc.header
                voxel = float(mrc.voxel_size.x)
                dtype = mrcfile.utils.data_dtype_from_header(h)
    except (ValueError, RuntimeWarning, OSError) as exc:
        raise InputError(f"{path}: corrupt or truncated MRC file ({exc}) "
                         f"-- re-export or re-download it") from None
    nx, ny, nz = int(h.nx), int(h.ny), int(h.nz)
    need = 1024 + int(h.nsymbt) + nx * ny * nz * dtype.itemsize
    if size < need and int(h.mode) != 101:  # mode 101 packs two 4-bit voxels a byte
        raise InputError(f"{path}: corrupt or truncated MRC file ({size} bytes, its header "
                         f"promises {need}) -- re-export or re-download it")
    mz = int(h.mz)
    if 401 <= int(h.ispg) <= 630 and 0 < mz < nz:
        return (nz // mz, mz, ny, nx), voxel
    return (nz, ny, nx), voxel


def _header_shape(path: Path) -> tuple[tuple[int, int, int], float]:
    shape, voxel = volume_header(path)
    if len(shape) != 3:
        raise InputError(f"{path}: expected a 3D volume, got shape {shape} -- use the "
                         f"tomogram, not a tilt series or stack")
    return shape, voxel


def read_shrec_folder(folder: str | os.PathLike,
                      classes: Iterable[str] | None = None) -> ShrecTomogram:
    """Read a SHREC 2021 ``model_<k>/`` folder (real or simulated) and validate it.

    The reconstruction defines the frame unless a label volume (class_mask, occupancy_mask or
    grandmodel) is present with the same y, x but fewer z slices, as in SHREC releases whose
    reconstruction is padded in z: then the reconstruction is cropped centrally to it.

    Raises:
        InputError: missing reconstruction or particle_locations.txt, shapes that disagree, or a
            bad particle_locations line.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: folder not found -- point dataset.path at the folder that "
                         f"holds model_<k>/ sub-folders")
    files = {"reconstruction": folder / "reconstruction.mrc"}
    if not files["reconstruction"].is_file():
        raise InputError(f"{folder}: no reconstruction.mrc -- every tomogram folder needs one")
    files.update({k: folder / f"{k}.mrc" for k in OPTIONAL_VOLUMES
                  if (folder / f"{k}.mrc").is_file()})
    shape, voxel = _header_shape(files["reconstruction"])
    z_offset = 0
    for kind in OPTIONAL_VOLUMES:
        if kind not in files:
            continue
        other, _ = _header_shape(files[kind])
        if other == shape:
            continue
        if other[1:] == shape[1:] and other[0] < shape[0]:
            z_offset = (shape[0] - other[0]) // 2
            log.info("%s: reconstruction has %d z slices, %s has %d: using slices %d..%d",
                     folder, shape[0], kind, other[0], z_offset, z_offset + other[0] - 1)
            shape = other
        else:
            raise InputError(f"{files[kind]}: shape {other} does not match reconstruction.mrc "
                             f"{shape} -- use files of the same tomogram")
    particles = read_particle_locations(folder / "particle_locations.txt", shape=shape,
                                        classes=classes)
    return ShrecTomogram(name=folder.name, folder=folder, shape=shape, voxel_size=voxel,
                         particles=particles, files=files, z_offset=z_offset)
