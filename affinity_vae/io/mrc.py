"""MRC volumes and stacks (mrcfile), float32 in numpy (z, y, x) order, voxel size in Angstrom."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import mrcfile
import numpy as np

from affinity_vae.errors import InputError
from affinity_vae.io.atomic import atomic_path


def _open(path: Path, mmap: bool):
    if not path.is_file():
        raise InputError(f"{path}: file not found -- check the path in your config")
    if path.stat().st_size < 1024:
        raise InputError(f"{path}: not an MRC file (only {path.stat().st_size} bytes) "
                         f"-- replace it with a complete MRC file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            opener = mrcfile.mmap if mmap else mrcfile.open
            return opener(path, mode="r", permissive=False)
    except (ValueError, RuntimeWarning, OSError) as exc:
        raise InputError(f"{path}: corrupt or truncated MRC file ({exc}) "
                         f"-- re-export or re-download it") from None


def read_volume(path: str | os.PathLike, mmap: bool = False) -> tuple[np.ndarray, float]:
    """Read an MRC file.

    Returns:
        data: (z, y, x) or (n, y, x) float32 array (a read-only memory map when ``mmap``).
        voxel_size: in Angstrom, from the header (x spacing).
    """
    path = Path(path)
    mrc = _open(path, mmap)
    voxel = float(mrc.voxel_size.x)
    if mmap:
        data = mrc.data
        if data.dtype != np.float32:
            data = data.astype(np.float32)
        return data, voxel
    with mrc:
        return np.asarray(mrc.data, dtype=np.float32).copy(), voxel


def read_voxel_size(path: str | os.PathLike) -> float:
    """Voxel size in Angstrom from an MRC header, without reading the data."""
    path = Path(path)
    with _open(path, mmap=True) as mrc:
        return float(mrc.voxel_size.x)


def write_volume(path: str | os.PathLike, data: np.ndarray, voxel_size: float,
                 stack: bool = False) -> None:
    """Write a float32 volume (z, y, x), or with ``stack`` a volume stack (n, z, y, x) or
    image stack (n, y, x), atomically, with the voxel size (Angstrom) in the header."""
    if voxel_size <= 0:
        raise ValueError(f"voxel_size must be positive, got {voxel_size}")
    data = np.ascontiguousarray(data, dtype=np.float32)
    if stack and data.ndim not in (3, 4):
        raise ValueError(f"a stack must be (n, y, x) or (n, z, y, x), got shape {data.shape}")
    if not stack and data.ndim not in (2, 3):
        raise ValueError(f"a volume must be (y, x) or (z, y, x), got shape {data.shape}")
    with atomic_path(path) as tmp, mrcfile.new(tmp, overwrite=True) as mrc:
        mrc.set_data(data)
        if stack and data.ndim == 3:
            mrc.set_image_stack()  # 4D data is a volume stack already
        mrc.voxel_size = voxel_size
        mrc.update_header_stats()
