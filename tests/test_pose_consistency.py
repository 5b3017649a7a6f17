"""Facts about the pose-consistency term (train.pose_consistency): the in-plane rotation it uses
turns images the same way as the glyph generator, the loss is zero exactly for an equivariant
pose, and with it the pose of different glyphs shares one scale, so poses compare across
classes (pooled Spearman rho with the true angle)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from conftest import REPO
from scipy.stats import spearmanr

from affinity_vae.config import check_config, schema_defaults
from affinity_vae.data import TrainingData, rotate_inplane
from affinity_vae.errors import InputError
from affinity_vae.glyphs import make_dataset, render_glyph, rotate
from affinity_vae.model.losses import pose_consistency_loss
from affinity_vae.train import fit

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


@pytest.mark.parametrize("angle", [25.0, -40.0])
def test_rotate_inplane_turns_like_the_glyph_generator(angle):
    img = render_glyph("b", 32)
    out = rotate_inplane(torch.from_numpy(np.array(img))[None, None],
                         torch.tensor([np.radians(angle)]))[0, 0].numpy()
    assert _corr(out, rotate(img, angle)) > 0.999
    assert _corr(out, rotate(img, -angle)) < 0.9  # not the opposite sense


def test_rotate_inplane_rejects_3d_and_wrong_angles():
    with pytest.raises(ValueError, match="2D images"):
        rotate_inplane(torch.zeros(2, 1, 8, 8, 8), torch.zeros(2))
    with pytest.raises(ValueError, match="angles must have shape"):
        rotate_inplane(torch.zeros(2, 1, 8, 8), torch.zeros(3))


def test_loss_is_zero_only_for_an_equivariant_pose():
    angles = torch.tensor([0.3, -0.2, 0.5])
    pose = torch.tensor([[0.1], [-0.4], [0.2]])
    assert pose_consistency_loss(pose, pose + angles[:, None], angles).item() == pytest.approx(0)
    # the opposite sense costs (2 * angle)^2
    opposite = pose_consistency_loss(pose, pose - angles[:, None], angles).item()
    assert opposite == pytest.approx(float((2 * angles).pow(2).mean()))
    # the centring part is centre * mean(pose^2)
    centred = pose_consistency_loss(pose, pose + angles[:, None], angles, centre=0.5).item()
    assert centred == pytest.approx(0.5 * float(pose.pow(2).mean()))
    with pytest.raises(ValueError, match="pose_rotated"):
        pose_consistency_loss(torch.zeros(3, 0), torch.zeros(3, 0), angles)


def _fit(data: TrainingData, model: dict, train: dict, *args, **kwargs):
    """train.fit with config sections model and train: the schema's defaults with these."""
    return fit(data, schema_defaults("model", model), schema_defaults("train", train), *args,
               **kwargs)


def _glyph_pose(weight: float, decoder: str = "cnn") -> tuple[float, list[float]]:
    """Train on four glyphs (60 each, rotated within +-45 degrees); pooled and per-glyph
    Spearman rho of pose_0 with theta on 25 fresh images per glyph."""
    chars = ["b", "j", "2", "a"]
    X, table = make_dataset(chars, 60, 32, 45, 0.05, 0.05, seed=0)
    Xt, tt = make_dataset(chars, 25, 32, 45, 0.05, 0.05, seed=1)
    labels = torch.as_tensor([chars.index(c) for c in table["class"]])
    data = TrainingData(torch.from_numpy(X[:, None]), labels, torch.zeros(0, 1, 32, 32),
                        torch.zeros(0, dtype=torch.long), chars, torch.eye(4) * 0.7 + 0.3)
    model, _ = _fit(data, {"decoder": decoder, "latent_dims": 4, "pose_dims": 1, "channels": 8,
                          "depth": 3, "batch_norm": False},
                   {"epochs": 25, "batch_size": 64, "augment": "none",
                    "pose_consistency": {"weight": weight}}, 0, None, "cpu", progress=False)
    with torch.no_grad():
        pose = model.encode(torch.from_numpy(Xt[:, None]))[2][:, 0].numpy()
    angle, cls = tt["angle"].to_numpy(), tt["class"].to_numpy()
    per = [float(spearmanr(pose[cls == c], angle[cls == c]).statistic) for c in chars]
    return float(spearmanr(pose, angle).statistic), per


def test_pose_of_different_glyphs_shares_one_scale():
    torch.set_num_threads(1)
    pooled, per = _glyph_pose(1.0)
    # every glyph's pose follows theta in the same sense, and the scales agree across glyphs
    assert min(per) > 0.95, per
    assert pooled > 0.93, pooled  # measured 0.98
    pooled_off, _ = _glyph_pose(0.0)
    assert pooled_off < pooled - 0.3, pooled_off  # measured 0.14: each glyph its own scale


def test_gmd_pose_follows_rotation_in_its_own_sense():
    # The GMD decoder's 2D pose turns its centroids clockwise as displayed, so the term asks
    # pose_0 to follow theta with the opposite sign; its pose is then a rotation angle.
    torch.set_num_threads(1)
    pooled, per = _glyph_pose(1.0, "gmd")
    assert max(per) < -0.95, per
    assert pooled < -0.93, pooled


def test_3d_term_needs_the_rotation_head():
    data = TrainingData(torch.zeros(8, 1, 8, 8, 8), torch.zeros(8, dtype=torch.long),
                        torch.zeros(0, 1, 8, 8, 8), torch.zeros(0, dtype=torch.long), ["a"],
                        torch.ones(1, 1))
    with pytest.raises(InputError, match="train.pose_consistency.weight"):
        _fit(data, {"depth": 2, "pose_dims": 1}, {"epochs": 1,
                                                  "pose_consistency": {"weight": 1.0}},
            0, None, "cpu", progress=False)
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg.setdefault("train", {})["pose_consistency"] = {"weight": 1.0}
    cfg["model"] = {**cfg.get("model", {}), "pose_head": "linear"}
    with pytest.raises(InputError, match="pose_consistency.weight.*pose_head: rotation"):
        check_config(cfg, SCHEMA)
    cfg["model"] = {**cfg.get("model", {}), "pose_head": "rotation"}
    check_config(cfg, SCHEMA)   # accepted with the rotation head


def test_a_rotation_pose_head_on_2d_data_is_refused_before_any_job():
    cfg = yaml.safe_load((REPO / "config" / "alphanumeric.yaml").read_text())
    cfg["model"]["pose_head"] = "moments"
    with pytest.raises(InputError, match="model.pose_head.*set model.pose_head: linear"):
        check_config(cfg, SCHEMA)
