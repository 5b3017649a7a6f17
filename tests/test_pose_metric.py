"""The symmetry-aware 3D pose metric and probes score what they must: 0 for a perfect estimator
(modulo the class's point group and one unknown frame rotation), the random baseline for random
predictions."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from affinity_vae.errors import InputError
from affinity_vae.symmetry import group_rotations, is_axial, is_spherical, parse_point_group


@pytest.mark.parametrize("name,order", [("C1", 1), ("c6", 6), ("D6", 12), ("T", 12), ("O", 24),
                                        ("I", 60), ("I1", 60), ("Dinf", 2)])
def test_point_groups_are_closed_groups_of_proper_rotations(name, order):
    G = group_rotations(name)
    assert G.shape == (order, 3, 3)
    assert np.allclose(np.linalg.det(G), 1.0)
    assert np.allclose(G @ np.swapaxes(G, 1, 2), np.eye(3), atol=1e-12)
    for p in np.einsum("aij,bjk->abik", G, G).reshape(-1, 3, 3):
        assert np.isclose(G, p, atol=1e-9).all((-2, -1)).any()


def test_canonical_axes_follow_relion():
    # Cn about z, the extra 2-fold of Dn about x, 4-folds of O along x, y, z
    for g in group_rotations("C4"):
        assert np.allclose(g @ [0, 0, 1], [0, 0, 1])
    assert any(np.allclose(g, np.diag([1.0, -1, -1])) for g in group_rotations("D3"))
    four = Rotation.from_rotvec(np.pi / 2 * np.eye(3)).as_matrix()
    for f in four:
        assert np.isclose(group_rotations("O"), f, atol=1e-9).all((-2, -1)).any()
    # I (= RELION I2): a 5-fold along (1, 0, phi)
    phi = (1 + 5 ** 0.5) / 2
    five = Rotation.from_rotvec(np.radians(72) * np.array([1, 0, phi]) / np.hypot(1, phi))
    assert np.isclose(group_rotations("I"), five.as_matrix(), atol=1e-9).all((-2, -1)).any()


def test_point_group_names_are_normalised_or_rejected():
    assert [parse_point_group(s) for s in ["c1", "D6", "Cinf", "C∞", "d∞", "i2", "k", " o "]] \
        == ["C1", "D6", "Cinf", "Cinf", "Dinf", "I", "K", "O"]
    assert is_axial("C∞") and is_axial("dinf") and not is_axial("C6")
    assert is_spherical("K") and not is_spherical("C1")
    for bad in ["X5", "D1", "C0", "", "helix"]:
        with pytest.raises(InputError, match="point group"):
            parse_point_group(bad)
