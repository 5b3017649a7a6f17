"""The missing wedge of a single-axis tilt series, in Fourier space (numpy only).

Geometry (the simulator's, affinity_vae.simulate.tilt): the tilt axis is y (array axis 1); at
tilt angle theta the beam runs along (-sin theta, 0, cos theta) in (x, y, z). By the projection-
slice theorem that tilt samples the Fourier plane spanned by (cos theta, 0, sin theta) and the
y axis, so a Fourier component k = (kx, ky, kz) is measured when the angle
``atan(kz / kx)`` (in (-90, 90] degrees) lies inside the tilt range. Components along ky
(kx = kz = 0) are always measured.

Masks are laid out like ``numpy.fft.fftn`` of a (Z, Y, X) volume (zero frequency at [0, 0, 0]);
``rfft=True`` gives the ``numpy.fft.rfftn`` half (Z, Y, X // 2 + 1).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def fourier_grid(shape_zyx: Sequence[int], rfft: bool = False
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frequencies (cycles/voxel) kz, ky, kx broadcastable to the (r)fftn layout of a volume."""
    nz, ny, nx = (int(s) for s in shape_zyx)
    kz = np.fft.fftfreq(nz).reshape(-1, 1, 1)
    ky = np.fft.fftfreq(ny).reshape(1, -1, 1)
    kx = (np.fft.rfftfreq(nx) if rfft else np.fft.fftfreq(nx)).reshape(1, 1, -1)
    return kz, ky, kx


def wedge_mask(shape_zyx: Sequence[int], tilt_range: Sequence[float] | None,
               rfft: bool = False) -> np.ndarray:
    """1 where a tilt series over ``tilt_range`` (degrees, tilt axis y) samples Fourier space.

    Args:
        shape_zyx: (Z, Y, X) of the volume.
        tilt_range: (first, last) tilt angle in degrees; None = no wedge (all ones).
        rfft: the rfftn half-grid instead of the full fftn grid.
    Returns:
        float32 (Z, Y, X) or (Z, Y, X // 2 + 1) mask of 0 and 1.
    """
    if rfft:   # the non-negative kx half of the (Hermitian-symmetric) full mask
        return wedge_mask(shape_zyx, tilt_range)[..., :int(shape_zyx[2]) // 2 + 1]
    kz, ky, kx = fourier_grid(shape_zyx)
    shape = np.broadcast_shapes(kz.shape, ky.shape, kx.shape)
    if tilt_range is None:
        return np.ones(shape, np.float32)
    lo, hi = sorted(float(t) for t in tilt_range)
    if not -90.0 <= lo < hi <= 90.0:
        raise ValueError(f"tilt range must lie in [-90, 90] with first < last, got {tilt_range}")
    kx_b, kz_b = np.broadcast_to(kx, shape), np.broadcast_to(kz, shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        ang = np.degrees(np.arctan(kz_b / kx_b))          # in (-90, 90); kx = 0 -> +-90 or nan
    ang = np.where(kx_b == 0, 90.0, ang)                   # the beam direction itself
    # +-90 are the same direction; a range reaching either end covers it
    inside = ((ang >= lo) & (ang <= hi)) | ((np.abs(ang) >= 90.0) & ((lo <= -90.0) | (hi >= 90.0)))
    inside |= (kx_b == 0) & (kz_b == 0)                    # the ky axis (and the origin)
    # even sizes: the Nyquist planes hold -k = k (mod n), so make the mask symmetric under
    # k -> -k, or a masked real volume would gain an imaginary part there
    mirror = np.roll(np.flip(inside, axis=(0, 1, 2)), 1, axis=(0, 1, 2))
    return (inside | mirror).astype(np.float32)


def apply_wedge(volumes: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Multiply every volume of (..., Z, Y, X) by a full-grid (Z, Y, X) wedge mask in Fourier
    space; returns float32 of the same shape."""
    spec = np.fft.fftn(volumes, axes=(-3, -2, -1)) * mask
    return np.fft.ifftn(spec, axes=(-3, -2, -1)).real.astype(np.float32)
