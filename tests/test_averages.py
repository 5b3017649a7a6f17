"""Subtomogram averages from pose priors (affinity_vae.evaluate.averages): FSC, resolution,
wedge compensation, and the ordering true poses > predicted poses > random poses."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from affinity_vae.evaluate import averages as av
from affinity_vae.rotation import rotate_volume
from affinity_vae.wedge import apply_wedge, wedge_mask

N_BOX, N_PART, VOXEL = 24, 50, 10.0


def blob_template(n: int = N_BOX, seed: int = 0) -> np.ndarray:
    """An asymmetric density: five Gaussian blobs of different sizes and weights, (n, n, n)."""
    rng = np.random.default_rng(seed)
    idx = np.indices((n,) * 3, dtype=float) - n // 2
    vol = np.zeros((n,) * 3)
    for _ in range(5):
        c, s = rng.uniform(-n / 6, n / 6, 3), rng.uniform(1.2, 2.5)
        vol += rng.uniform(0.5, 1) * np.exp(-((idx - c[:, None, None, None]) ** 2).sum(0)
                                            / (2 * s * s))
    return vol.astype(np.float32)


def particles(template: np.ndarray, n: int, rng: np.random.Generator
              ) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free copies of ``template`` rotated actively by uniform random rotations."""
    rots = Rotation.random(n, random_state=rng).as_matrix()
    return np.stack([rotate_volume(template, r, order=3) for r in rots]), rots


def perturb(rots: np.ndarray, deg: float, rng: np.random.Generator) -> np.ndarray:
    """Each rotation composed with a rotation by ``deg`` degrees about a random axis."""
    axis = rng.standard_normal((len(rots), 3))
    axis /= np.linalg.norm(axis, axis=1, keepdims=True)
    return (Rotation.from_matrix(rots) * Rotation.from_rotvec(np.radians(deg) * axis)).as_matrix()


def resolution_of(avg: np.ndarray, ref: np.ndarray) -> float:
    return av.resolution(*av.fsc(avg, ref), VOXEL)


@pytest.fixture(scope="module")
def clean() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    tpl = blob_template()
    boxes, rots = particles(tpl, N_PART, np.random.default_rng(1))
    return tpl, boxes, rots


def test_fsc_of_a_map_with_itself_is_one():
    vol = blob_template(seed=3)
    freq, curve = av.fsc(vol, vol)
    assert freq.shape == curve.shape == (N_BOX // 2,)
    assert freq[-1] == pytest.approx(0.5)
    np.testing.assert_allclose(curve, 1.0, atol=1e-9)
    # scale free, sign sensitive
    np.testing.assert_allclose(av.fsc(vol, 3 * vol)[1], 1.0, atol=1e-9)
    np.testing.assert_allclose(av.fsc(vol, -vol)[1], -1.0, atol=1e-9)
    assert resolution_of(vol, vol) == pytest.approx(2 * VOXEL)


def test_resolution_interpolates_the_first_crossing():
    freq = np.array([0.1, 0.2, 0.3, 0.4])
    # 0.7 at 0.2 and 0.3 at 0.3: the 0.5 crossing is at 0.25 cycles/voxel -> 40 A at 10 A/voxel
    assert av.resolution(freq, np.array([0.9, 0.7, 0.3, 0.8]), 10.0) == pytest.approx(40.0)
    assert av.resolution(freq, np.array([0.9, 0.8, 0.7, 0.6]), 10.0) == pytest.approx(25.0)
    assert av.resolution(freq, np.array([0.4, 0.8, 0.7, 0.6]), 10.0) == np.inf
    assert av.resolution(freq, np.array([0.9, 0.8, 0.5, 0.1]), 10.0) == pytest.approx(10 / 0.3)


def test_true_rotations_reproduce_the_template(clean):
    tpl, boxes, rots = clean
    freq, curve = av.fsc(av.average(boxes, rots, None), tpl)
    assert curve[freq <= 0.4].min() > 0.95
    assert resolution_of(av.average(boxes, rots, None), tpl) < 1.1 * 2 * VOXEL  # ~ Nyquist


def test_random_rotations_give_a_much_worse_resolution(clean):
    tpl, boxes, rots = clean
    rand = Rotation.random(N_PART, random_state=np.random.default_rng(2)).as_matrix()
    good = resolution_of(av.average(boxes, rots, None), tpl)
    assert resolution_of(av.average(boxes, rand, None), tpl) > 3 * good


def test_perturbed_rotations_give_an_intermediate_resolution(clean):
    tpl, boxes, rots = clean
    rng = np.random.default_rng(3)
    noisy = boxes + rng.standard_normal(boxes.shape).astype(np.float32) * 2 * boxes.std()
    res = {name: resolution_of(av.average(noisy, r, None), tpl) for name, r in
           [("true", rots), ("10deg", perturb(rots, 10.0, rng)),
            ("random", Rotation.random(N_PART, random_state=rng).as_matrix())]}
    assert res["true"] < res["10deg"] < res["random"], res
    assert res["10deg"] < 0.5 * res["random"], res


def test_rotated_wedge_follows_the_box():
    """After un-rotating a wedge-filtered box by R.T its spectrum lives inside the wedge rotated
    by R.T, not inside the wedge rotated the other way or left in place."""
    tpl = blob_template()
    wedge = wedge_mask((N_BOX,) * 3, (-60, 60))
    r = Rotation.from_euler("xyz", [40, 25, 0], degrees=True).as_matrix()
    box = apply_wedge(rotate_volume(tpl, r, order=3)[None], wedge)[0]
    spec = np.abs(np.fft.fftn(rotate_volume(box, r.T, order=3))) ** 2
    k = np.fft.fftfreq(N_BOX) * N_BOX
    rad = np.sqrt(k[:, None, None] ** 2 + k[None, :, None] ** 2 + k[None, None, :] ** 2)
    inside = (rad > 1) & (rad < N_BOX / 2 - 2)

    def leak(mask: np.ndarray) -> float:
        return float(spec[inside & (mask < 0.01)].sum() / spec[inside].sum())

    right = leak(av.rotated_wedge(wedge, r.T))
    assert right < 0.03
    assert leak(av.rotated_wedge(wedge, r)) > 3 * right
    assert leak(wedge) > 3 * right


def test_wedge_compensation_beats_the_plain_mean(clean):
    tpl, boxes, rots = clean
    wedge = wedge_mask((N_BOX,) * 3, (-60, 60))
    wedged = apply_wedge(boxes, wedge)  # every box loses the same microscope-frame wedge
    freq, comp = av.fsc(av.average(wedged, rots, wedge), tpl)
    plain = av.fsc(av.average(wedged, rots, None), tpl)[1]
    band = freq <= 0.4
    assert comp[band].mean() > plain[band].mean()
    assert comp[band].min() > 0.98 > plain[band].min()


def test_density_in_box_crops_and_pads_about_the_centre():
    vol = np.zeros((15, 15, 15), np.float32)
    vol[7, 7, 7], vol[7, 7, 9] = 1.0, 2.0
    big = av.density_in_box(vol, 10.0, 24, 10.0)
    assert big[12, 12, 12] == 1.0 and big[12, 12, 14] == 2.0 and big.sum() == 3.0
    np.testing.assert_array_equal(av.density_in_box(big, 10.0, 15, 10.0), vol)
    half = av.density_in_box(vol, 10.0, 9, 20.0)  # voxels twice as large
    assert half[4, 4, 4] == 1.0 and half[4, 4, 5] == 2.0


def test_class_averages_orders_true_predicted_random(tmp_path):
    rng = np.random.default_rng(4)
    tpl_a, tpl_b = blob_template(seed=0), blob_template(seed=5)
    boxes_a, rots_a = particles(tpl_a, 30, rng)
    boxes_b, rots_b = particles(tpl_b, 30, rng)
    boxes_c, rots_c = particles(tpl_b, 3, rng)
    boxes = np.concatenate([boxes_a, -boxes_b, boxes_c])  # class b has inverted contrast
    boxes += rng.standard_normal(boxes.shape).astype(np.float32) * boxes.std()
    true = np.concatenate([rots_a, rots_b, rots_c])
    labels = ["a"] * 30 + ["b"] * 30 + ["c"] * 3
    wedge = wedge_mask((N_BOX,) * 3, (-60, 60))
    boxes = apply_wedge(boxes, wedge)
    out = av.class_averages(boxes, labels, perturb(true, 10.0, rng), true,
                            {"a": tpl_a, "b": tpl_b, "c": tpl_b}, VOXEL, wedge, rng,
                            min_particles=10)
    assert set(out["metrics"]) == {"a", "b"}  # c has too few particles
    assert out["metrics"]["a"]["sign"] == 1 and out["metrics"]["b"]["sign"] == -1
    for m in out["metrics"].values():
        assert m["n"] == 30
        assert m["resolution_A_true"] <= m["resolution_A_predicted"] < m["resolution_A_random"]
    assert out["curves"]["b"]["true"][:3].min() > 0.9  # the sign was taken care of
    path = tmp_path / "averages.png"
    av.averages_figure(out, path, dpi=60)
    assert path.stat().st_size > 0
