"""The symmetry-aware 3D pose metric and probes score what they must: 0 for a perfect estimator
(modulo the class's point group and one unknown frame rotation), the random baseline for random
predictions."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from affinity_vae.errors import InputError
from affinity_vae.evaluate import pose
from affinity_vae.symmetry import (
    group_rotations,
    is_axial,
    is_spherical,
    parse_point_group,
)


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


# --- the pose metric -------------------------------------------------------------------------

def _truth(n: int, seed: int) -> np.ndarray:
    return Rotation.random(n, random_state=seed).as_matrix()


def _perfect_modulo_symmetry(true: np.ndarray, group: str, rng: np.random.Generator
                             ) -> tuple[np.ndarray, np.ndarray]:
    """Predictions with true = pred @ Q @ g_i: a constant unknown frame Q and a random symmetry
    element g_i per particle (for axial groups also a random spin about z)."""
    G = group_rotations(group)
    g = G[rng.integers(len(G), size=len(true))]
    if is_axial(group):
        spin = Rotation.from_euler("z", rng.uniform(0, 360, (len(true), 1)), degrees=True)
        g = spin.as_matrix() @ g
    q = Rotation.random(random_state=rng).as_matrix()
    return true @ np.swapaxes(g, 1, 2) @ q.T, q


def _masks(n: int, n_fit: int) -> tuple[np.ndarray, np.ndarray]:
    fit = np.arange(n) < n_fit
    return fit, ~fit


def _uniform_baseline(group: str, n: int = 20000) -> float:
    """The median symmetric error of independent uniform rotations (Monte Carlo)."""
    return float(np.median(pose.symmetric_error(_truth(n, 11), _truth(n, 12), group)))


@pytest.mark.parametrize("group", ["C1", "D6", "T", "O", "Dinf", "Cinf", "I"])
def test_perfect_modulo_symmetry_scores_zero(group):
    rng = np.random.default_rng(0)
    true = _truth(200, 1)
    pred, _ = _perfect_modulo_symmetry(true, group, rng)
    fit, score = _masks(200, 120)
    res = pose.pose_scores(pred, true, ["a"] * 200, {"a": group}, fit, score, rng)
    assert res["median_error_deg"] < 1e-6 and np.nanmax(res["errors"]) < 1e-6
    assert res["frac_under_15"] == 1.0 and res["per_class"]["a"]["group"] == group
    assert res["true_median_error_deg"] < 1e-6
    # the same predictions scored symmetry-blind (as C1) are far from perfect
    if group != "C1":
        blind = pose.pose_scores(pred, true, ["a"] * 200, {"a": "C1"}, fit, score, rng)
        assert blind["median_error_deg"] > 20


def test_fit_frame_recovers_a_known_offset():
    rng = np.random.default_rng(3)
    true = _truth(300, 4)
    for group in ["C1", "O"]:
        pred, q = _perfect_modulo_symmetry(true, group, rng)
        q_fit = pose.fit_frame(pred, true, group)
        # Q is defined up to right-multiplication by G
        assert pose.symmetric_error(q_fit[None], q[None], group)[0] < 1e-6
    # robust: 5 deg noise on 60 % of the particles, the other 40 % random
    noise = Rotation.from_rotvec(rng.normal(0, np.radians(5), (300, 3))).as_matrix()
    pred, q = _perfect_modulo_symmetry(true @ noise, "D6", rng)
    bad = rng.random(300) < 0.4
    pred[bad] = _truth(int(bad.sum()), 5)
    q_fit = pose.fit_frame(pred, true, "D6")
    assert pose.symmetric_error(q_fit[None], q[None], "D6")[0] < 2.0


@pytest.mark.parametrize("group", ["C1", "O"])
def test_random_predictions_score_the_random_baseline(group):
    rng = np.random.default_rng(5)
    n = 600
    true = _truth(n, 6)
    fit, score = _masks(n, 300)
    res = pose.pose_scores(_truth(n, 7), true, ["a"] * n, {"a": group}, fit, score, rng)
    expect = _uniform_baseline(group)
    assert abs(res["median_error_deg"] - expect) < 12
    assert abs(res["random_median_error_deg"] - expect) < 6  # 4 draws pooled
    assert res["true_median_error_deg"] < 1e-6
    if group == "C1":  # Haar measure: median of the angle theta - sin(theta) = pi/2: 132.3 deg
        assert abs(expect - 132.3) < 2 and res["asymmetric"]["random_median_error_deg"] > 120
    else:
        assert expect < 50 and res["asymmetric"]["n"] == 0


def test_axial_classes_ignore_spin_and_dinf_the_axis_sign():
    rng = np.random.default_rng(8)
    true = _truth(50, 9)
    spin = Rotation.from_euler("z", rng.uniform(0, 360, (50, 1)), degrees=True).as_matrix()
    assert np.allclose(pose.symmetric_error(true @ spin, true, "Cinf"), 0, atol=1e-6)
    flip = np.diag([1.0, -1.0, -1.0])  # 2-fold about x: the axis turns over
    assert np.allclose(pose.symmetric_error(true @ flip, true, "Dinf"), 0, atol=1e-6)
    assert np.allclose(pose.symmetric_error(true @ flip, true, "Cinf"), 180, atol=1e-6)
    tilt = Rotation.from_euler("x", 20, degrees=True).as_matrix()
    assert np.allclose(pose.symmetric_error(true @ tilt, true, "Cinf"), 20, atol=1e-6)
    assert np.isnan(pose.symmetric_error(true, true, "K")).all()


def test_spherical_classes_are_skipped_and_classes_scored_separately():
    rng = np.random.default_rng(10)
    n = 240
    true = _truth(n, 11)
    labels = np.array(["asym", "oct", "ball"] * (n // 3))
    groups = {"asym": "C1", "oct": "O", "ball": "K"}
    pred = true.copy()
    for c in ["asym", "oct"]:
        m = labels == c
        pred[m] = _perfect_modulo_symmetry(true[m], groups[c], rng)[0]
    fit, score = _masks(n, 150)
    res = pose.pose_scores(pred, true, labels, groups, fit, score, rng)
    assert set(res["per_class"]) == {"asym", "oct"} and "ball" in res["skipped"]
    assert res["median_error_deg"] < 1e-6 and res["asymmetric"]["median_error_deg"] < 1e-6
    assert res["per_class"]["oct"]["random_median_error_deg"] < 50
    assert res["per_class"]["asym"]["random_median_error_deg"] > 110


# --- the probes ------------------------------------------------------------------------------

@pytest.mark.parametrize("group", ["C1", "D6", "Cinf"])
def test_knn_probe_reads_orientation_from_informative_features_only(group):
    n = 1200
    true = _truth(n, 13)
    labels = ["a"] * n
    fit, score = _masks(n, 1000)
    six = true[:, :, :2].reshape(n, 6)  # the 6D representation of the true rotation
    informed = pose.probe_scores(six, true, labels, {"a": group}, fit, score)
    noise = np.random.default_rng(14).standard_normal((n, 6))
    blind = pose.probe_scores(noise, true, labels, {"a": group}, fit, score)
    assert informed < 15
    assert abs(blind - _uniform_baseline(group)) < 15


def test_symmetric_representative_averages_modulo_the_group():
    rng = np.random.default_rng(15)
    r = _truth(1, 16)[0]
    G = group_rotations("T")
    small = Rotation.from_rotvec(rng.normal(0, 0.01, (5, 3))).as_matrix()
    mats = r @ small @ G[rng.integers(12, size=5)]  # the same rotation under 5 symmetry labels
    mean = pose.symmetric_representative(mats, "T")
    assert pose.symmetric_error(mean[None], r[None], "T")[0] < 1.5


# --- export ----------------------------------------------------------------------------------

def test_star_angles_are_in_the_structure_frame_and_match_the_pipeline_convention():
    import pandas as pd

    from affinity_vae.rotation import relion_to_matrix

    rng = np.random.default_rng(17)
    true = _truth(20, 18)
    pred, _ = _perfect_modulo_symmetry(true, "C1", rng)
    q = pose.fit_frame(pred, true, "C1")
    lat = pd.DataFrame({"tomogram": "t", "x": 0.0, "y": 0.0, "z": 0.0, "class": ["a"] * 20,
                        "split": "test"})
    table = pose.pose_star_table(lat, pred, None, {"a": q})
    ang = table[["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]].to_numpy()
    assert np.allclose(relion_to_matrix(ang), true, atol=1e-6)
    assert np.allclose(ang, table[["rlnAngleRotPrior", "rlnAngleTiltPrior",
                                   "rlnAnglePsiPrior"]].to_numpy())


def test_pose_star_axis_angle_is_the_exported_rotation():
    """The paper's axis-angle columns of poses.star describe the same rotation as its RELION
    angles (both in the structure frame when the class frame Q is known)."""
    import pandas as pd

    from affinity_vae.evaluate.pose import pose_star_table
    from affinity_vae.rotation import relion_to_matrix
    rot = Rotation.random(6, random_state=3).as_matrix()
    q = Rotation.random(random_state=4).as_matrix()
    lat = pd.DataFrame({"tomogram": "t", "x": 0.0, "y": 0.0, "z": 0.0,
                        "class": ["a"] * 3 + ["b"] * 3, "split": "test"})
    t = pose_star_table(lat, rot, frames={"a": q})
    aa = t[["avaeRotationAxisX", "avaeRotationAxisY", "avaeRotationAxisZ"]].to_numpy()
    from_aa = Rotation.from_rotvec(aa * np.radians(t[["avaeRotationAngleDeg"]].to_numpy())
                                   ).as_matrix()
    from_relion = relion_to_matrix(t[["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]].to_numpy())
    assert np.allclose(from_aa, from_relion, atol=1e-6)
    assert np.allclose(from_aa[:3], rot[:3] @ q, atol=1e-6)
    assert np.allclose(from_aa[3:], rot[3:], atol=1e-6)
