"""Facts about the Affinity-VAE model: loss terms, rotations, the GMD renderer, schedules, I/O."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from affinity_vae.config import schema_defaults
from affinity_vae.errors import InputError
from affinity_vae.model import (
    AffinityVAE,
    gmd,
    load_trained,
    losses,
    save_trained,
    schedules,
)

torch.set_num_threads(1)


def _vae(cfg: dict, box: tuple[int, ...]) -> AffinityVAE:
    """A model from the schema's config section ``model`` with ``cfg`` given."""
    return AffinityVAE(schema_defaults("model", cfg), box)


def test_affinity_loss_hand_computed():
    mu = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    labels = torch.tensor([0, 1, 0])
    A = torch.tensor([[1.0, 0.5], [0.5, 1.0]])
    # cos(0,1) = 0 vs A 0.5; cos(0,2) = 1/sqrt2 vs A 1; cos(1,2) = 1/sqrt2 vs A 0.5
    r = 1 / math.sqrt(2)
    expected = (0.5 + (1 - r) + (r - 0.5)) / 3
    assert losses.affinity_loss(mu, labels, A).item() == pytest.approx(expected, abs=1e-6)
    # perfect agreement gives 0, whatever the latent norms
    mu2 = torch.tensor([[2.0, 0.0], [0.0, 3.0], [5.0, 0.0]])
    A2 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert losses.affinity_loss(mu2, labels, A2).item() == pytest.approx(0.0, abs=1e-6)


def test_kl_and_reconstruction_hand_computed():
    mu = torch.tensor([[1.0, 2.0]])
    logvar = torch.tensor([[0.0, math.log(2.0)]])
    # 0.5 * sum(mu^2 + sigma^2 - 1 - log sigma^2) = 0.5 * (1 + (4 + 2 - 1 - ln 2))
    assert losses.kl_divergence(mu, logvar).item() == pytest.approx(3 - math.log(2) / 2, 1e-6)
    assert losses.kl_divergence(torch.zeros(4, 3), torch.zeros(4, 3)).item() == 0.0
    x, y = torch.zeros(2, 1, 2, 2), torch.ones(2, 1, 2, 2)
    assert losses.reconstruction_loss(y, x, "mean").item() == pytest.approx(1.0)
    assert losses.reconstruction_loss(y, x, "sum").item() == pytest.approx(4.0)  # per box


def test_axis_angle_matches_scipy_rotvec():
    rng = np.random.default_rng(0)
    theta = rng.uniform(-np.pi, np.pi, 16)
    axis = rng.normal(size=(16, 3)) * rng.uniform(0.1, 5, (16, 1))  # any non-zero length
    pose = torch.tensor(np.column_stack([theta, axis]), dtype=torch.float64)
    ours = gmd.axis_angle_to_matrix(pose).numpy()
    unit = axis / np.linalg.norm(axis, axis=1, keepdims=True)
    ref = Rotation.from_rotvec(theta[:, None] * unit).as_matrix()
    np.testing.assert_allclose(ours, ref, atol=1e-12)
    q = gmd.axis_angle_to_quaternion(pose).numpy()
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-12)


@pytest.mark.parametrize("m", [1, 40])
def test_separable_renderer_equals_all_pairs(m):
    g = torch.Generator().manual_seed(m)
    c = torch.rand(3, m, 3, generator=g, dtype=torch.float64) * 2 - 1
    s = torch.rand(3, m, generator=g, dtype=torch.float64) * 0.2 + 0.05
    w = torch.rand(3, m, generator=g, dtype=torch.float64)
    for shape in [(9, 10, 11), (12, 13)]:
        cc = c[..., : len(shape)]
        ref = gmd.render_all_pairs(cc, s, w, shape)
        assert torch.allclose(gmd.render(cc, s, w, shape), ref, atol=1e-12)


def test_gmd_renders_gaussian_at_rotated_voxel():
    n = 33  # grid coordinate of index i is -1 + i / 16
    c = torch.tensor([[[0.5, 0.0, 0.0]]])                  # (x, y, z) -> voxel x = 24
    pose = torch.tensor([[math.pi / 2, 0.0, 0.0, 1.0]])   # +90 degrees about z: x -> y
    rc = gmd.rotate(c, gmd.axis_angle_to_matrix(pose))
    vol = gmd.render(rc, torch.full((1, 1), 0.08), torch.ones(1, 1), (n, n, n))[0]
    assert np.unravel_index(int(vol.argmax()), vol.shape) == (16, 24, 16)  # (z, y, x)
    pose_x = torch.tensor([[math.pi / 2, 1.0, 0.0, 0.0]])  # +90 about x: y -> z
    c_y = torch.tensor([[[0.0, -0.5, 0.0]]])               # y = -0.5 -> z = -0.5 (voxel 8)
    vol = gmd.render(gmd.rotate(c_y, gmd.axis_angle_to_matrix(pose_x)),
                     torch.full((1, 1), 0.08), torch.ones(1, 1), (n, n, n))[0]
    assert np.unravel_index(int(vol.argmax()), vol.shape) == (8, 16, 16)
    # 2D: a 1D pose rotates about z
    img = gmd.render(gmd.rotate(c[..., :2], gmd.angle_to_matrix_2d(torch.tensor([math.pi]))),
                     torch.full((1, 1), 0.08), torch.ones(1, 1), (n, n))[0]
    assert np.unravel_index(int(img.argmax()), img.shape) == (16, 8)


def test_straight_through_weights_are_binary_with_nonzero_gradient():
    logits = torch.tensor([[-2.0, -0.1, 0.3, 4.0]], requires_grad=True)
    phi = gmd.binary_straight_through(logits)
    assert phi.tolist() == [[0.0, 0.0, 1.0, 1.0]]
    c = torch.zeros(1, 4, 3)
    gmd.render(c, torch.full((1, 4), 0.2), phi, (8, 8, 8)).sum().backward()
    assert (logits.grad.abs() > 0).all()
    # the whole GMD decoder passes gradient to the weight logits
    model = _vae({"decoder": "gmd", "pose_dims": 4, "n_gaussians": 16, "depth": 2,
                         "channels": 2}, (8, 8, 8))
    model.decode(torch.randn(2, model.latent_dims), torch.randn(2, 4)).pow(2).sum().backward()
    assert model.decoder.logits.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("cfg,box", [
    ({"decoder": "cnn", "pose_dims": 3}, (16, 16, 16)),
    ({"decoder": "cnn", "pose_dims": 0}, (16, 24, 32)),
    ({"decoder": "gmd", "pose_dims": 4, "n_gaussians": 32, "gmd_convs": 2}, (16, 16, 16)),
    ({"decoder": "cnn", "pose_dims": 1}, (32, 32)),
    ({"decoder": "gmd", "pose_dims": 1, "n_gaussians": 32}, (24, 24)),
])
def test_shapes_2d_and_3d(cfg, box):
    model = _vae({**cfg, "depth": 2, "channels": 4, "latent_dims": 5}, box)
    x = torch.randn(3, 1, *box)
    mu, logvar, pose = model.encode(x)
    assert mu.shape == logvar.shape == (3, 5) and pose.shape == (3, cfg["pose_dims"])
    assert model.decode(mu, pose).shape == x.shape
    assert model(x)[0].shape == x.shape


def test_bad_architectures_raise_one_line_input_errors():
    with pytest.raises(InputError, match="divisible by 2\\*\\*depth"):
        _vae({"depth": 3}, (20, 20, 20))
    with pytest.raises(InputError, match="pose_dims 4"):
        _vae({"decoder": "gmd", "pose_dims": 3}, (16, 16, 16))
    with pytest.raises(InputError, match="pose_dims 1"):
        _vae({"decoder": "gmd", "pose_dims": 4, "depth": 2}, (16, 16))


def test_schedules():
    lin = {"kind": "linear", "min": 0.0, "max": 1.0, "cycles": 2, "ratio": 0.5}
    assert schedules.values(lin, 8) == [0.0, 0.5, 1.0, 1.0, 0.0, 0.5, 1.0, 1.0]
    assert schedules.values({**lin, "kind": "flat", "max": 0.3}, 4) == [0.3] * 4
    ramp = schedules.values({"kind": "ramp", "min": 0.2, "max": 1.0, "cycles": 5,
                             "ratio": 0.5}, 10)
    assert ramp[0] == 0.2 and ramp[5:] == [1.0] * 5 and ramp == sorted(ramp)
    for kind in ("cosine", "sigmoid"):
        v = schedules.values({"kind": kind, "min": 0.1, "max": 0.9, "cycles": 2,
                              "ratio": 1.0}, 100)
        assert v[0] == pytest.approx(0.1) and v[50] == pytest.approx(0.1)
        assert v[:50] == sorted(v[:50]) and v[49] > 0.85


def test_save_and_load_trained_roundtrip(tmp_path):
    model = _vae({"depth": 2, "channels": 4}, (16, 16, 16)).eval()
    meta = {"classes": ["a", "b"], "variant": "avae", "box": [16, 16, 16], "pose_dims": 3,
            "latent_dims": 8, "model": model.config}
    save_trained(tmp_path / "model.pt", model, meta)
    torch.load(tmp_path / "model.pt", weights_only=True)  # tensors and plain data only
    loaded, meta2 = load_trained(tmp_path / "model.pt")
    x = torch.randn(2, 1, 16, 16, 16)
    assert meta2["classes"] == ["a", "b"]
    assert torch.equal(loaded.encode(x)[0], model.encode(x)[0])
    meta["model"] = {**model.config, "channels": 8}   # claims another architecture
    save_trained(tmp_path / "other.pt", model, meta)
    with pytest.raises(InputError, match="different architecture"):
        load_trained(tmp_path / "other.pt")


# The augmentation's rotation group, centre and wedge re-imposition: tests/test_augment.py.


@pytest.mark.parametrize("m", [64, 256, 1024])
def test_untrained_gmd_renders_spread_gaussians_nearly_flat(m):
    # A large first render (M Gaussians piled up at the box centre peak at ~M; or merely a unit
    # scale) switched every binary weight off on the demo data, for good (sigmoid' ~ 0).
    torch.manual_seed(0)
    model = _vae({"decoder": "gmd", "latent_dims": 8, "pose_dims": 4, "n_gaussians": m},
                        (32, 32, 32))
    z = torch.randn(4, 8)
    with torch.no_grad():
        c, _, phi = model.decoder.mixture(z, torch.zeros(4, 4))
        out = model.decode(z, torch.zeros(4, 4))
    assert phi.mean() > 0.9
    assert c.std(dim=1).min() > 0.3  # spread over the box, not at the centre
    assert 0.01 < out.std().item() < 0.2 and out.abs().max().item() < 2
