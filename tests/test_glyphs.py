"""The 2D alphanumeric data set: glyphs, their true angles, and the shape affinity."""

from __future__ import annotations

import numpy as np
import pytest

from affinity_vae.config import schema_defaults
from affinity_vae.glyphs import _ncc, glyph_affinity, render_glyph, rotate
from affinity_vae.glyphs import make_dataset as _make_dataset


def make_dataset(chars=None, seed=0, **given):
    """Glyph images as dataset.alphanumeric makes them (the schema's defaults), noise-free and
    unscaled unless ``given`` says otherwise."""
    cfg = {**schema_defaults("dataset")["alphanumeric"], "noise_std": 0.0, "scale_jitter": 0.0,
           **given}
    return _make_dataset(cfg["chars"] if chars is None else chars, cfg["n_per_class"],
                         cfg["size"], cfg["max_angle"], cfg["noise_std"], cfg["scale_jitter"],
                         seed)


def test_glyphs_are_centred_with_holes():
    e = render_glyph("e", 32)
    ys, xs = np.nonzero(e > 0.5)
    assert abs(ys.mean() - 15.5) < 2.5 and abs(xs.mean() - 15.5) < 2.5
    # the counter of 'o' is empty (even-odd fill), its ring is ink
    o = render_glyph("o", 32)
    assert o[16, 16] < 0.05 and o.max() == 1.0


def test_stored_angle_is_the_rotation_of_the_upright_glyph():
    images, table = make_dataset(("a", "2"), n_per_class=6, seed=3)
    for img, (_, row) in zip(images, table.iterrows()):
        upright = render_glyph(row["class"], 32)
        assert _ncc(rotate(upright, row["angle"]), img) > 0.99
        if abs(row["angle"]) > 10:  # the opposite sense is a different image
            assert _ncc(rotate(upright, -row["angle"]), img) < 0.95


def test_angles_are_integers_strictly_inside_the_range():
    _, table = make_dataset(n_per_class=50, max_angle=45, seed=0)
    assert table["angle"].between(-44, 44).all()
    assert (table["angle"] == table["angle"].round()).all()
    assert table["angle"].std() > 20  # spread over the range, not a constant


def test_dataset_is_deterministic_and_noise_has_the_configured_std():
    a, ta = make_dataset(("u", "v"), n_per_class=5, noise_std=0.3, seed=1)
    b, tb = make_dataset(("u", "v"), n_per_class=5, noise_std=0.3, seed=1)
    clean, _ = make_dataset(("u", "v"), n_per_class=5, seed=1)
    assert np.array_equal(a, b) and ta.equals(tb)
    assert (a - clean).std() == pytest.approx(0.3, rel=0.05)


def test_affinity_is_a_valid_matrix_with_the_papers_pairings():
    aff = glyph_affinity(("b", "d", "i", "j", "u", "v"), 32, angle_step=5)
    m = aff.to_numpy()
    assert np.allclose(m, m.T) and np.allclose(np.diag(m), 1) and m.min() >= 0 and m.max() <= 1
    # near-twins are closer than unrelated glyphs, and v's most affine class is u
    assert aff.loc["b", "d"] > aff.loc["b", "i"]
    assert aff.loc["i", "j"] > aff.loc["i", "u"]
    assert aff.loc["v"].drop("v").idxmax() == "u"


def test_rotated_glyph_has_affinity_one_with_itself():
    aff = glyph_affinity(("z",), 32, angle_step=5)
    assert aff.loc["z", "z"] == 1.0
    upright = render_glyph("z", 32)
    assert max(_ncc(upright, rotate(rotate(upright, 30), -a)) for a in range(0, 60, 5)) > 0.98
