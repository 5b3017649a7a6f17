"""The GMD renders about the extraction centre, and its physics forward model is the simulator's
imaging (CTF + missing wedge) in the reconstruction."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from affinity_vae.errors import InputError
from affinity_vae.imaging import FORWARD_MODELS, ctf_radial, forward_transfer
from affinity_vae.model import gmd
from affinity_vae.model.decoders import GMDDecoder
from affinity_vae.rotation import rotate_volume
from affinity_vae.simulate import tilt
from affinity_vae.wedge import wedge_mask

torch.set_num_threads(1)

PHYSICS = {"tilt_range": [-30.0, 50.0], "voxel_size": 10.0, "defocus_um": 3.0,
           "voltage_kv": 300.0, "cs_mm": 2.7, "amplitude_contrast": 0.07, "invert": False}


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def _mixture(n: int, seed: int = 0):
    """A fixed asymmetric mixture of 6 Gaussians (1 - 1.5 voxels wide) near the box centre."""
    g = torch.Generator().manual_seed(seed)
    u = gmd.grid_unit((n, n, n))
    c = (torch.rand(1, 6, 3, generator=g, dtype=torch.float64) - 0.5)
    s = (1.0 + 0.5 * torch.rand(1, 6, generator=g, dtype=torch.float64)) * u
    return c, s, torch.ones(1, 6, dtype=torch.float64)


@pytest.mark.parametrize("n", [16, 17, 32, 33])
def test_rendering_at_a_rotation_is_the_rotated_render(n):
    """Rotating the centroids = rotating the rendered volume about voxel n // 2 (the centre of
    extraction and rotate_volume); with the old grid centre (n - 1) / 2 this was 0.71 at n = 32."""
    c, s, w = _mixture(n)
    base = gmd.render(c, s, w, (n, n, n))[0].numpy()
    for rot in Rotation.random(3, random_state=0).as_matrix():
        turned = gmd.render(gmd.rotate(c, torch.from_numpy(rot)[None]), s, w, (n, n, n))[0]
        assert _corr(turned.numpy(), rotate_volume(base, rot, order=1)) >= 0.99


@pytest.mark.parametrize("shape", [(16, 16, 16), (15, 15, 15), (12, 16), (13, 13)])
def test_grid_origin_is_the_centre_voxel_with_one_unit_per_axis(shape):
    one = torch.zeros(1, 1, len(shape), dtype=torch.float64)
    img = gmd.render(one, torch.full((1, 1), 0.05), torch.ones(1, 1), shape)[0]
    assert np.unravel_index(int(img.argmax()), img.shape) == tuple(s // 2 for s in shape)
    assert gmd.grid_unit(shape) == 1 / (max(shape) // 2)
    ax = gmd.grid_axis(shape[-1], gmd.grid_unit(shape), dtype=torch.float64)
    assert torch.allclose(ax.diff(), torch.full_like(ax[1:], gmd.grid_unit(shape)))


def test_radial_ctf_is_the_simulators_image_ctf():
    """One formula: ctf_radial at |k| of the rfft2 grid equals the simulator's ctf_2d."""
    mic = tilt.Microscope(defocus_um=2.5, voltage_kv=200.0, cs_mm=2.0, amplitude_contrast=0.1)
    shape, vs = (24, 30), 4.0
    k = np.sqrt(np.fft.fftfreq(shape[0], vs)[:, None] ** 2 + np.fft.rfftfreq(shape[1], vs) ** 2)
    ours = ctf_radial(k, mic.defocus_um, mic.voltage_kv, mic.cs_mm, mic.amplitude_contrast)
    np.testing.assert_allclose(ours, tilt.ctf_2d(shape, vs, mic), atol=1e-6)
    assert ours[0, 0] == pytest.approx(-0.1)     # protein dark at low resolution


def test_forward_model_predicts_the_simulated_reconstruction():
    """A blob imaged like the simulator (CTF per tilt image, +-tilt series, weighted back-
    projection) is what the ctf_wedge forward model makes of it: correlation 0.98 (measured),
    against -0.64 without a forward model and -0.79 with the wedge alone."""
    n = 32
    z, y, x = np.mgrid[:n, :n, :n].astype(float) - n // 2
    rng = np.random.default_rng(0)
    vol = np.zeros((n, n, n))
    for cen, s in zip(rng.uniform(-5, 5, (4, 3)), (1.5, 2.0, 2.5, 1.8)):
        vol += np.exp(-((x - cen[0]) ** 2 + (y - cen[1]) ** 2 + (z - cen[2]) ** 2) / (2 * s * s))
    vol = vol.astype(np.float32)
    mic = tilt.Microscope(PHYSICS["defocus_um"], PHYSICS["voltage_kv"], PHYSICS["cs_mm"],
                          PHYSICS["amplitude_contrast"])
    angles = tilt.tilt_angles(PHYSICS["tilt_range"], 2.0)
    op = tilt.projector(vol.shape, angles)
    images = tilt.apply_ctf(tilt.project(vol, op), tilt.ctf_2d((n, n), PHYSICS["voxel_size"], mic))
    rec = tilt.weighted_backprojection(images, op, angles, vol.shape)
    scores = {}
    for mode in FORWARD_MODELS:
        transfer = forward_transfer((n, n, n), mode, PHYSICS)
        pred = vol if transfer is None else gmd.apply_transfer(
            torch.from_numpy(vol), torch.from_numpy(transfer)).numpy()
        scores[mode] = _corr(pred, rec)
    assert scores["ctf_wedge"] > 0.95, scores
    assert scores["none"] < 0 and scores["wedge"] < 0, scores   # the CTF inverts the contrast
    inverted = forward_transfer((n, n, n), "ctf_wedge", {**PHYSICS, "invert": True})
    assert np.array_equal(inverted, -forward_transfer((n, n, n), "ctf_wedge", PHYSICS))


def test_forward_transfer_is_zero_outside_the_wedge():
    box = (16, 18, 20)
    wedge = forward_transfer(box, "wedge", PHYSICS)
    np.testing.assert_array_equal(wedge, wedge_mask(box, PHYSICS["tilt_range"], rfft=True))
    full = forward_transfer(box, "ctf_wedge", PHYSICS)
    assert full.shape == (16, 18, 11)
    assert not full[wedge == 0].any() and full[wedge == 1].std() > 0.1
    assert forward_transfer(box, "none", None) is None


@pytest.mark.parametrize("mode,physics,box,match", [
    ("ctf", PHYSICS, (8, 8, 8), "unknown value"),
    ("wedge", {**PHYSICS, "tilt_range": None}, (8, 8, 8), "tilt_range"),
    ("ctf_wedge", {**PHYSICS, "defocus_um": None}, (8, 8, 8), "defocus_um"),
    ("ctf_wedge", None, (8, 8, 8), "tilt_range, voxel_size"),
    ("wedge", PHYSICS, (8, 8), "3D boxes"),
])
def test_bad_forward_settings_are_one_line_input_errors(mode, physics, box, match):
    with pytest.raises(InputError, match=match) as err:
        GMDDecoder(box, 4, len(box) == 3 and 4 or 1, n_gaussians=4, hidden=8, forward=mode,
                   physics=physics)
    assert "\n" not in str(err.value) and "gmd_forward" in str(err.value)


def test_decoder_output_carries_the_wedge_and_state_dict_is_unchanged():
    """Apart from the learnable offset (zero frequency), a ctf_wedge decoder's output has no
    Fourier power outside the microscope-frame wedge, at any pose; its weights are the plain
    decoder's (the transfer is derived from the config, not saved)."""
    torch.manual_seed(0)
    box = (16, 16, 16)
    dec = GMDDecoder(box, 4, 4, n_gaussians=16, hidden=16, forward="ctf_wedge", physics=PHYSICS)
    plain = GMDDecoder(box, 4, 4, n_gaussians=16, hidden=16)
    assert dec.state_dict().keys() == plain.state_dict().keys()
    with torch.no_grad():
        out = dec(torch.randn(3, 4), torch.randn(3, 4))[:, 0].double()
    power = torch.fft.rfftn(out - out.mean(dim=(1, 2, 3), keepdim=True), dim=(1, 2, 3)).abs() ** 2
    outside = torch.from_numpy(wedge_mask(box, PHYSICS["tilt_range"], rfft=True)) == 0
    assert power[:, outside].sum() < 1e-6 * power.sum()   # float32 round-off


@pytest.mark.parametrize("mode", FORWARD_MODELS)
def test_untrained_decoder_starts_nearly_flat_with_any_forward_model(mode):
    """The first output std stays ~0.05 (0.01 - 0.2) with a forward model: the CTF damps the
    low frequencies a mixture lives in (6x without the gain correction of the initial scale)."""
    torch.manual_seed(0)
    dec = GMDDecoder((32, 32, 32), 8, 4, n_gaussians=256, forward=mode, physics=PHYSICS)
    with torch.no_grad():
        out = dec(torch.randn(4, 8), torch.zeros(4, 4))
    assert 0.02 < out.std().item() < 0.2
