"""Training augmentation rotates about the box centre voxel n // 2 (like extraction and
rotation.rotate_volume) and can give rotated boxes back the microscope-frame missing wedge."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from affinity_vae.data import (
    CUBE_ROTATIONS,
    SQUARE_ROTATIONS,
    _permute_reflect,
    augment,
    impose_wedge,
    reflect_about_centre,
    training_wedge,
)
from affinity_vae.rotation import rotate_volume
from affinity_vae.wedge import apply_wedge, wedge_mask

torch.set_num_threads(1)


def _signed_permutations() -> list[np.ndarray]:
    """The 48 signed permutation matrices of (x, y, z)."""
    out = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1, -1), repeat=3):
            out.append(np.eye(3)[list(perm)] * np.array(signs)[:, None])
    return out


def _matching_rotation(before: np.ndarray, after: np.ndarray) -> list[np.ndarray]:
    """Signed permutation matrices R with rotate_volume(before, R) == after (about n // 2)."""
    return [r for r in _signed_permutations()
            if np.allclose(rotate_volume(before, r, order=1), after, atol=1e-5)]


@pytest.mark.parametrize("n", [6, 7])
def test_rot90_elements_are_the_24_proper_rotations_about_the_centre_voxel(n):
    """Each of the 24 elements is exactly rotate_volume by one proper 90-degree rotation about
    voxel n // 2 (even and odd n), and the 24 are distinct."""
    rng = np.random.default_rng(0)
    vol = rng.normal(size=(n, n, n)).astype(np.float32)
    x = torch.from_numpy(vol)[None, None]
    found, elements = [], []
    for g in range(len(CUBE_ROTATIONS)):
        out = _permute_reflect(x, *CUBE_ROTATIONS[g])[0, 0].numpy()
        match = _matching_rotation(vol, out)
        assert len(match) == 1, (g, len(match))
        found.append(match[0])
        elements.append(out)
    assert all(np.isclose(np.linalg.det(r), 1.0) for r in found)
    assert len({r.astype(int).tobytes() for r in found}) == 24
    batch = augment(x.repeat(48, 1, 1, 1, 1), "rot90", torch.Generator().manual_seed(0))
    drawn = {next(g for g, e in enumerate(elements) if np.array_equal(b[0].numpy(), e))
             for b in batch}
    assert len(drawn) > 16                            # augment draws from these 24


@pytest.mark.parametrize("n", [8, 9])
def test_rot90_keeps_a_point_at_the_centre_voxel(n):
    vol = torch.zeros(64, 1, n, n, n)
    vol[:, 0, n // 2, n // 2, n // 2] = 1
    out = augment(vol, "rot90", torch.Generator().manual_seed(0))
    assert torch.equal(out, vol)                      # every element fixes the centre voxel
    img = torch.zeros(16, 1, n, n)
    img[:, 0, n // 2, n // 2] = 1
    assert torch.equal(augment(img, "rot90", torch.Generator().manual_seed(0)), img)
    assert len(SQUARE_ROTATIONS) == 4


def test_2d_rot90_elements_are_the_four_quarter_turns_about_the_centre():
    n = 8
    img = torch.zeros(1, 1, n, n)
    img[0, 0, n // 2 - 3, n // 2] = 1                  # 3 pixels above the centre
    outs = {tuple(np.argwhere(augment(img, "rot90", torch.Generator().manual_seed(s))[0, 0]
                              .numpy())[0]) for s in range(40)}
    c = n // 2
    assert outs == {(c - 3, c), (c + 3, c), (c, c - 3), (c, c + 3)}


def test_wedge_mode_is_the_four_half_turns_about_the_centre_voxel():
    """mode wedge: identity or a 180-degree turn about z, y or x, about voxel n // 2 on every
    axis of a non-cubic box (even and odd sides)."""
    rng = np.random.default_rng(1)
    vol = rng.normal(size=(4, 5, 6)).astype(np.float32)
    y = augment(torch.from_numpy(vol)[None, None].repeat(32, 1, 1, 1, 1), "wedge",
                torch.Generator().manual_seed(1))
    allowed = [rotate_volume(vol, np.diag(d), order=1)
               for d in ([1, 1, 1], [-1, -1, 1], [-1, 1, -1], [1, -1, -1])]
    got = [next(k for k, a in enumerate(allowed) if np.allclose(y[i, 0].numpy(), a, atol=1e-6))
           for i in range(32)]
    assert set(got) == {0, 1, 2, 3}


def test_reflection_about_the_centre_voxel():
    x = torch.arange(6.0).view(1, 6)
    assert reflect_about_centre(x, [1]).tolist() == [[0.0, 5.0, 4.0, 3.0, 2.0, 1.0]]  # i -> 6 - i
    x = torch.arange(5.0).view(1, 5)
    assert reflect_about_centre(x, [1]).tolist() == [[4.0, 3.0, 2.0, 1.0, 0.0]]       # i -> 4 - i


@pytest.mark.parametrize("n", [16, 17])
def test_any_rotates_about_the_centre_voxel(n):
    vol = torch.zeros(8, 1, n, n, n)
    vol[:, 0, n // 2, n // 2, n // 2] = 1
    out = augment(vol, "any", torch.Generator().manual_seed(3))
    flat = out.view(8, -1).argmax(dim=1)
    centre = (n // 2) * n * n + (n // 2) * n + n // 2
    assert (flat == centre).all()


def _blobs(n: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    z, y, x = np.mgrid[:n, :n, :n].astype(float) - n // 2
    vol = np.zeros((n, n, n))
    for c, s in zip(rng.uniform(-n / 5, n / 5, (4, 3)), (1.2, 1.5, 2.0, 1.0)):
        vol += np.exp(-((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2) / (2 * s * s))
    return vol.astype(np.float32)


def test_rotated_box_gets_the_microscope_frame_wedge_back():
    """A box with the missing wedge of an asymmetric tilt series, rotated by `any`, has much
    power outside the microscope-frame wedge (its wedge turned with it); with the wedge
    re-imposed it has none, and it keeps the power inside."""
    n, tilt_range = 24, (-40, 55)
    mask = wedge_mask((n, n, n), tilt_range)
    box = torch.from_numpy(apply_wedge(_blobs(n), mask))[None, None].repeat(6, 1, 1, 1, 1)
    wedge = training_wedge((n, n, n), tilt_range)
    outside = torch.from_numpy(mask == 0)

    def power_outside(v: torch.Tensor) -> float:
        p = torch.fft.fftn(v[:, 0].double(), dim=(1, 2, 3)).abs() ** 2
        return float(p[:, outside].sum() / p.sum())

    plain = augment(box, "any", torch.Generator().manual_seed(0))
    rewedged = augment(box, "any", torch.Generator().manual_seed(0), wedge)
    assert power_outside(box) < 1e-8            # float32 round-off
    assert power_outside(plain) > 0.05
    # 6e-6, not 0: for even n wedge_mask is not symmetric under k -> -k on the Nyquist plane
    # kz = -1/2 (192 of 13824 voxels at n = 24), and the real part of the product drops that
    assert power_outside(rewedged) < 1e-4
    assert float((rewedged - plain).pow(2).sum() / plain.pow(2).sum()) < 0.5
    for mode in ("rot90", "wedge"):       # every rotating mode re-imposes it
        assert power_outside(augment(box, mode, torch.Generator().manual_seed(0), wedge)) < 1e-4
    assert torch.equal(augment(box, "none", torch.Generator(), wedge), box)


def test_training_wedge_only_for_3d_data_with_a_known_tilt_range():
    assert training_wedge((8, 8, 8), None) is None
    assert training_wedge((8, 8), (-60, 60)) is None
    assert training_wedge((8, 8, 8), (-60, 60), enabled=False) is None
    w = training_wedge((8, 10, 12), (-60, 60))
    assert w.shape == (8, 10, 12) and set(w.unique().tolist()) == {0.0, 1.0}
    x = torch.randn(2, 1, 8, 10, 12)
    once = impose_wedge(x, w)
    assert torch.allclose(impose_wedge(once, w), once, atol=1e-5)   # a projection


def test_augmentation_is_seeded():
    x = torch.randn(5, 1, 8, 8, 8)
    for mode in ("wedge", "rot90", "any"):
        a = augment(x, mode, torch.Generator().manual_seed(4))
        b = augment(x, mode, torch.Generator().manual_seed(4))
        assert torch.equal(a, b)
