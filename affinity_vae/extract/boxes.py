"""Boxes of stage `extract`: memory-mapped tomogram access, cutting, binning, normalising, and
the streamed MRC stack writer. Arrays are float32 in (z, y, x) order; memory stays bounded
because pages of memory maps are released once used (see :func:`release`)."""

from __future__ import annotations

import logging
import mmap
import os
from collections.abc import Sequence
from typing import Self

import mrcfile
import numpy as np
import scipy.fft

from affinity_vae.errors import InputError
from affinity_vae.io.atomic import atomic_path

log = logging.getLogger(__name__)
VOXEL_RTOL = 1e-3  # header voxel size vs config
MADV_POPULATE_READ = 22  # Linux >= 5.14: map a range in one call instead of page by page


def _advise(arr: np.ndarray, advice: int) -> bool:
    """madvise the pages under a memory-mapped array (or view); False where not possible."""
    mm = getattr(arr, "_mmap", None)
    if not isinstance(mm, mmap.mmap) or not hasattr(mm, "madvise") or arr.nbytes == 0:
        return False
    base = np.frombuffer(mm, dtype=np.uint8).ctypes.data
    start = arr.ctypes.data - base
    aligned = start - start % mmap.PAGESIZE
    try:
        mm.madvise(advice, aligned, min(start + arr.nbytes, len(mm)) - aligned)
        return True
    except (OSError, ValueError):
        return False


def release(arr: np.ndarray) -> None:
    """Drop the resident pages of a memory-mapped array (or view) from this process.

    The data stay in the OS page cache, so the next access simply maps them again; the
    process's resident memory (RSS) falls. No-op for ordinary arrays.
    """
    _advise(arr, mmap.MADV_DONTNEED)


def populate(arr: np.ndarray) -> None:
    """Map the pages of a memory-mapped array in one call (faster than faulting them one by
    one); no-op for ordinary arrays or on kernels without MADV_POPULATE_READ."""
    _advise(arr, MADV_POPULATE_READ)


def scan_volume(vol: np.ndarray, path: str | os.PathLike, chunk_mb: int = 64) -> float:
    """Mean of a (z, y, x) volume read slab by slab; InputError on NaN/Inf."""
    step = max(1, (chunk_mb << 20) // max(1, vol[0].nbytes))
    total = 0.0
    for z in range(0, vol.shape[0], step):
        slab = vol[z:z + step]
        s = float(slab.sum(dtype=np.float64))
        if not np.isfinite(s):
            bad = int(np.count_nonzero(~np.isfinite(slab)))
            raise InputError(f"{path}: {bad} NaN/Inf voxel(s) in slices {z}-{z + len(slab) - 1} "
                             f"-- fix or regenerate the tomogram")
        total += s
        release(slab)
    return total / vol.size


def check_voxel_size(header: float, expected: float, path: str | os.PathLike) -> float:
    """The voxel size to use; InputError when the header disagrees with the config."""
    if header <= 0:
        log.warning("%s: no voxel size in the header; using dataset.voxel_size %.4g A",
                    path, expected)
        return expected
    if abs(header - expected) > VOXEL_RTOL * expected:
        raise InputError(f"{path}: header voxel size {header:.4g} A disagrees with "
                         f"dataset.voxel_size {expected:.4g} A -- set dataset.voxel_size: "
                         f"{header:.4g} or fix the MRC header")
    return expected


def box_corners(xyz: np.ndarray, shape: Sequence[int], box: int,
                path: str | os.PathLike) -> np.ndarray:
    """(n, 3) lower (z, y, x) corners of the boxes centred on (n, 3) x y z voxel coordinates.

    Raises:
        InputError: a coordinate lies outside the volume of ``shape`` (z, y, x).
    """
    xyz = np.asarray(xyz, dtype=float).reshape(-1, 3)
    outside = np.any((xyz[:, ::-1] < 0) | (xyz[:, ::-1] >= np.asarray(shape)), axis=1)
    zyx = np.minimum(np.floor(xyz[:, ::-1] + 0.5), np.asarray(shape) - 1).astype(np.int64)
    if outside.any():
        i = int(np.argmax(outside))
        raise InputError(f"{path}: particle {i + 1} at x,y,z {tuple(xyz[i])} lies "
                         f"outside the tomogram (z,y,x shape {tuple(shape)}) -- fix the "
                         f"coordinates or use the matching tomogram")
    return zyx - box // 2


def inside(corners: np.ndarray, box: int, shape: Sequence[int]) -> np.ndarray:
    """(n,) True where the whole box lies inside the volume."""
    return np.all((corners >= 0) & (corners + box <= np.asarray(shape)), axis=1)


def cut_boxes(vol: np.ndarray, corners: np.ndarray, box: int, fill: float,
              stream: bool = False) -> np.ndarray:
    """(m, box, box, box) float32 boxes at (m, 3) z y x corners; outside voxels = ``fill``.

    With ``stream`` (corners sorted by z, nothing below corners[0, 0] is read again) the pages
    of a memory-mapped ``vol`` below the current box are released as the cut moves up in z, and
    the slices ahead are mapped in one call.
    """
    out = np.empty((len(corners), box, box, box), dtype=np.float32)
    shape = np.asarray(vol.shape)
    released, mapped = 0, max(int(corners[0, 0]), 0) if len(corners) else 0
    for j, c in enumerate(corners):
        if stream and c[0] - released >= 8:
            release(vol[released:c[0]])
            released = int(c[0])
        if stream and c[0] + box > mapped:  # map the next slab of slices in one go
            populate(vol[max(mapped, 0):max(c[0] + box + 16, 0)])
            mapped = int(c[0]) + box + 16
        lo, hi = np.maximum(c, 0), np.minimum(c + box, shape)
        if np.all(lo == c) and np.all(hi == c + box):
            out[j] = vol[c[0]:c[0] + box, c[1]:c[1] + box, c[2]:c[2] + box]
        else:
            out[j] = fill
            a, b = lo - c, hi - c
            out[j, a[0]:b[0], a[1]:b[1], a[2]:b[2]] = vol[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    return out


def bin_boxes(boxes: np.ndarray, target: int, method: str = "fourier") -> np.ndarray:
    """Resample (m, d, d[, d]) boxes to (m, t, t[, t]); the mean value is preserved."""
    m, d, nd = boxes.shape[0], boxes.shape[1], boxes.ndim - 1
    if method == "mean":
        f = d // target
        return boxes.reshape((m,) + (target, f) * nd).mean(
            axis=tuple(range(2, 2 * nd + 1, 2)), dtype=np.float32)
    axes = tuple(range(1, nd + 1))
    spec = scipy.fft.rfftn(boxes, axes=axes, norm="forward")
    keep = np.r_[0:target // 2, d - target // 2:d]
    for ax in axes[:-1]:
        spec = np.take(spec, keep, axis=ax)
    spec = spec[..., :target // 2 + 1]
    return scipy.fft.irfftn(spec, s=(target,) * nd, axes=axes, norm="forward").astype(np.float32)


def normalise_boxes(boxes: np.ndarray, method: str, invert: bool = False) -> np.ndarray:
    """In place: optionally negate (invert), then each box to zero mean and unit std (zscore;
    constant boxes become 0) or none."""
    if invert:
        np.negative(boxes, out=boxes)
    if method == "zscore":
        for b in boxes.reshape(len(boxes), -1):
            b -= np.float32(b.mean(dtype=np.float64))
            std = np.sqrt(np.dot(b, b) / b.size)
            if std > 0:
                b /= np.float32(std)
    return boxes


def reserve(path: str | os.PathLike) -> None:
    """Allocate the disk blocks of a (sparse) file of its current size, so that writes through a
    memory map cannot meet a full disk (which kills the process with SIGBUS): OSError ENOSPC
    here, before any work, instead. No-op where posix_fallocate is missing (macOS)."""
    if not hasattr(os, "posix_fallocate"):
        return
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    finally:
        os.close(fd)


class StackWriter:
    """An MRC stack (float32, voxel size in the header) filled box by box in any order.

    The stack is ``mrcfile.new_mmap``'s writable array: each chunk of boxes is assigned to its
    slots and its pages are released from this process at once (they stay in the page cache
    until written back), so memory stays bounded by one chunk of boxes. The file's blocks are
    reserved first (:func:`reserve`): a full disk is an InputError before any box is cut, not a
    SIGBUS in the middle. The file is renamed into place on a clean exit and removed otherwise.

    Header statistics: dmin, dmax, dmean and rms (population standard deviation), the values
    ``mrcfile``'s ``update_header_stats()`` sets, accumulated (float64) from the boxes as they are
    written. ``update_header_stats()`` itself is not called: on a memory-mapped stack its
    ``std`` makes a full in-memory copy (measured: 484 MB peak for a 262 MB stack, against 62 MB
    streaming), which would break the bounded-memory streaming of stage extract.
    """

    def __init__(self, path: str | os.PathLike, shape: tuple[int, ...], voxel_size: float):
        self._atomic = atomic_path(path)
        self._tmp = self._atomic.__enter__()
        try:
            self._mrc = mrcfile.new_mmap(self._tmp, shape=shape, mrc_mode=2, overwrite=True)
            if len(shape) == 3:
                self._mrc.set_image_stack()  # (n, y, x); 4D shapes are volume stacks already
            self._mrc.voxel_size = voxel_size
            self._mrc.flush()
            reserve(self._tmp)
        except BaseException as exc:
            self._atomic.__exit__(type(exc), exc, exc.__traceback__)
            raise
        self._stats = [np.inf, -np.inf, 0.0, 0.0, 0]  # min, max, sum, sum of squares, count

    def write(self, index: Sequence[int], boxes: np.ndarray) -> None:
        """Write boxes (m, ...) at stack positions ``index`` (m,)."""
        boxes = np.asarray(boxes, dtype=np.float32)
        data = self._mrc.data
        for i, b in zip(index, boxes):
            data[int(i)] = b
        release(data)  # this chunk's pages leave the process (they stay in the page cache)
        flat = boxes.reshape(len(boxes), -1)
        st = self._stats
        st[0], st[1] = min(st[0], float(flat.min())), max(st[1], float(flat.max()))
        st[2] += float(flat.sum(dtype=np.float64))
        st[3] += float(sum(np.dot(f, f) for f in flat))
        st[4] += flat.size

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                mn, mx, total, squares, n = self._stats
                mean = total / max(n, 1)
                h = self._mrc.header
                h.dmin, h.dmax, h.dmean = mn, mx, mean
                h.rms = np.sqrt(max(squares / max(n, 1) - mean * mean, 0.0))
            self._mrc.close()
        except BaseException as err:  # the temporary goes; a full disk becomes InputError
            self._atomic.__exit__(type(err), err, err.__traceback__)
            raise
        self._atomic.__exit__(exc_type, exc, tb)


def chunk_size(box: int, ndim: int, chunk_mb: int) -> int:
    return max(1, (chunk_mb << 20) // (4 * box ** ndim))
