"""Template matching (TM): the classical baseline classifier and pose estimator (torch core).

Every box is scored against every class template over a grid of rotations and small shifts by a
normalised cross-correlation (NCC) under a spherical mask; the class is the template with the
highest peak, the orientation that peak's rotation (active, (x, y, z), the convention of
affinity_vae.rotation: box ~ rotate_volume(template, R)).

The work, per rotation: each class density (already low-passed and resampled onto the working
grid) is rotated once (affinity_vae.rotation.rotate_volume, about voxel w // 2), filtered like
the data (missing wedge in the tomogram's frame, so *after* the rotation, times the CTF; the
simulator's own functions, affinity_vae.wedge and affinity_vae.imaging), cropped to the search
window, masked and normalised -- and then reused for every particle: the NCC at every shift is
one matrix product of the normalised shifted particle windows (P x S, M masked voxels) with the
normalised templates (R x C, M). For the few-voxel shifts TM needs here (the boxes are cut at the
particle list's coordinates) this is the FFT cross-correlation restricted to those shifts, done
as a GEMM, which is what makes it fast on CPUs.

Working grid: the boxes and templates are Fourier-cropped by the largest integer factor ``b``
with ``b <= lowpass_A / (2 voxel)`` that divides the box (Nyquist of the working grid = the low
pass), and low-passed to ``lowpass_A``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from affinity_vae.imaging import ctf_radial
from affinity_vae.rotation import rotate_volume
from affinity_vae.wedge import fourier_grid, wedge_mask


def rotation_grid(step_deg: float) -> np.ndarray:
    """A near-uniform grid of rotations with about ``step_deg`` between neighbours.

    Directions of the rotated z axis on a Fibonacci sphere (one per (sqrt(3)/2) step^2 of solid
    angle: covering radius ~0.58 step) times in-plane turns every ``360 / ceil(360 / step)``
    degrees: any rotation lies within ~0.8 step of a grid point.

    Returns:
        (R, 3, 3) float64 active rotations in (x, y, z); R ~ 4 pi / (0.87 s^2) * 360 / step
        (s in radians): 30 deg -> 636, 20 deg -> 2,142, 15 deg -> 5,088, 10 deg -> 17,172.
    """
    s = math.radians(float(step_deg))
    n_dir = max(1, math.ceil(4 * math.pi / (math.sqrt(3) / 2 * s * s)))
    n_psi = max(1, math.ceil(360.0 / float(step_deg)))
    i = np.arange(n_dir) + 0.5
    theta = np.degrees(np.arccos(1 - 2 * i / n_dir))
    phi = np.degrees(np.mod(i * math.pi * (3 - math.sqrt(5)), 2 * math.pi))
    psi = np.arange(n_psi) * 360.0 / n_psi
    ang = np.stack([np.repeat(phi, n_psi), np.repeat(theta, n_psi), np.tile(psi, n_dir)], 1)
    return Rotation.from_euler("ZYZ", ang, degrees=True).as_matrix()


@dataclass(frozen=True)
class Grid:
    """The working geometry: box n (data voxels), bin factor b, working box w = n // b,
    shift k (working voxels; S = (2k + 1)^3 shifts), window m = w - 2k, mask radius (working
    voxels), low-pass cutoff in cycles per working voxel, working voxel size (A)."""

    n: int
    b: int
    w: int
    k: int
    m: int
    radius: float
    cutoff: float
    voxel: float

    @property
    def shifts(self) -> int:
        return (2 * self.k + 1) ** 3


def working_grid(n: int, voxel: float, lowpass_A: float, max_shift_vox: int,
                 mask_radius_A: float | None) -> Grid:
    """The working geometry for boxes of n^3 voxels of ``voxel`` A (see module docstring);
    ``max_shift_vox`` is in data voxels, ``mask_radius_A`` None = the largest sphere inside the
    search window."""
    b = max([f for f in range(1, n + 1) if n % f == 0 and f <= lowpass_A / (2 * voxel)
             and n // f >= 8] or [1])
    w = n // b
    k = math.ceil(max(0, int(max_shift_vox)) / b)
    m = w - 2 * k
    if m < 4:
        raise ValueError(f"box {n} at bin {b} leaves no search window for shifts of {k}")
    r_max = m / 2 - 0.5
    radius = r_max if mask_radius_A is None else min(r_max, float(mask_radius_A) / (voxel * b))
    cutoff = min(0.5, voxel * b / float(lowpass_A))
    return Grid(n, b, w, k, m, float(radius), float(cutoff), float(voxel * b))


def _lowpass(shape: Sequence[int], cutoff: float) -> torch.Tensor:
    """Raised-cosine low pass on the rfftn grid of ``shape``: 1 below 0.8 cutoff, 0 above."""
    kz, ky, kx = fourier_grid(shape, rfft=True)
    k = np.sqrt(kz ** 2 + ky ** 2 + kx ** 2)
    lo = 0.8 * cutoff
    f = np.where(k <= lo, 1.0, np.where(k >= cutoff, 0.0,
                                        0.5 * (1 + np.cos(np.pi * (k - lo) / (cutoff - lo)))))
    return torch.from_numpy(f.astype(np.float32))


def downsample(vols: np.ndarray | torch.Tensor, grid: Grid) -> torch.Tensor:
    """(B, n, n, n) -> (B, w, w, w) float32: Fourier crop to the working grid and low-pass.
    Voxel n // 2 lands on w // 2 (the origin is kept and b divides n)."""
    v = torch.as_tensor(np.asarray(vols, np.float32))
    n, w = grid.n, grid.w
    f = torch.fft.rfftn(v, dim=(-3, -2, -1))
    if w < n:
        h = w // 2
        idx = torch.cat([torch.arange(0, w - h), torch.arange(n - h, n)])
        f = f.index_select(-3, idx).index_select(-2, idx)[..., : w // 2 + 1]
    f = f * _lowpass((w, w, w), grid.cutoff)
    return torch.fft.irfftn(f, s=(w, w, w), dim=(-3, -2, -1)).float()


def data_transfer(grid: Grid, physics: Mapping | None) -> torch.Tensor:
    """What the data did to a density, on the working rfftn grid (w, w, w // 2 + 1): the
    missing wedge of ``tilt_range`` (tomogram frame) times the CTF (``microscope``: defocus_um,
    voltage_kv, cs_mm, amplitude_contrast; its leading minus makes protein dark) or, without a
    known CTF, -1 for dark particles (``dark``); negated when the boxes were inverted
    (``invert``). physics None: no filter."""
    shape = (grid.w,) * 3
    p = dict(physics) if physics is not None else {
        "tilt_range": None, "microscope": None, "dark": False, "invert": False}
    t = wedge_mask(shape, p["tilt_range"], rfft=True).astype(np.float64)
    mic = p["microscope"]
    if mic:
        kz, ky, kx = fourier_grid(shape, rfft=True)
        k = np.sqrt(kz ** 2 + ky ** 2 + kx ** 2) / grid.voxel
        t = t * ctf_radial(k, float(mic["defocus_um"]), float(mic["voltage_kv"]),
                           float(mic["cs_mm"]), float(mic["amplitude_contrast"]))
    elif p["dark"]:
        t = -t
    if p["invert"]:
        t = -t
    return torch.from_numpy(t.astype(np.float32))


def sphere_mask(m: int, radius: float) -> np.ndarray:
    """(m, m, m) bool: voxels within ``radius`` of voxel m // 2."""
    c = np.arange(m) - m // 2
    return (c[:, None, None] ** 2 + c[None, :, None] ** 2 + c[None, None, :] ** 2) <= radius ** 2


def _normalise(x: torch.Tensor) -> torch.Tensor:
    """Rows (..., M) to zero mean and unit L2 norm (a flat row stays 0)."""
    x = x - x.mean(-1, keepdim=True)
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def particle_windows(boxes_w: torch.Tensor, grid: Grid, mask: np.ndarray) -> torch.Tensor:
    """(P, w, w, w) working boxes -> (P, S, M) normalised masked windows, one per shift
    (window start o in 0..2k per axis: the particle displaced by o - k from the box centre)."""
    m, k = grid.m, grid.k
    sel = torch.from_numpy(mask.reshape(-1))
    wins = []
    for oz in range(2 * k + 1):
        for oy in range(2 * k + 1):
            for ox in range(2 * k + 1):
                win = boxes_w[:, oz:oz + m, oy:oy + m, ox:ox + m].reshape(len(boxes_w), -1)
                wins.append(_normalise(win[:, sel]))
    return torch.stack(wins, 1)


def shift_offsets(grid: Grid) -> np.ndarray:
    """(S, 3) the (dz, dy, dx) shift in working voxels of each window of particle_windows."""
    r = np.arange(-grid.k, grid.k + 1)
    return np.stack(np.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)


def templates_at(dens_w: np.ndarray, rotations: np.ndarray, grid: Grid, transfer: torch.Tensor,
                 mask: np.ndarray) -> torch.Tensor:
    """Rotated, data-filtered, masked, normalised templates.

    Args:
        dens_w: (C, w, w, w) class densities on the working grid (low-passed);
        rotations: (R, 3, 3) active (x, y, z).
    Returns:
        (R, C, M) float32.
    """
    w, m, k = grid.w, grid.m, grid.k
    rot = np.stack([[rotate_volume(d, r) for d in dens_w] for r in rotations])  # (R, C, w^3)
    f = torch.fft.rfftn(torch.from_numpy(rot), dim=(-3, -2, -1)) * transfer
    t = torch.fft.irfftn(f, s=(w, w, w), dim=(-3, -2, -1))[..., k:k + m, k:k + m, k:k + m]
    t = t.reshape(len(rotations), len(dens_w), -1)[..., torch.from_numpy(mask.reshape(-1))]
    return _normalise(t.float())


@dataclass
class MatchResult:
    """Per particle (P) and class (C): peak NCC ``scores`` (P, C), the peak's rotation index
    into ``rotations`` (R, 3, 3) ``rot_index`` (P, C) and its shift ``shift_vox`` (P, C, 3)
    (dz, dy, dx in data voxels)."""

    scores: np.ndarray
    rot_index: np.ndarray
    shift_vox: np.ndarray
    rotations: np.ndarray
    grid: Grid


def match(boxes: np.ndarray, densities: np.ndarray, voxel: float, rotations: np.ndarray,
          lowpass_A: float, max_shift_vox: int = 2, mask_radius_A: float | None = None,
          physics: Mapping | None = None, rotation_batch: int = 32,
          progress: bool = False) -> MatchResult:
    """Template matching of every box against every class density.

    Args:
        boxes: (P, n, n, n) particle boxes at ``voxel`` A; densities: (C, n, n, n) the class
            densities in the same box (unfiltered, positive protein);
        rotations: (R, 3, 3) active (x, y, z) (e.g. :func:`rotation_grid`);
        lowpass_A, max_shift_vox (data voxels), mask_radius_A: see :func:`working_grid`;
        physics: the data's filter (:func:`data_transfer`); rotation_batch: templates made at a
            time (memory ~ P * S * batch * C floats).
    Returns:
        :class:`MatchResult`.
    """
    boxes = np.asarray(boxes, np.float32)
    grid = working_grid(int(boxes.shape[-1]), voxel, lowpass_A, max_shift_vox, mask_radius_A)
    mask = sphere_mask(grid.m, grid.radius)
    with torch.no_grad():
        wins = particle_windows(downsample(boxes, grid), grid, mask)  # (P, S, M)
        P, S, M = wins.shape
        a = wins.reshape(P * S, M)
        dens_w = downsample(densities, grid).numpy()
        transfer = data_transfer(grid, physics)
        C = len(dens_w)
        best = torch.full((P, C), -2.0)
        best_rot = torch.zeros((P, C), dtype=torch.long)
        best_shift = torch.zeros((P, C), dtype=torch.long)
        starts = range(0, len(rotations), max(1, int(rotation_batch)))
        if progress:
            from tqdm import tqdm
            starts = tqdm(starts, desc="template matching", unit="batch", mininterval=10)
        for r0 in starts:
            rots = rotations[r0:r0 + rotation_batch]
            t = templates_at(dens_w, rots, grid, transfer, mask)  # (Rb, C, M)
            cc = (a @ t.reshape(-1, M).T).reshape(P, S, len(rots), C)
            cc, s_idx = cc.max(1)  # best shift (P, Rb, C)
            peak, r_idx = cc.max(1)  # best rotation (P, C)
            better = peak > best
            best = torch.where(better, peak, best)
            best_rot = torch.where(better, r_idx + r0, best_rot)
            best_shift = torch.where(better, s_idx.gather(1, r_idx[:, None]).squeeze(1),
                                     best_shift)
    offs = shift_offsets(grid) * grid.b
    return MatchResult(best.numpy().astype(np.float64), best_rot.numpy(),
                       offs[best_shift.numpy()], np.asarray(rotations, float), grid)
