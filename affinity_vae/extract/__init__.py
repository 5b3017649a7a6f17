"""Stage `extract`: cubic subtomogram boxes at the particle coordinates -> MRC stack + STAR.

One job per tomogram (or one for a `subtomo_folder` import). ``extract.source`` picks the
paper's dataset variant: boxes cut from the (denoised) reconstruction (iii) or from the
noise-free grandmodel (ii) -- both here -- or each particle rendered alone from its class density
(i, ``isolated``: module ``isolated``). The tomogram is memory-mapped and streamed: boxes are
cut in z order, chunk by chunk, binned and normalised per chunk, and written to the output stack
with positioned writes, while tomogram pages already used are handed back to the OS. Memory is
bounded by ``extract.chunk_mb``, not by the tomogram or the particle count.
Modules: ``classes`` (settings, class filter, splits), ``boxes`` (cutting, binning, the stack
writer), ``isolated`` (variant i); this one runs a tomogram or an import.
Documentation: docs/extract.md.

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
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from affinity_vae.errors import InputError
from affinity_vae.extract.boxes import (
    StackWriter,
    bin_boxes,
    box_corners,
    check_voxel_size,
    chunk_size,
    cut_boxes,
    inside,
    normalise_boxes,
    scan_volume,
)
from affinity_vae.extract.classes import (
    Settings,
    check_unseen,
    dataset_classes,
    folder_settings,
    folder_splits,
    map_classes,
    tomogram_split,
)
from affinity_vae.extract.isolated import extract_isolated, render_isolated
from affinity_vae.io.mrc import read_volume
from affinity_vae.io.shrec import read_particle_locations, read_shrec_folder
from affinity_vae.io.star import particle_table, write_star
from affinity_vae.io.subtomo_folder import (
    find_particles,
    read_classes_csv,
    read_particle,
)
from affinity_vae.rotation import zxz_to_relion

__all__ = ["Settings", "bin_boxes", "dataset_classes", "extract_isolated", "extract_tomogram",
           "folder_splits", "import_folder", "main", "map_classes", "relion_angles",
           "render_isolated", "tomogram_split"]
log = logging.getLogger(__name__)


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


def extract_tomogram(tomogram: str | os.PathLike, locations: str | os.PathLike | pd.DataFrame,
                     stack: str | os.PathLike, star: str | os.PathLike, tomo: str,
                     s: Settings, voxel_size: float, class_list: Sequence[str],
                     split: str, unseen: Sequence[str] = (), z_offset: int = 0,
                     frame: Sequence[int] | None = None) -> pd.DataFrame:
    """Extract every kept particle of one tomogram into ``stack`` and ``star``.

    Args:
        tomogram: MRC (z, y, x) tomogram (read memory-mapped).
        locations: SHREC particle_locations.txt of the tomogram, or a table already read
            (columns of affinity_vae.io.shrec.COLUMNS, coordinates checked against the tomogram).
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
    if isinstance(locations, pd.DataFrame):
        table, locations = locations, f"{tomo} coordinates"
    else:
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
            writer.write(idx, normalise_boxes(boxes, s.normalise, s.invert))
        write_star(star, table_out)
    log.info("%s: wrote %d boxes of %d^3 at %.4g A/voxel to %s", tomo, len(order), out_box,
             voxel * s.box_size / out_box, stack)
    return table_out


def import_folder(folder: str | os.PathLike, stack: str | os.PathLike, star: str | os.PathLike,
                  s: Settings, voxel_size: float, fractions: dict[str, float], seed: int,
                  unseen: Sequence[str] = ()) -> pd.DataFrame:
    """Import a subtomo_folder (see affinity_vae.io.subtomo_folder) into ``stack`` + ``star``.

    Boxes keep the files' own size (then optional bin_to) and get extract.normalise;
    coordinates and angles are 0; tomogram name ``imported``.
    """
    files = find_particles(folder)
    csv = read_classes_csv(folder)
    s, listed_in = folder_settings(s, folder, csv, unseen, files["class"])
    class_list = dataset_classes(files["class"], s, str(folder), listed_in)
    names = map_classes(files["class"], s)
    keep = np.array([n is not None for n in names], dtype=bool)
    files, names = files[keep].reset_index(drop=True), names[keep]
    log.info("%s: %d particle files, %d kept (classes %s)", folder, len(keep), len(files),
             class_list)
    first, _ = read_particle(files["path"][0])
    box, ndim = first.shape[0], first.ndim
    if s.bin_to is not None:
        s.check(box, where=f"{files['path'][0]} (binning with extract.bin_to)")
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
            w.write(np.arange(k, k + len(batch)), normalise_boxes(batch, s.normalise, s.invert))
        write_star(star, table)
    log.info("imported %d particles (%s) into %s", len(files),
             dict(zip(*np.unique(splits, return_counts=True))), stack)
    return table


# ---------------------------------------------------------------- rule entry points
def main_imported(smk: Any) -> None:
    """Rule `extract_imported` (a subtomo_folder dataset): see workflow/rules/extract.smk."""
    s = Settings.from_config(smk.params.extract)
    ds = smk.params.dataset
    import_folder(ds["path"], smk.output.stack, smk.output.star, s, ds["voxel_size"],
                  ds["folder_splits"], smk.params.seed, ds["unseen_classes"])


def main(smk: Any) -> None:
    """Rule `extract_tomogram`: see workflow/rules/extract.smk."""
    s = Settings.from_config(smk.params.extract)
    ds = smk.params.dataset
    s.check()
    tomo = smk.wildcards.tomo
    split = tomogram_split(tomo, ds["splits"], smk.params.tomograms)
    raw = [c for p in smk.input.all_locations for c in read_particle_locations(p)["class"]]
    class_list = dataset_classes(raw, s, "the dataset's particle_locations.txt files")
    unseen = ds["unseen_classes"]
    check_unseen(unseen, class_list, "the dataset")
    log.info("classes (rlnClassNumber 1..%d): %s; %s split: %s", len(class_list), class_list,
             tomo, split)
    if s.source == "isolated":  # variant (i): no tomogram read
        extract_isolated(smk.input.structures, smk.input.locations, smk.output.stack,
                         smk.output.star, tomo, s, ds["voxel_size"], class_list, split, unseen,
                         snr=s.snr, seed=int(smk.params.seed))
        return
    folder = read_shrec_folder(Path(smk.input.locations).parent)  # frame, z padding, checks
    extract_tomogram(smk.input.tomogram, smk.input.locations, smk.output.stack,
                     smk.output.star, tomo, s, ds["voxel_size"], class_list, split, unseen,
                     z_offset=folder.z_offset, frame=folder.shape)
