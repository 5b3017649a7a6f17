"""Density maps of the classes: atomic models through gemmi, given maps resampled and centred.

Every map is a cubic float32 (z, y, x) box at the tomogram voxel size whose centre of mass sits
on the central voxel ``n // 2`` (n even). Atomic models give the electron density (e/A^3,
gemmi.DensityCalculatorX with X-ray form factors, every atom's B replaced by one Gaussian blur):
at tomographic resolution a protein's Coulomb potential is the same map up to a near-constant
factor, so class contrasts are right. The blur follows UCSF Chimera's ``molmap``: Gaussian
sigma = 0.225 x resolution, resolution defaulting to 2 x voxel size (Nyquist).
"""

from __future__ import annotations

import logging

import gemmi
import numpy as np
from scipy import ndimage

log = logging.getLogger(__name__)

SIGMA_PER_RESOLUTION = 0.225  # Gaussian sigma / resolution, as Chimera molmap
MARGIN_VOXELS = 2  # empty voxels beyond 3 sigma of the outermost atom
OVERSAMPLE = 3  # density sampled on a 3x finer grid, then averaged per voxel
MAP_RADIUS_LEVEL = 0.1  # map-only classes: radius of the contour at 10 % of the peak


def blur_sigma(voxel_size: float, resolution: float | None = None) -> float:
    """Gaussian sigma (A) of the maps."""
    return SIGMA_PER_RESOLUTION * (resolution or 2.0 * voxel_size)


def box_size(radius: float, voxel_size: float, sigma: float) -> int:
    """Even edge (voxels) of the cubic box holding a particle of ``radius`` A and its blur."""
    n = int(np.ceil(2 * (radius + 3 * sigma) / voxel_size)) + 2 * MARGIN_VOXELS
    return n + n % 2


def atom_arrays(model: gemmi.Model) -> tuple[np.ndarray, np.ndarray]:
    """Positions (n, 3) in A and weights (n,) = atomic number x occupancy of all atoms."""
    xyz, w = [], []
    for cra in model.all():
        a = cra.atom
        xyz.append(a.pos.tolist())
        w.append(a.element.atomic_number * a.occ)
    return np.asarray(xyz, float).reshape(-1, 3), np.asarray(w, float)


def model_density(st: gemmi.Structure, voxel_size: float, resolution: float | None = None,
                  multiplicity: float = 1.0) -> tuple[np.ndarray, float]:
    """Electron density of ``st[0]`` in a centred cubic box; ``st`` is moved in place so that
    its atoms overlay the map (map origin at 0, cell = the box).

    Args:
        multiplicity: heavy atoms each atom stands for (generated pseudo-atoms), used as weight.

    Returns:
        volume: (n, n, n) float32, e/A^3, centre of mass on voxel (n//2, n//2, n//2).
        radius: largest distance (A) of an atom from the centre of mass.
    """
    xyz, w = atom_arrays(st[0])
    if len(xyz) == 0 or w.sum() <= 0:
        raise ValueError(f"model {st.name!r} has no atoms with positive occupancy")
    com = (xyz * w[:, None]).sum(0) / w.sum()
    radius = float(np.sqrt(((xyz - com) ** 2).sum(1).max()))
    sigma = blur_sigma(voxel_size, resolution)
    n = box_size(radius, voxel_size, sigma)
    edge = n * voxel_size
    centre = (n // 2) * voxel_size
    shift = gemmi.Position(*(centre - com))
    for cra in st[0].all():
        cra.atom.pos = cra.atom.pos + shift
    st.cell = gemmi.UnitCell(edge, edge, edge, 90, 90, 90)
    st.spacegroup_hm = "P 1"

    # Sample the density on a grid OVERSAMPLE times finer and average each block of
    # OVERSAMPLE^3 fine samples into one voxel: the voxel holds the mean density over its
    # volume, so mass and centre of mass are kept exactly (point sampling at 10 A would not).
    k = OVERSAMPLE
    offset = gemmi.Position(*([(k - 1) / 2 * voxel_size / k] * 3))  # fine centre = voxel centre
    work = st.clone()
    for cra in work[0].all():
        cra.atom.b_iso = 0.0
        cra.atom.occ = cra.atom.occ * multiplicity
        cra.atom.pos = cra.atom.pos + offset
    dc = gemmi.DensityCalculatorX()
    dc.d_min = resolution or 2.0 * voxel_size
    dc.blur = 8 * np.pi**2 * sigma**2  # B = 8 pi^2 sigma^2
    dc.grid.setup_from(work)
    dc.grid.set_size(n * k, n * k, n * k)
    dc.grid.fill(0.0)
    dc.add_model_density_to_grid(work[0])
    fine = np.array(dc.grid, dtype=np.float32, copy=False)
    vol = fine.reshape(n, k, n, k, n, k).mean(axis=(1, 3, 5)).transpose(2, 1, 0)  # -> (z, y, x)
    return np.ascontiguousarray(vol), radius


def resample(vol: np.ndarray, voxel_in: float, voxel_out: float) -> np.ndarray:
    """Resample a (z, y, x) map from ``voxel_in`` to ``voxel_out`` A (linear interpolation)."""
    if abs(voxel_in - voxel_out) <= 1e-3 * voxel_out:
        return vol
    if voxel_out > voxel_in:  # downsampling: low-pass first so nothing aliases
        vol = ndimage.gaussian_filter(vol, sigma=0.5 * voxel_out / voxel_in)
    # grid_mode: voxel edges (not centres) map to each other, so the physical scale is exact
    out = ndimage.zoom(vol, voxel_in / voxel_out, order=1, grid_mode=True, mode="grid-constant")
    return out.astype(np.float32)


def centre_of_mass(vol: np.ndarray) -> np.ndarray:
    """Centre of mass (z, y, x) in voxels of the positive part of a map."""
    pos = np.clip(vol, 0, None)
    if pos.sum() <= 0:
        raise ValueError("map has no positive density")
    return np.asarray(ndimage.center_of_mass(pos))


def map_radius(vol: np.ndarray, voxel_size: float, level: float = MAP_RADIUS_LEVEL) -> float:
    """Largest distance (A) from the centre of mass of a voxel above ``level`` x the peak."""
    com = centre_of_mass(vol)
    idx = np.argwhere(vol > level * vol.max())
    return float(np.sqrt(((idx - com) ** 2).sum(1).max()) * voxel_size)


def centre_map(vol: np.ndarray, voxel_in: float, voxel_size: float,
               resolution: float | None = None) -> tuple[np.ndarray, float]:
    """Resample a given map to ``voxel_size``, put its centre of mass on the central voxel of a
    cubic box sized like the atomic-model boxes.

    Returns:
        volume: (n, n, n) float32; radius: of the 10 %-of-peak contour, in A.
    """
    vol = resample(np.asarray(vol, np.float32), voxel_in, voxel_size)
    com = centre_of_mass(vol)
    radius = map_radius(vol, voxel_size)
    n = box_size(radius, voxel_size, blur_sigma(voxel_size, resolution))
    out_idx = np.indices((n, n, n), dtype=np.float64).reshape(3, -1)
    src = out_idx + (com - n // 2)[:, None]
    out = ndimage.map_coordinates(vol, src, order=1, mode="constant", cval=0.0)
    return out.reshape(n, n, n).astype(np.float32), radius


# ---------------------------------------------------------------- symmetry of a map
#: spins (degrees) about z that stand in for the continuous part of Cinf / Dinf
AXIAL_SPINS = (37.0, 90.0, 155.0, 260.0)
#: random rotations that stand in for K (spherical)
SPHERICAL_PROBES = 4


def probe_rotations(group: str) -> np.ndarray:
    """Rotations (x, y, z) under which a map of point group ``group`` must be unchanged: the
    group's elements without the identity; for Cinf / Dinf a few spins about z (Dinf: also
    composed with its 2-fold about x), for K a few fixed random rotations. (K, 3, 3); empty
    (0, 3, 3) for C1."""
    from scipy.spatial.transform import Rotation

    from affinity_vae.symmetry import group_rotations, is_axial, is_spherical

    if is_spherical(group):
        return Rotation.random(SPHERICAL_PROBES, random_state=12345).as_matrix()
    elems = group_rotations(group)  # identity first
    if is_axial(group):
        spins = Rotation.from_euler("z", np.asarray(AXIAL_SPINS)[:, None], degrees=True)
        elems = np.concatenate([spins.as_matrix() @ g for g in elems] + [elems])
    keep = np.array([not np.allclose(g, np.eye(3), atol=1e-8) for g in elems], bool)
    return elems[keep].reshape(-1, 3, 3)


def self_correlation(vol: np.ndarray, rotations: np.ndarray) -> np.ndarray:
    """Pearson correlation of a (z, y, x) map with itself rotated (trilinear, about voxel n//2)
    by each of ``rotations`` (K, 3, 3) in (x, y, z). Returns (K,) float; 1 = unchanged."""
    from affinity_vae.rotation import rotate_volume

    a = np.asarray(vol, np.float64)
    a = a - a.mean()
    norm = np.sqrt((a * a).sum())
    out = []
    for rot in np.asarray(rotations, float).reshape(-1, 3, 3):
        b = rotate_volume(vol, rot).astype(np.float64)
        b = b - b.mean()
        out.append(float((a * b).sum() / (norm * np.sqrt((b * b).sum()) + 1e-30)))
    return np.asarray(out)
