"""Stage `extract`: cubic subtomogram boxes at the particle coordinates -> MRC stack + STAR.

One job per tomogram (or one for a `subtomo_folder` import). The tomogram is memory-mapped and
streamed: boxes are cut in chunks in z order, binned and normalised per chunk, and written into
a memory-mapped output stack, while pages already used are handed back to the OS. Memory is
bounded by the chunk, not by the tomogram or by the number of particles.

Conventions:
    - A particle at voxel coordinate c (SHREC x y z, rounded half up) lands on voxel
      box_size/2 of its box in every axis: the box spans [c - box/2, c + box/2).
    - Padding (edge: pad) uses the tomogram's mean (pad_value: mean) or 0.
    - Binning happens before normalisation; Fourier cropping keeps the box centre on voxel
      bin_to/2, block mean shifts it by (f - 1) / (2 f) of an output voxel (f = box/bin_to).
    - rlnClassNumber is 1 + the index of the class in the sorted class list of the whole
      dataset (extract.classes when set, else every class found after filtering).
"""

from __future__ import annotations

import logging
import mmap
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mrcfile
import numpy as np
import pandas as pd
import scipy.fft
from tqdm import tqdm

from affinity_vae.errors import InputError
from affinity_vae.io.atomic import atomic_path
from affinity_vae.io.mrc import read_volume
from affinity_vae.io.shrec import read_particle_locations, read_shrec_folder
from affinity_vae.io.star import particle_table, write_star
from affinity_vae.rotation import zxz_to_relion

log = logging.getLogger(__name__)
VOXEL_RTOL = 1e-3  # header voxel size vs config


@dataclass(frozen=True)
class Settings:
    """The `extract` config section (defaults as in workflow/schemas/extract.schema.yaml)."""

    box_size: int = 32
    edge: str = "skip"
    pad_value: str = "mean"
    normalise: str = "zscore"
    bin_to: int | None = None
    bin_method: str = "fourier"
    exclude_classes: tuple[str, ...] = ("vesicle", "fiducial", "4V94")
    rename: dict[str, str] = field(default_factory=dict)
    class_case: str = "lower"
    classes: tuple[str, ...] | None = None
    chunk_mb: int = 32

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> Settings:
        cfg = dict(cfg)
        for key in ("exclude_classes", "classes"):
            if cfg.get(key) is not None:
                cfg[key] = tuple(cfg[key])
        return cls(**cfg)

    def check(self, box: int | None = None) -> None:
        """Raise InputError for inconsistent sizes (box: the box actually cut)."""
        box = self.box_size if box is None else box
        if box % 2:
            raise InputError(f"config key 'extract.box_size': {box} is odd -- use an even size "
                             f"(e.g. {box + 1}) so the particle sits on the box centre voxel")
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


# ---------------------------------------------------------------- class names and splits
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


def dataset_classes(raw_names: Iterable[str], s: Settings, source: str) -> list[str]:
    """Sorted class list of the whole dataset after filtering (raw_names: every particle's).

    Raises:
        InputError: a configured class has no particle, or nothing is left at all.
    """
    raw = sorted(set(map(str, raw_names)))
    found = {c for c in map_classes(raw, s) if c is not None}
    if s.classes is not None:
        empty = sorted(set(s.classes) - found)
        if empty:
            raise InputError(f"config key 'extract.classes': class(es) {empty} have no particle "
                             f"in {source} after filtering (found {sorted(found)}) -- remove "
                             f"them or check extract.exclude_classes/rename")
        return sorted(s.classes)
    if not found:
        raise InputError(f"{source}: no particles left after excluding {list(s.exclude_classes)}"
                         f" (classes present: {raw}) -- change extract.exclude_classes")
    unknown = sorted(set(k.lower() for k in s.rename) - {r.lower() for r in raw})
    if unknown:
        raise InputError(f"config key 'extract.rename': class(es) {unknown} do not occur in "
                         f"{source} (classes present: {raw}) -- fix the names")
    return sorted(found)


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
    """train / validation / test for a tomogram from dataset.splits (names must exist)."""
    test, val = list(splits.get("test", [])), list(splits.get("validation", []))
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


def relion_angles(zxz: np.ndarray) -> np.ndarray:
    """(n, 3) SHREC ZXZ -> RELION ZYZ degrees; rows with NaN angles (vesicles, fiducials in
    SHREC files) get 0."""
    zxz = np.asarray(zxz, dtype=float).reshape(-1, 3)
    out = np.zeros_like(zxz)
    ok = np.isfinite(zxz).all(axis=1)
    if ok.any():
        with warnings.catch_warnings():  # X = 0 or 180: rot/psi split is arbitrary, harmless
            warnings.filterwarnings("ignore", message=".*[Gg]imbal lock.*")
            out[ok] = np.asarray(zxz_to_relion(zxz[ok])).reshape(-1, 3)
    return out


# ---------------------------------------------------------------- volume access
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

    With ``stream`` (corners sorted by z, no later call reads below corners[-1, 0]) the pages of
    a memory-mapped ``vol`` below the current box are released as the cut moves up in z.
    """
    out = np.empty((len(corners), box, box, box), dtype=np.float32)
    shape = np.asarray(vol.shape)
    released = mapped = max(int(corners[0, 0]), 0) if len(corners) else 0
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


# ---------------------------------------------------------------- per-box processing
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


def normalise_boxes(boxes: np.ndarray, method: str) -> np.ndarray:
    """In place: each box to zero mean and unit std (zscore; constant boxes to 0) or none."""
    if method == "zscore":
        for b in boxes.reshape(len(boxes), -1):
            b -= np.float32(b.mean(dtype=np.float64))
            std = np.sqrt(np.dot(b, b) / b.size)
            if std > 0:
                b /= np.float32(std)
    return boxes


class StackWriter:
    """An MRC stack (float32, voxel size in the header) filled box by box in any order.

    Boxes go to the file with positioned writes (page cache, not process memory); the file is
    renamed into place on a clean exit and removed otherwise. Header statistics are
    accumulated from the written boxes.
    """

    def __init__(self, path: str | os.PathLike, shape: tuple[int, ...], voxel_size: float):
        self._atomic = atomic_path(path)
        self._tmp = self._atomic.__enter__()
        try:
            with mrcfile.new_mmap(self._tmp, shape=shape, mrc_mode=2, overwrite=True) as mrc:
                if len(shape) == 3:
                    mrc.set_image_stack()  # (n, y, x); 4D shapes are volume stacks already
                mrc.voxel_size = voxel_size
                self._offset = int(mrc.header.nbytes) + int(mrc.header.nsymbt)
                self._dtype = mrc.data.dtype
            self._fd = os.open(self._tmp, os.O_WRONLY)
        except BaseException as exc:
            self._atomic.__exit__(type(exc), exc, exc.__traceback__)
            raise
        self._item = 4 * int(np.prod(shape[1:]))
        self._stats = [np.inf, -np.inf, 0.0, 0.0, 0]  # min, max, sum, sum of squares, count

    def write(self, index: Sequence[int], boxes: np.ndarray) -> None:
        """Write boxes (m, ...) at stack positions ``index`` (m,)."""
        boxes = np.ascontiguousarray(boxes, dtype=self._dtype)
        for i, b in zip(index, boxes):
            os.pwrite(self._fd, memoryview(b).cast("B"), self._offset + int(i) * self._item)
        flat = boxes.reshape(len(boxes), -1)
        st = self._stats
        st[0], st[1] = min(st[0], float(flat.min())), max(st[1], float(flat.max()))
        st[2] += float(flat.sum(dtype=np.float64))
        st[3] += float(sum(np.dot(f, f) for f in flat))
        st[4] += flat.size

    def __enter__(self) -> StackWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        os.close(self._fd)
        if exc_type is None:
            mn, mx, total, squares, n = self._stats
            mean = total / max(n, 1)
            with mrcfile.mmap(self._tmp, mode="r+") as mrc:
                h = mrc.header
                h.dmin, h.dmax, h.dmean = mn, mx, mean
                h.rms = np.sqrt(max(squares / max(n, 1) - mean * mean, 0.0))
        self._atomic.__exit__(exc_type, exc, tb)


def chunk_size(box: int, ndim: int, chunk_mb: int) -> int:
    return max(1, (chunk_mb << 20) // (4 * box ** ndim))


# ---------------------------------------------------------------- one tomogram
def extract_tomogram(tomogram: str | os.PathLike, locations: str | os.PathLike,
                     stack: str | os.PathLike, star: str | os.PathLike, tomo: str,
                     s: Settings, voxel_size: float, class_list: Sequence[str],
                     split: str, unseen: Sequence[str] = (), z_offset: int = 0,
                     frame: Sequence[int] | None = None) -> pd.DataFrame:
    """Extract every kept particle of one tomogram into ``stack`` and ``star``.

    Args:
        tomogram: MRC (z, y, x) tomogram (read memory-mapped).
        locations: SHREC particle_locations.txt of the tomogram.
        class_list: the dataset's classes (see dataset_classes).
        split: this tomogram's split; particles of ``unseen`` classes get ``unseen``.
        z_offset, frame: for SHREC folders whose reconstruction is padded in z: the particle
            coordinates live in ``frame`` (z, y, x) = tomogram slices z_offset.. (see
            affinity_vae.io.shrec.read_shrec_folder); boxes may use the padding slices.
    Returns:
        The STAR table written.
    """
    s.check()
    vol, header_voxel = read_volume(tomogram, mmap=True)
    if vol.ndim != 3:
        raise InputError(f"{tomogram}: expected a 3D tomogram, got shape {vol.shape} "
                         f"-- point the dataset at the reconstruction")
    voxel = check_voxel_size(header_voxel, voxel_size, tomogram)
    frame = tuple(vol.shape) if frame is None else tuple(frame)
    if z_offset + frame[0] > vol.shape[0] or tuple(frame[1:]) != vol.shape[1:]:
        raise InputError(f"{tomogram}: shape {vol.shape} does not hold the labelled volume "
                         f"{frame} (+{z_offset} z slices) -- use this folder's tomogram")
    table = read_particle_locations(locations, shape=frame)
    names = map_classes(table["class"], s)
    keep = np.array([n is not None for n in names], dtype=bool)
    log.info("%s: %d particles, %d kept after class filtering", locations, len(table), keep.sum())
    table, names = table[keep].reset_index(drop=True), names[keep]
    xyz = table[["x", "y", "z"]].to_numpy(float)
    corners = box_corners(xyz, frame, s.box_size, locations) + np.array([z_offset, 0, 0])
    full = inside(corners, s.box_size, vol.shape)
    if s.edge == "skip":
        log.info("%s: %d particle(s) skipped at the edge (box %d)", tomo, int((~full).sum()),
                 s.box_size)
        table, names, xyz, corners = table[full], names[full], xyz[full], corners[full]
    else:
        log.info("%s: %d particle(s) at the edge padded with the %s", tomo,
                 int((~full).sum()), "tomogram mean" if s.pad_value == "mean" else "value 0")
    if len(table) == 0:
        raise InputError(f"{locations}: no particle left after class filtering and edge policy "
                         f"'{s.edge}' -- check extract.exclude_classes/classes or use edge: pad")
    mean = scan_volume(vol, tomogram, s.chunk_mb)
    fill = mean if s.pad_value == "mean" else 0.0

    unseen_map = check_unseen(unseen, class_list, "the dataset") if unseen else {}
    splits = np.array(["unseen" if n.lower() in unseen_map else split for n in names])
    zxz = table[["z1", "x_angle", "z2"]].to_numpy(float)
    table_out = particle_table(tomo, Path(stack).name, names, list(class_list), splits, xyz,
                               relion_angles(zxz), zxz)

    out_box = s.out_box()
    order = np.argsort(corners[:, 0], kind="stable")
    step = chunk_size(s.box_size, 3, s.chunk_mb)
    with StackWriter(stack, (len(order), out_box, out_box, out_box), voxel * s.box_size
                     / out_box) as writer:
        for k in tqdm(range(0, len(order), step), desc=f"extract {tomo}", unit="chunk",
                      disable=None):
            idx = order[k:k + step]
            boxes = cut_boxes(vol, corners[idx], s.box_size, fill, stream=True)
            if s.bin_to:
                boxes = bin_boxes(boxes, s.bin_to, s.bin_method)
            writer.write(idx, normalise_boxes(boxes, s.normalise))
        write_star(star, table_out)
    log.info("%s: wrote %d boxes of %d^3 at %.4g A/voxel to %s", tomo, len(order), out_box,
             voxel * s.box_size / out_box, stack)
    return table_out


# ---------------------------------------------------------------- subtomo_folder import
def folder_splits(classes: np.ndarray, in_test: np.ndarray, fractions: dict[str, float],
                  seed: int) -> np.ndarray:
    """train / validation / test per particle: the test/ subfolder when it has files, else a
    seeded draw of round(fraction * n) particles of each class (stratified)."""
    split = np.full(len(classes), "train", dtype=object)
    if in_test.any():
        split[in_test] = "test"
        return split
    test, val = fractions.get("test", 0.2), fractions.get("validation", 0.0)
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


def import_folder(folder: str | os.PathLike, stack: str | os.PathLike, star: str | os.PathLike,
                  s: Settings, voxel_size: float, fractions: dict[str, float], seed: int,
                  unseen: Sequence[str] = ()) -> pd.DataFrame:
    """Import a subtomo_folder (see affinity_vae.io.subtomo_folder) into ``stack`` + ``star``.

    Boxes keep the files' own size (then optional bin_to) and get extract.normalise;
    coordinates and angles are 0; tomogram name ``imported``.
    """
    from dataclasses import replace

    from affinity_vae.io.subtomo_folder import find_particles, read_classes_csv, read_particle

    files = find_particles(folder)
    csv = read_classes_csv(folder)
    if s.classes is None and csv is not None:
        s = replace(s, classes=tuple(csv))
    class_list = dataset_classes(files["class"], s, str(folder))
    names = map_classes(files["class"], s)
    keep = np.array([n is not None for n in names], dtype=bool)
    files, names = files[keep].reset_index(drop=True), names[keep]
    log.info("%s: %d particle files, %d kept (classes %s)", folder, len(keep), len(files),
             class_list)
    first, _ = read_particle(files["path"][0])
    box, ndim = first.shape[0], first.ndim
    if s.bin_to is not None:
        s.check(box)
    unseen_map = check_unseen(unseen, class_list, str(folder)) if unseen else {}
    splits = folder_splits(names, files["test"].to_numpy(bool), fractions, seed)
    splits = np.array(["unseen" if n.lower() in unseen_map else sp
                       for n, sp in zip(names, splits)])
    zeros = np.zeros((len(files), 3))
    table = particle_table("imported", Path(stack).name, names, class_list, splits, zeros, zeros,
                           zeros)
    out_box = s.bin_to or box
    step = chunk_size(box, ndim, s.chunk_mb)
    with StackWriter(stack, (len(files),) + (out_box,) * ndim, voxel_size * box / out_box) as w:
        for k in tqdm(range(0, len(files), step), desc="import", unit="chunk", disable=None):
            batch = np.empty((min(step, len(files) - k),) + first.shape, dtype=np.float32)
            for j, path in enumerate(files["path"][k:k + step]):
                data, vox = read_particle(path)
                if data.shape != first.shape:
                    raise InputError(f"{path}: shape {data.shape} differs from {first.shape} "
                                     f"of {files['path'][0]} -- give all particles one box size")
                check_voxel_size(vox, voxel_size, path)
                batch[j] = data
            if s.bin_to:
                batch = bin_boxes(batch, s.bin_to, s.bin_method)
            w.write(np.arange(k, k + len(batch)), normalise_boxes(batch, s.normalise))
        write_star(star, table)
    log.info("imported %d particles (%s) into %s", len(files),
             dict(zip(*np.unique(splits, return_counts=True))), stack)
    return table


# ---------------------------------------------------------------- rule entry point
def main(smk: Any) -> None:
    """Rule `extract_tomogram` / `extract_imported`: see workflow/rules/extract.smk."""
    s = Settings.from_config(smk.params.extract)
    ds = smk.params.dataset
    if ds["source"] == "subtomo_folder":
        import_folder(ds["path"], smk.output.stack, smk.output.star, s, ds["voxel_size"],
                      ds.get("folder_splits", {}), smk.params.seed, ds.get("unseen_classes", []))
        return
    s.check()
    tomo = smk.wildcards.tomo
    split = tomogram_split(tomo, ds.get("splits", {}), smk.params.tomograms)
    raw = [c for p in smk.input.all_locations for c in read_particle_locations(p)["class"]]
    class_list = dataset_classes(raw, s, "the dataset's particle_locations.txt files")
    unseen = ds.get("unseen_classes", [])
    check_unseen(unseen, class_list, "the dataset")
    log.info("classes (rlnClassNumber 1..%d): %s; %s split: %s", len(class_list), class_list,
             tomo, split)
    folder = read_shrec_folder(Path(smk.input.locations).parent)  # frame, z padding, checks
    extract_tomogram(smk.input.tomogram, smk.input.locations, smk.output.stack,
                     smk.output.star, tomo, s, ds["voxel_size"], class_list, split, unseen,
                     z_offset=folder.z_offset, frame=folder.shape)
