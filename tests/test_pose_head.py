"""Facts about the rotation pose head and the 3D pose-consistency term."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from affinity_vae.config import schema_defaults
from affinity_vae.data import TrainingData
from affinity_vae.errors import InputError
from affinity_vae.model.pose_head import (
    RotationBranch,
    gaussian_transfer,
    matrix_to_sixd,
    moment_frame,
    project_to_so3,
    rotation_consistency_loss,
    sixd_to_matrix,
    soft_sphere,
)
from affinity_vae.model.vae import AffinityVAE
from affinity_vae.train import fit, random_rotations


def _vae(cfg: dict, box: tuple[int, ...]) -> AffinityVAE:
    """A model from the schema's config section ``model`` with ``cfg`` given."""
    return AffinityVAE(schema_defaults("model", cfg), box)


def _rots(n: int, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(Rotation.random(n, random_state=seed).as_matrix()).float()


def test_sixd_round_trip_and_gram_schmidt():
    r = _rots(20)
    assert torch.allclose(sixd_to_matrix(matrix_to_sixd(r)), r, atol=1e-5)
    noisy = matrix_to_sixd(r) * 3 + 0.01 * torch.randn(20, 6)
    out = sixd_to_matrix(noisy)
    assert torch.allclose(out @ out.transpose(1, 2), torch.eye(3).expand(20, 3, 3), atol=1e-5)
    assert torch.allclose(torch.det(out), torch.ones(20), atol=1e-5)


def test_svd_projection_is_the_nearest_rotation():
    r = _rots(10, 1)
    assert torch.allclose(project_to_so3(2.5 * r), r, atol=1e-5)
    reflected = r.clone()
    reflected[:, :, 2] *= -1                       # det -1: the nearest rotation has det +1
    assert torch.allclose(torch.det(project_to_so3(reflected)), torch.ones(10), atol=1e-5)


def test_consistency_loss_is_zero_only_for_an_equivariant_output():
    v1 = 2.0 * _rots(8, 3)
    g = _rots(8, 4)
    assert rotation_consistency_loss(v1, g @ v1, g).item() == pytest.approx(0, abs=1e-6)
    assert rotation_consistency_loss(v1, v1, g).item() > 0.5          # did not turn
    skew = v1 * torch.tensor([1.0, 1.0, 0.2])                          # not a scaled rotation
    assert rotation_consistency_loss(skew, g @ skew, g).item() > 0.01


def test_branch_vectors_are_map_weighted_positions_from_the_centre_voxel():
    """With the conv stack replaced by a map that is 1 at one grid cell, every output vector is
    that cell's position measured from voxel n // 2 (in box radii); turning the map's cell by a
    rotation turns the vectors with it: the construction that makes the branch equivariant."""
    n = 16
    branch = RotationBranch((n, n, n), channels=4, lowpass_sigma=0).eval()
    g = n // 4                                       # the coarse grid: cell i at voxel 4 i

    class OneHot(torch.nn.Module):
        def __init__(self, cell):
            super().__init__()
            self.cell = cell

        def forward(self, _h):
            w = torch.zeros(1, 3, g, g, g)
            w[0, :, self.cell[0], self.cell[1], self.cell[2]] = 1.0
            return w

    branch.net = OneHot((2, 2, 3))                  # voxel (z, y, x) = (8, 8, 12): (4, 0, 0)
    v = branch(torch.zeros(1, 1, n, n, n))[0]
    assert torch.allclose(v, torch.tensor([0.5, 0.0, 0.0]).view(3, 1).expand(3, 3))
    branch.net = OneHot((2, 3, 2))                  # the same cell turned 90 degrees about z
    vr = branch(torch.zeros(1, 1, n, n, n))[0]
    rz = torch.from_numpy(Rotation.from_euler("z", 90, degrees=True).as_matrix()).float()
    assert torch.allclose(vr, rz @ v, atol=1e-6)


def test_rotation_head_model_gives_rotations_and_bad_boxes_are_refused():
    model = _vae({"pose_head": "rotation", "depth": 2, "channels": 4,
                         "latent_dims": 4}, (16, 16, 16))
    assert model.pose_dims == 6 and model.has_rotation_head
    x = torch.randn(3, 1, 16, 16, 16)
    _, _, pose = model.encode(x)
    rot = model.pose_rotation(pose)
    assert torch.allclose(rot @ rot.transpose(1, 2), torch.eye(3).expand(3, 3, 3), atol=1e-4)
    with pytest.raises(InputError, match="model.pose_head"):
        _vae({"pose_head": "rotation", "depth": 1}, (18, 18, 18))
    with pytest.raises(InputError, match="model.pose_head"):
        _vae({"pose_head": "rotation", "depth": 2}, (16, 16))


def test_random_rotations_are_rotations_and_limited_when_asked():
    gen = torch.Generator().manual_seed(0)
    r = random_rotations(500, 180, gen).double()
    assert torch.allclose(torch.det(r), torch.ones(500, dtype=torch.float64), atol=1e-5)
    ang = Rotation.from_matrix(r.numpy()).magnitude()
    assert 100 < np.degrees(np.median(ang)) < 150          # Haar median is ~126.5 degrees
    small = random_rotations(200, 20, gen).double().numpy()
    assert np.degrees(Rotation.from_matrix(small).magnitude()).max() <= 20 + 1e-3


def _asym_boxes(n: int, box: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    """Noise-free boxes of one asymmetric 3-blob object at random rotations; (n, 1, b, b, b)."""
    rng = np.random.default_rng(seed)
    rots = Rotation.random(n, random_state=seed).as_matrix()
    centres = np.array([[4.0, 0, 0], [0, 2.5, 0], [-1, -1, 3.5]])
    z, y, x = np.mgrid[:box, :box, :box].astype(float) - box // 2
    out = np.zeros((n, box, box, box), np.float32)
    for i, r in enumerate(rots):
        for c, s in zip(centres @ r.T, (1.6, 1.3, 1.1)):
            out[i] += np.exp(-((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2) / (2 * s * s))
    out = (out - out.mean((1, 2, 3), keepdims=True)) / out.std((1, 2, 3), keepdims=True)
    del rng
    return torch.from_numpy(out)[:, None], rots


def test_pose_consistency_trains_in_3d_and_lowers_its_term():
    x, _ = _asym_boxes(48, 16, 0)
    data = TrainingData(x, torch.zeros(48, dtype=torch.long), x[:8],
                        torch.zeros(8, dtype=torch.long),
                        ["a"], torch.ones(1, 1))
    model_cfg = {"pose_head": "rotation", "depth": 2, "channels": 4, "latent_dims": 4,
                 "pose_channels": 8, "pose_lowpass": 0}
    train_cfg = {"epochs": 20, "batch_size": 8, "learning_rate": 2e-3, "augment": "none",
                 "pose_consistency": {"weight": 1.0}}
    torch.set_num_threads(1)
    _, hist = fit(data, schema_defaults("model", model_cfg), schema_defaults("train", train_cfg),
                  0, None, "cpu", progress=False,
                  tilt_range=(-60, 60))
    assert hist["train_pose"].iloc[0] > 0
    assert hist["train_pose"].iloc[-3:].mean() < 0.7 * hist["train_pose"].iloc[:2].mean()


def test_moment_frame_turns_with_the_particle():
    """For an asymmetric object, the frame of a rotated copy is the rotation times the frame
    of the original (within a few degrees of resampling), for bright and for dark contrast."""
    x, rots = _asym_boxes(12, 24, 5)
    mask = soft_sphere((24, 24, 24))[None, None]
    tr = gaussian_transfer((24, 24, 24), 1.0)
    frames = moment_frame(x, mask, tr).double().numpy()
    dark = moment_frame(-x, mask, tr).double().numpy()
    assert np.allclose(frames, dark, atol=1e-6)
    assert np.allclose(np.linalg.det(frames), 1.0, atol=1e-5)
    # frame_i = R_i Q for one constant Q: Q_i = R_i^T frame_i all agree
    q = np.einsum("nji,njk->nik", rots, frames)
    err = np.degrees(Rotation.from_matrix(np.swapaxes(q[:1], 1, 2) @ q).magnitude())
    assert np.median(err) < 2.0 and err.max() < 5.0


def test_moments_head_model_has_no_pose_parameters():
    model = _vae({"pose_head": "moments", "depth": 2, "channels": 4,
                         "latent_dims": 4}, (16, 16, 16))
    assert model.pose_dims == 6 and model.has_rotation_head
    assert not any("rotation" in n for n, _ in model.named_parameters())
    x, rots = _asym_boxes(4, 16, 1)
    _, _, pose = model.encode(x)
    rot = model.pose_rotation(pose)
    assert torch.allclose(rot @ rot.transpose(1, 2), torch.eye(3).expand(4, 3, 3), atol=1e-4)
