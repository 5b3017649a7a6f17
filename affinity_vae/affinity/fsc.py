"""FSC affinity: shell-weighted mean Fourier shell correlation of aligned densities.

For every class the density (``(z, y, x)``, tomogram voxel size) is

1. centred on its centre of mass and turned into its principal-axes frame (inertia tensor of
   the positive density), resampled once (cubic spline) into a common odd cubic box ``N``;
2. Fourier transformed; only the coefficients inside the sphere of the configured resolution
   are kept, sorted by shell.

A pair (A, B) is then compared over the candidate rotations of B: the 24 proper signed
permutations of the principal axes (the sign/order ambiguity of principal axes, i.e. the
octahedral group; applied *exactly* as index permutations of the Fourier coefficients, no
interpolation) times ``1 + n_rotations`` base orientations (identity plus extra rotations,
each one more spline resampling of B). The score is the best candidate's

    sum_s n_s FSC_s / sum_s n_s,   shells s = 1 .. N * voxel / resolution,

with n_s the number of Fourier coefficients of shell s (Brown et al. 2015 weighting), clipped to
[0, 1]. All of a pair's candidates are scored at once (vectorised gather and ``reduceat``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import fft as sfft
from scipy import ndimage
from scipy.spatial.transform import Rotation
from tqdm import tqdm

from affinity_vae.errors import InputError
from affinity_vae.rotation import cube_rotations

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """A class's Fourier coefficients inside the resolution sphere, one row per base rotation.

    coeffs: (n_base, m) complex128, ordered as :attr:`FourierSphere.order`.
    power: (n_base, n_shells) float64, per-shell sum of |F|^2.
    """

    coeffs: np.ndarray
    power: np.ndarray


def octahedral_group() -> np.ndarray:
    """The 24 proper signed permutation matrices (3, 3), identity first. Shape (24, 3, 3).
    The pipeline's one cube group: affinity_vae.rotation.cube_rotations (scipy's group "O")."""
    return cube_rotations()


def extra_rotations(n: int, kind: str = "axial", seed: int = 0) -> np.ndarray:
    """``n`` extra base rotations (n, 3, 3) in the principal-axes frame.

    ``axial``: rotations about each principal axis by evenly spaced angles in (0, 90) degrees
    (``ceil(n / 3)`` per axis, the first ``n`` kept): together with the 24 signed permutations
    they sample rotations about any principal axis every 90 / (n/3 + 1) degrees, which is what
    a near-degenerate pair of principal moments (rings, barrels) leaves undetermined.
    ``random``: ``n`` uniformly distributed rotations (seeded).
    """
    if n <= 0:
        return np.zeros((0, 3, 3))
    if kind == "random":
        return Rotation.random(n, random_state=seed).as_matrix()
    if kind != "axial":
        raise ValueError(f"unknown rotation set {kind!r}")
    per_axis = -(-n // 3)
    angles = np.arange(1, per_axis + 1) * 90.0 / (per_axis + 1)
    rots = [Rotation.from_rotvec(np.deg2rad(a) * np.eye(3)[ax]).as_matrix()
            for a in angles for ax in range(3)]
    return np.array(rots[:n])


def principal_frame(volume: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Centre of mass, principal axes and radius of the positive density.

    Args:
        volume: (z, y, x) density.
    Returns:
        com: (3,) in voxels (z, y, x); axes: (3, 3) proper rotation whose columns are the
        principal axes (ascending moments); radius: largest distance (voxels) from ``com`` of a
        voxel above 1% of the maximum.
    """
    w = np.clip(volume.astype(np.float64), 0, None)
    total = w.sum()
    if not np.isfinite(total) or total <= 0:
        raise ValueError("density has no positive voxels")
    idx = np.indices(w.shape, dtype=np.float64).reshape(3, -1)
    wf = w.ravel()
    com = idx @ wf / total
    d = idx - com[:, None]
    cov = (d * wf) @ d.T / total
    _, axes = np.linalg.eigh(cov)
    if np.linalg.det(axes) < 0:
        axes[:, 2] *= -1
    keep = wf > 0.01 * wf.max()
    radius = float(np.sqrt((d[:, keep] ** 2).sum(0).max()))
    return com, axes, radius


class FourierSphere:
    """Indices of the Fourier coefficients of an odd box ``n`` inside shell ``k_max``.

    Attributes:
        order: (m,) flat indices into the fftshifted (n, n, n) transform, sorted by shell.
        starts: (n_shells,) first position of each shell in ``order`` (for ``np.add.reduceat``).
        counts: (n_shells,) coefficients per shell (the FSC weights).
        perm_index: (24, m) positions into ``order`` of the coefficients of each octahedral
            rotation (``coeffs[:, perm_index[g]]`` is the transform of the rotated map).
    """

    def __init__(self, n: int, k_max: int):
        if n % 2 == 0:
            raise ValueError("box must be odd")
        c = n // 2
        k = np.indices((n, n, n)).reshape(3, -1) - c
        radius = np.sqrt((k ** 2).sum(0))
        shell = np.rint(radius).astype(np.int64)
        inside = np.flatnonzero((shell >= 1) & (shell <= k_max))
        inside = inside[np.argsort(shell[inside], kind="stable")]
        self.n, self.k_max, self.order = n, k_max, inside
        shells = shell[inside]
        self.counts = np.bincount(shells, minlength=k_max + 1)[1:].astype(np.float64)
        self.starts = np.concatenate([[0], np.cumsum(self.counts)[:-1]]).astype(np.int64)
        pos = np.full(n ** 3, -1, dtype=np.int64)
        pos[inside] = np.arange(inside.size)
        kin = k[:, inside]
        rows = []
        for g in octahedral_group():  # F_rot(k) = F(g^T k)
            src = (g.T @ kin) + c
            rows.append(pos[np.ravel_multi_index(src.astype(np.int64), (n, n, n))])
        self.perm_index = np.array(rows)


def common_box(radii: list[float]) -> int:
    """Smallest odd box holding every density around its centre of mass (one voxel margin)."""
    n = 2 * int(np.ceil(max(radii))) + 3
    return n if n % 2 else n + 1


def prepare(volume: np.ndarray, n: int, sphere: FourierSphere, rotations: np.ndarray,
            order: int = 3, workers: int = 1) -> Prepared:
    """Resample a density into the box ``n`` in its principal frame for each base rotation
    (identity plus ``rotations`` (r, 3, 3)) and keep its Fourier coefficients in ``sphere``."""
    com, axes, _ = principal_frame(volume)
    vol = np.asarray(volume, dtype=np.float64)
    coeffs = ndimage.spline_filter(vol, order=order) if order > 1 else vol
    grid = (np.indices((n, n, n), dtype=np.float64).reshape(3, -1) - n // 2)
    bases = np.concatenate([np.eye(3)[None], rotations]) if len(rotations) else np.eye(3)[None]
    out_c, out_p = [], []
    for q in bases:
        src = axes @ (q @ grid) + com[:, None]
        box = ndimage.map_coordinates(coeffs, src, order=order, prefilter=False, cval=0.0)
        box = box.reshape(n, n, n)
        f = sfft.fftshift(sfft.fftn(sfft.ifftshift(box), workers=workers)).ravel()[sphere.order]
        out_c.append(f)
        out_p.append(np.add.reduceat(np.abs(f) ** 2, sphere.starts))
    return Prepared(np.array(out_c), np.array(out_p))


def pair_score(a: Prepared, b: Prepared, sphere: FourierSphere) -> float:
    """Best shell-weighted mean FSC between A (identity base) and every candidate of B."""
    fa_conj = a.coeffs[0].conj()
    best = -1.0
    for fb, pb in zip(b.coeffs, b.power):  # one base rotation of B at a time (bounded memory)
        num = np.add.reduceat((fb[sphere.perm_index] * fa_conj).real, sphere.starts, axis=-1)
        den = np.sqrt(a.power[0] * pb)[None, :]  # shells are rotation invariant
        fsc = np.divide(num, den, out=np.zeros_like(num), where=den > 0)  # (24, n_shells)
        best = max(best, float(((fsc * sphere.counts).sum(-1) / sphere.counts.sum()).max()))
    return float(np.clip(best, 0.0, 1.0))


def fsc_matrix(volumes: dict[str, np.ndarray], voxel_size: float, resolution: float,
               n_rotations: int = 6, rotation_set: str = "axial", order: int = 3,
               seed: int = 0, workers: int = 1) -> np.ndarray:
    """Pairwise FSC affinity of densities.

    Args:
        volumes: class name -> (z, y, x) density, all at ``voxel_size`` Angstrom.
        resolution: highest-resolution shell used, in Angstrom (>= 2 * voxel_size).
        n_rotations: extra base rotations (see :func:`extra_rotations`); the search covers
            ``24 * (1 + n_rotations)`` rotations.
    Returns:
        (n, n) float64 symmetric matrix in [0, 1] with a unit diagonal, in ``volumes`` order.
    """
    if resolution < 2 * voxel_size:
        raise InputError(f"config key 'affinity.fsc.resolution_A' = {resolution} is finer than "
                         f"Nyquist ({2 * voxel_size} A at voxel size {voxel_size} A) -- raise it")
    names = list(volumes)
    radii = []
    for name in names:
        vol = volumes[name]
        if vol.ndim != 3 or not np.isfinite(vol).all() or not (vol > 0).any():
            raise InputError(f"density of class '{name}' is empty, not 3D or not finite "
                             f"-- regenerate its map")
        radii.append(principal_frame(vol)[2])
    n = common_box(radii)
    k_max = int(np.floor(n * voxel_size / resolution))
    if k_max < 1:
        raise InputError(f"config key 'affinity.fsc.resolution_A' = {resolution}: no Fourier "
                         f"shell below it in a {n}-voxel box -- lower it")
    sphere = FourierSphere(n, k_max)
    rots = extra_rotations(n_rotations, rotation_set, seed)
    log.info("FSC: %d classes, box %d, shells 1..%d (%.1f A), %d candidate rotations a pair",
             len(names), n, k_max, resolution, 24 * (1 + len(rots)))
    prepared = [prepare(volumes[k], n, sphere, rots, order, workers)
                for k in tqdm(names, desc="fsc: align", disable=None)]
    out = np.eye(len(names))
    pairs = [(i, j) for i in range(len(names)) for j in range(i + 1, len(names))]
    for i, j in tqdm(pairs, desc="fsc: pairs", disable=None):
        out[i, j] = out[j, i] = pair_score(prepared[i], prepared[j], sphere)
    return out
