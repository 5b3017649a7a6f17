"""Dataset variant (i) of the paper (``extract.source: isolated``): every particle alone.

Each particle of a tomogram's ``particle_locations.txt`` is rendered by itself, at its true pose,
from its class density (``results/<run>/structures/<class>.mrc``, written by the structures
stage at the dataset voxel size) into a box of ``extract.box_size``: no neighbours (crowding
removed), no CTF, no missing wedge, no reconstruction noise. Optionally white Gaussian noise is
added at ``extract.isolated.snr``. Then binning / invert / normalisation as for the other sources.

Conventions:
    - The rotation is the simulator's: :func:`affinity_vae.rotation.rotate_volume` with the SHREC
      matrix :func:`affinity_vae.rotation.zxz_to_matrix` (active, about the box centre), cubic
      spline (``ORDER``, as ``affinity_vae.simulate.placement.render``), negative overshoot
      clipped to 0. The density's centre voxel ``d // 2`` lands on voxel ``box // 2``, the voxel
      the particle coordinate lands on in a box cut from a tomogram.
    - SNR = var(noise-free box) / var(noise), over all ``box_size**3`` voxels of each particle's
      box before binning: the simulator's definition (signal variance over noise variance over
      all samples, ``affinity_vae.simulate.tilt.add_noise``) applied to each box, so every
      particle has the same SNR whatever its class.
    - The noise of particle i (stack index) of tomogram t comes from its own generator seeded
      with (seed, crc32(t), salt, i): independent of chunking, reproducible.
"""

from __future__ import annotations

import logging
import os
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from affinity_vae.errors import InputError
from affinity_vae.extract.boxes import (
    StackWriter,
    bin_boxes,
    check_voxel_size,
    chunk_size,
    normalise_boxes,
)
from affinity_vae.extract.classes import Settings, check_unseen, map_classes
from affinity_vae.io.mrc import read_volume
from affinity_vae.io.shrec import read_particle_locations
from affinity_vae.io.star import particle_table, write_star
from affinity_vae.rotation import rotate_volume, zxz_to_matrix
from affinity_vae.simulate.placement import crop_template

__all__ = ["ORDER", "add_box_noise", "extract_isolated", "noise_generator", "read_densities",
           "render_isolated"]
log = logging.getLogger(__name__)
ORDER = 3  # spline order of the simulator's rotation (affinity_vae.simulate.placement.render)
_SALT = 0x150


def read_densities(structures: str | os.PathLike, names: Sequence[str], voxel_size: float
                   ) -> dict[str, np.ndarray]:
    """Density ``<structures>/<name>.mrc`` of each name (file stem matched case-insensitively).

    Returns:
        name -> (d, d, d) float32 density at ``voxel_size``, centred on voxel d // 2.
    Raises:
        InputError: a name has no density file, or a file is not a 3D density at voxel_size.
    """
    folder = Path(structures)
    files = ({f.stem.lower(): f for f in sorted(folder.glob("*.mrc"))} if folder.is_dir()
             else {})
    out = {}
    for name in names:
        path = files.get(str(name).lower())
        if path is None:
            raise InputError(f"{folder}: no density {name}.mrc for class '{name}' of the particle "
                             f"lists -- add the class to the structures config or drop it with "
                             f"extract.exclude_classes")
        vol, header = read_volume(path)
        check_voxel_size(header, voxel_size, path)
        if vol.ndim != 3 or len(set(vol.shape)) != 1 or not np.isfinite(vol).all():
            raise InputError(f"{path}: not a cubic 3D density (shape {vol.shape}) -- rebuild "
                             f"the structures")
        out[name] = np.asarray(vol, dtype=np.float32)
    return out


def render_isolated(density: np.ndarray, zxz_deg: np.ndarray, box: int) -> np.ndarray:
    """Render one class density alone at each pose, centred in a cubic box.

    Args:
        density: (d, d, d) density, centre voxel d // 2.
        zxz_deg: (n, 3) SHREC Euler angles (Z1, X, Z2) in degrees; NaN rows render unrotated.
        box: output edge length in voxels.
    Returns:
        (n, box, box, box) float32: ``rotate_volume(density, zxz_to_matrix(a))`` with its centre
        on voxel box // 2, clipped at 0 (the simulator's rendering of a particle).
    """
    zxz = np.nan_to_num(np.asarray(zxz_deg, dtype=float).reshape(-1, 3), nan=0.0)
    # Voxels farther than the box's half-diagonal from the centre never reach the box.
    tpl = crop_template(np.asarray(density, dtype=np.float32), np.sqrt(3) * box / 2 + 2)
    out = np.empty((len(zxz), box, box, box), dtype=np.float32)
    for j, m in enumerate(zxz_to_matrix(zxz).reshape(-1, 3, 3)):
        out[j] = rotate_volume(tpl, m, order=ORDER, output_shape=(box, box, box))
    np.maximum(out, 0, out=out)
    return out


def noise_generator(seed: int, tomo: str, index: int) -> np.random.Generator:
    """The noise generator of particle ``index`` (stack index) of tomogram ``tomo``."""
    return np.random.default_rng([int(seed), zlib.crc32(tomo.encode()), _SALT, int(index)])


def add_box_noise(boxes: np.ndarray, snr: float, rngs: Sequence[np.random.Generator]
                  ) -> tuple[np.ndarray, np.ndarray]:
    """White Gaussian noise at ``snr`` = var(box) / var(noise) per box, over all its voxels.

    Args:
        boxes: (m, ...) noise-free boxes; rngs: m generators, one a box.
    Returns:
        noisy (m, ...) float32 and the (m,) noise standard deviations.
    """
    if not snr > 0:
        raise InputError(f"config key 'extract.isolated.snr': {snr} must be positive -- or null "
                         f"for noise-free boxes")
    flat = boxes.reshape(len(boxes), -1)
    sigma = np.sqrt(flat.var(axis=1, dtype=np.float64) / snr)
    noisy = np.empty_like(boxes, dtype=np.float32)
    for j, (b, rng) in enumerate(zip(boxes, rngs)):
        noisy[j] = b + rng.standard_normal(b.shape, dtype=np.float32) * np.float32(sigma[j])
    return noisy, sigma


def extract_isolated(structures: str | os.PathLike, locations: str | os.PathLike | pd.DataFrame,
                     stack: str | os.PathLike, star: str | os.PathLike, tomo: str,
                     s: Settings, voxel_size: float, class_list: Sequence[str], split: str,
                     unseen: Sequence[str] = (), snr: float | None = None, seed: int = 0
                     ) -> pd.DataFrame:
    """Render every kept particle of one tomogram alone into ``stack``; write ``star``.

    Args:
        structures: folder of class densities ``<class>.mrc`` (the structures stage's output).
        locations: the tomogram's SHREC particle_locations.txt (or the table already read).
        class_list: the dataset's classes (rlnClassNumber order); split: the tomogram's split.
        snr: None = noise-free; else the per-box SNR of added white Gaussian noise.
    Returns:
        The STAR table written (the same columns as for boxes cut from a tomogram; every
        particle is kept: a rendered box never reaches outside a tomogram).
    """
    from affinity_vae.extract import relion_angles  # the package imports this module

    s.check()
    if isinstance(locations, pd.DataFrame):
        table, where = locations, f"{tomo} coordinates"
    else:
        table, where = read_particle_locations(locations), str(locations)
    names = map_classes(table["class"], s)
    keep = np.array([n is not None for n in names], dtype=bool)
    table, names = table[keep].reset_index(drop=True), names[keep]
    if len(table) == 0:
        raise InputError(f"{where}: no particle left after class filtering -- check "
                         f"extract.exclude_classes/classes")
    raw = table["class"].astype(str).to_numpy()
    dens = read_densities(structures, sorted(set(raw), key=str.lower), voxel_size)
    log.info("%s: %d particles rendered alone from %s (%s), SNR %s", tomo, len(table),
             structures, ", ".join(f"{k} {v.shape[0]}^3" for k, v in dens.items()),
             "none (noise-free)" if snr is None else f"{snr:g} per box")

    unseen_map = check_unseen(unseen, class_list, "the dataset") if unseen else {}
    splits = np.array(["unseen" if n.lower() in unseen_map else split for n in names])
    xyz = table[["x", "y", "z"]].to_numpy(float)
    zxz = table[["z1", "x_angle", "z2"]].to_numpy(float)
    table_out = particle_table(tomo, Path(stack).name, names, list(class_list), splits, xyz,
                               relion_angles(zxz), zxz)

    box, out_box = s.box_size, s.out_box()
    step = chunk_size(box, 3, s.chunk_mb)
    with StackWriter(stack, (len(table), out_box, out_box, out_box),
                     voxel_size * box / out_box) as writer:
        for k in tqdm(range(0, len(table), step), desc=f"isolated {tomo}", unit="chunk",
                      disable=None):
            idx = np.arange(k, min(k + step, len(table)))
            boxes = np.empty((len(idx), box, box, box), dtype=np.float32)
            for cls in np.unique(raw[idx]):
                sel = np.flatnonzero(raw[idx] == cls)
                boxes[sel] = render_isolated(dens[cls], zxz[idx[sel]], box)
            if snr is not None:
                boxes, _ = add_box_noise(boxes, snr, [noise_generator(seed, tomo, i)
                                                      for i in idx])
            if s.bin_to:
                boxes = bin_boxes(boxes, s.bin_to, s.bin_method)
            writer.write(idx, normalise_boxes(boxes, s.normalise, s.invert))
        write_star(star, table_out)
    log.info("%s: wrote %d isolated boxes of %d^3 at %.4g A/voxel to %s", tomo, len(table),
             out_box, voxel_size * box / out_box, stack)
    return table_out

