"""One rotation centre everywhere, and the missing wedge where the simulator puts it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from affinity_vae.data import rotate_volumes
from affinity_vae.rotation import rotate_volume
from affinity_vae.simulate import tilt
from affinity_vae.wedge import apply_wedge, wedge_mask


def _blobs(n: int, seed: int = 0) -> np.ndarray:
    """An asymmetric smooth object (3 Gaussians) centred near voxel n // 2: (n, n, n)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[:n, :n, :n].astype(float) - n // 2
    vol = np.zeros((n, n, n))
    for c, s in zip(rng.uniform(-n / 5, n / 5, (3, 3)), (1.5, 2.0, 2.5)):
        vol += np.exp(-((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2) / (2 * s * s))
    return vol.astype(np.float32)


@pytest.mark.parametrize("n", [24, 25])
def test_torch_rotation_matches_numpy_about_the_same_centre(n):
    vol = _blobs(n)
    rots = Rotation.random(3, random_state=1).as_matrix()
    out = rotate_volumes(torch.from_numpy(np.stack([vol] * 3))[:, None],
                         torch.from_numpy(rots).float())[:, 0].numpy()
    for got, r in zip(out, rots):
        ref = rotate_volume(vol, r, order=1)
        # float32 sampling coordinates and scipy's edge rule differ by < 0.5 % of the peak
        assert np.abs(got - ref).max() < 5e-3 * vol.max()
        assert np.corrcoef(got.ravel(), ref.ravel())[0, 1] > 0.99999


def test_torch_rotation_keeps_the_centre_voxel_fixed():
    """A point at voxel n // 2 stays there under any rotation (even box: not (n - 1) / 2)."""
    n = 16
    vol = np.zeros((n, n, n), np.float32)
    vol[n // 2, n // 2, n // 2] = 1
    rot = torch.from_numpy(Rotation.random(1, random_state=2).as_matrix()).float()
    out = rotate_volumes(torch.from_numpy(vol)[None, None], rot)[0, 0].numpy()
    assert np.unravel_index(out.argmax(), out.shape) == (n // 2,) * 3
    assert out.max() == pytest.approx(1.0, abs=1e-5)


def test_wedge_mask_is_where_a_simulated_tilt_series_has_signal():
    """A point reconstructed from a +-45 degree tilt series has its Fourier power inside the
    mask and (almost) none outside it; the mask's sign convention follows the projector."""
    n = 32
    vol = np.zeros((n, n, n), np.float32)
    vol[n // 2, n // 2, n // 2] = 1
    angles = tilt.tilt_angles((-30, 50), 2.0)       # asymmetric: a sign error would show
    op = tilt.projector(vol.shape, angles)
    rec = tilt.weighted_backprojection(tilt.project(vol, op), op, angles, vol.shape)
    power = np.abs(np.fft.fftn(rec)) ** 2
    mask = wedge_mask(vol.shape, (-30, 50)).astype(bool)
    k = np.sqrt(sum(g ** 2 for g in np.meshgrid(*(np.fft.fftfreq(n),) * 3, indexing="ij")))
    band = (k > 0.05) & (k < 0.4)                  # away from the origin and the corners
    inside, outside = power[band & mask].mean(), power[band & ~mask].mean()
    assert outside < 0.05 * inside
    flipped = wedge_mask(vol.shape, (-50, 30)).astype(bool)
    assert power[band & flipped & ~mask].mean() < 0.05 * inside


def test_wedge_mask_full_range_and_projection():
    assert wedge_mask((8, 8, 8), (-90, 90)).all()
    assert wedge_mask((8, 8, 8), None).all()
    m = wedge_mask((16, 16, 16), (-60, 60))
    assert 0.6 < m.mean() < 0.75                    # 120 of 180 degrees, minus the grid
    vol = _blobs(16)
    once = apply_wedge(vol, m)
    assert np.allclose(apply_wedge(once, m), once, atol=1e-5)   # a projection
    m24 = wedge_mask((24, 24, 24), (-60, 60))       # Hermitian: symmetric under k -> -k
    assert np.array_equal(m24, np.roll(np.flip(m24), 1, axis=(0, 1, 2)))
    assert np.array_equal(wedge_mask((24, 24, 24), (-60, 60), rfft=True), m24[..., :13])
    with pytest.raises(ValueError, match="tilt range"):
        wedge_mask((8, 8, 8), (60, -60 + 200))
