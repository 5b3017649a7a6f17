"""Tilt-series imaging and weighted back-projection (numpy/scipy only).

Geometry: the tilt axis is the y axis (array axis 1). At tilt angle theta the beam runs along
(-sin theta, 0, cos theta) in (x, y, z) and a voxel at (x, y, z) lands on detector position
``u = (x - cx) cos theta + (z - cz) sin theta + cu`` (cx = cu = (X - 1) / 2, cz = (Z - 1) / 2),
row y. Projection spreads each voxel over the two nearest detector bins (linear weights), so it
conserves mass; back-projection is its exact adjoint. Both use one sparse matrix for the whole
tilt series, which makes a 100 x 200 x 200 tomogram with 41 tilts take about a second.

Images are stacks (n_tilts, y, u) with u = x at tilt 0 (the detector is as wide as the volume).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from affinity_vae.imaging import ctf_radial, electron_wavelength  # noqa: F401 (re-exported)


def tilt_angles(tilt_range: Sequence[float], tilt_step: float) -> np.ndarray:
    """Tilt angles in degrees from ``tilt_range[0]`` to ``tilt_range[1]`` (inclusive) in steps."""
    lo, hi = float(tilt_range[0]), float(tilt_range[1])
    if not (hi > lo and tilt_step > 0):
        raise ValueError(f"bad tilt range {tilt_range} / step {tilt_step}")
    n = int(np.floor((hi - lo) / tilt_step + 1e-6)) + 1
    return lo + tilt_step * np.arange(n)


def projector(shape_zyx: Sequence[int], angles_deg: np.ndarray) -> sp.csr_matrix:
    """Sparse projection operator of a tilt series.

    Args:
        shape_zyx: (Z, Y, X) of the volume.
        angles_deg: (n,) tilt angles in degrees.
    Returns:
        float32 CSR matrix (n * X, Z * X): row ``a * X + u`` (tilt a, detector bin u), column
        ``z * X + x``; the same for every y row.
    """
    nz, _, nx = (int(s) for s in shape_zyx)
    z, x = np.meshgrid(np.arange(nz), np.arange(nx), indexing="ij")
    cols = (z * nx + x).ravel()
    cx, cz = (nx - 1) / 2, (nz - 1) / 2
    rows_all, cols_all, vals_all = [], [], []
    for a, theta in enumerate(np.radians(np.asarray(angles_deg, dtype=float))):
        u = ((x - cx) * np.cos(theta) + (z - cz) * np.sin(theta) + cx).ravel()
        i0 = np.floor(u).astype(np.int64)
        w = (u - i0).astype(np.float32)
        for idx, val in ((i0, 1 - w), (i0 + 1, w)):
            ok = (idx >= 0) & (idx < nx) & (val > 0)
            rows_all.append(a * nx + idx[ok])
            cols_all.append(cols[ok])
            vals_all.append(val[ok])
    mat = sp.coo_matrix((np.concatenate(vals_all), (np.concatenate(rows_all),
                                                    np.concatenate(cols_all))),
                        shape=(len(angles_deg) * nx, nz * nx), dtype=np.float32)
    return mat.tocsr()


def project(volume: np.ndarray, op: sp.csr_matrix) -> np.ndarray:
    """Line integrals of a (Z, Y, X) volume -> (n_tilts, Y, X) float32 tilt series."""
    nz, ny, nx = volume.shape
    cols = np.ascontiguousarray(volume.transpose(0, 2, 1), dtype=np.float32).reshape(nz * nx, ny)
    proj = op @ cols  # (n * X, Y)
    return np.ascontiguousarray(proj.reshape(-1, nx, ny).transpose(0, 2, 1), dtype=np.float32)


def backproject(stack: np.ndarray, op: sp.csr_matrix, shape_zyx: Sequence[int]) -> np.ndarray:
    """Adjoint of :func:`project`: (n_tilts, Y, X) -> (Z, Y, X) float32 (sum over tilts)."""
    nz, ny, nx = (int(s) for s in shape_zyx)
    rows = np.ascontiguousarray(stack.transpose(0, 2, 1), dtype=np.float32).reshape(-1, ny)
    vol = op.T @ rows  # (Z * X, Y)
    return np.ascontiguousarray(vol.reshape(nz, nx, ny).transpose(0, 2, 1), dtype=np.float32)


@dataclass(frozen=True)
class Microscope:
    """CTF parameters: defocus in micrometres (positive = underfocus), voltage in kV, Cs in mm,
    amplitude contrast as a fraction (the simulate section's keys; no defaults here: they live
    in workflow/schemas/simulate.schema.yaml)."""

    defocus_um: float
    voltage_kv: float
    cs_mm: float
    amplitude_contrast: float


def ctf_2d(shape_yx: Sequence[int], voxel_size: float, mic: Microscope) -> np.ndarray:
    """Image CTF on the ``numpy.fft.rfft2`` grid of a (Y, X) image.

    ``CTF(k) = -(sqrt(1 - A^2) sin chi(k) + A cos chi(k))`` with
    ``chi(k) = pi lambda df k^2 - pi/2 Cs lambda^3 k^4`` (k in 1/Angstrom). The leading minus makes
    a positive density (protein) dark in the image at low resolution, as in real data.

    Returns:
        (Y, X // 2 + 1) float32.
    """
    ny, nx = (int(s) for s in shape_yx)
    ky = np.fft.fftfreq(ny, d=voxel_size)[:, None]
    kx = np.fft.rfftfreq(nx, d=voxel_size)[None, :]
    return ctf_radial(np.sqrt(kx ** 2 + ky ** 2), mic.defocus_um, mic.voltage_kv, mic.cs_mm,
                      mic.amplitude_contrast)


def apply_ctf(stack: np.ndarray, ctf: np.ndarray) -> np.ndarray:
    """Multiply every image of a (n, Y, X) stack by a (Y, X // 2 + 1) CTF in Fourier space."""
    out = np.fft.irfft2(np.fft.rfft2(stack, axes=(-2, -1)) * ctf, s=stack.shape[-2:], axes=(-2, -1))
    return out.astype(np.float32)


def add_noise(stack: np.ndarray, snr: float, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Add white Gaussian noise at ``snr`` = var(stack) / var(noise) over the whole tilt series.

    Returns:
        noisy (n, Y, X) float32 and the noise standard deviation.
    """
    if snr <= 0:
        raise ValueError(f"snr must be positive, got {snr}")
    sigma = float(np.sqrt(np.var(stack, dtype=np.float64) / snr))
    noise = rng.standard_normal(stack.shape, dtype=np.float32) * np.float32(sigma)
    return stack + noise, sigma


def ramp_filter(stack: np.ndarray) -> np.ndarray:
    """Ramp (|k|) weighting along the detector (last) axis, zero-padded against wrap-around."""
    nx = stack.shape[-1]
    npad = 1 << int(np.ceil(np.log2(2 * nx)))
    ramp = np.abs(np.fft.rfftfreq(npad)).astype(np.float32)
    spec = np.fft.rfft(stack, n=npad, axis=-1) * ramp
    return np.fft.irfft(spec, n=npad, axis=-1)[..., :nx].astype(np.float32)


def weighted_backprojection(stack: np.ndarray, op: sp.csr_matrix, angles_deg: np.ndarray,
                            shape_zyx: Sequence[int]) -> np.ndarray:
    """Ramp-weighted back-projection: (n_tilts, Y, X) -> (Z, Y, X) float32.

    Scaled by the tilt step in radians, so a full 180-degree series reconstructs the density's
    amplitude (a +-60 degree series recovers the sampled part of Fourier space).
    """
    step = np.radians(float(np.mean(np.diff(angles_deg)))) if len(angles_deg) > 1 else 1.0
    return backproject(ramp_filter(stack), op, shape_zyx) * np.float32(step)
