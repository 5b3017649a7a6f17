"""End to end on the tiny config (2 tomograms of 48 x 128 x 128 voxels, 60 particles each,
6 generated classes of which ring7 is unseen): the whole pipeline runs and its science holds with
margin -- the affinity prior shapes the latent space, particles are classified far above chance,
the unseen class lands next to its most affine training class, and the pose channel recovers
the axis of the rods.

The run is `results/tiny`, shared with the SLURM, re-run and report tests (made once).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import starfile
from workflow_helpers import ensure_tiny_run

from affinity_vae.io.mrc import read_volume

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run():
    return ensure_tiny_run()


@pytest.fixture(scope="module")
def metrics(run):
    return json.loads((run / "eval" / "metrics.json").read_text())


def test_metrics_hold_every_key_of_the_contract(metrics):
    for key in ("macro_f1", "accuracy", "per_class", "groups", "affinity_pearson_r", "unseen",
                "baseline", "pose"):
        assert key in metrics, key
    for cls, row in metrics["per_class"].items():
        assert set(row) >= {"precision", "recall", "f1", "support"}, cls
    assert set(metrics["baseline"]) >= {"macro_f1", "affinity_pearson_r"}


def test_avae_classifies_the_test_tomogram_far_above_chance(metrics):
    seen = len(metrics["per_class"])
    chance = 1 / seen  # 5 seen classes -> 0.2; measured 0.435
    assert metrics["macro_f1"] >= chance + 0.15
    assert metrics["accuracy"] >= chance + 0.15


def test_affinity_prior_shapes_the_latent_space(metrics):
    """Class-mean latent cosine similarities follow the affinity matrix for the aVAE (measured
    r = 0.79) and not for the beta-VAE trained on the same data and budget (r = -0.36)."""
    assert metrics["affinity_pearson_r"] >= 0.6
    assert metrics["affinity_pearson_r"] - metrics["baseline"]["affinity_pearson_r"] >= 0.5


def test_unseen_class_lands_next_to_its_most_affine_training_class(metrics):
    placed = metrics["unseen"]["ring7"]
    assert placed["most_affine_training_class"] == "ring6"
    share = placed["distribution"].get("ring6", 0.0)
    # measured 0.45 (ring6) against 0.40 (octa); uniform placement would give 0.2
    assert share >= 0.3
    assert placed["nearest_training_class"] == "ring6"


def test_pose_channel_recovers_the_axis_of_the_rods(metrics):
    """The pose channel (model.pose_head moments, from the default config) is a rotation; for
    the axial classes (rod_short, rod_long: point group Dinf, only the axis is defined) its
    symmetry-aware error on the test tomogram is below half of what uniformly random rotations
    score under the same metric (default run: 4 and 20 deg against ~60). The asymmetric classes
    do not reach that on reconstructions (docs/pose.md), so nothing is asserted for them; true
    rotations score 0 by construction of the metric."""
    pose = metrics["pose"]
    assert pose["true_median_error_deg"] < 1e-3
    rods = [pose["per_class"][c] for c in ("rod_short", "rod_long")]
    assert all(r["group"] == "Dinf" for r in rods)
    pred = np.mean([r["median_error_deg"] for r in rods])
    rand = np.mean([r["random_median_error_deg"] for r in rods])
    assert 45 < rand < 75
    assert pred < 0.5 * rand, (pred, rand)


def test_unseen_particles_never_enter_training(run):
    import torch

    meta = torch.load(run / "model" / "avae" / "model.pt", weights_only=True)["meta"]
    assert "ring7" not in meta["classes"]
    tables = [starfile.read(p) for p in sorted((run / "subtomos").glob("*.star"))]
    table = pd.concat(tables)
    assert (table.loc[table["avaeClass"] == "ring7", "avaeSplit"] == "unseen").all()
    fitted = (table["avaeSplit"] == "train").sum() + (table["avaeSplit"] == "validation").sum()
    assert meta["n_train"] + meta.get("n_validation", 0) == fitted


def test_stacks_and_star_tables_agree(run):
    for star in sorted((run / "subtomos").glob("*.star")):
        table = starfile.read(star)
        stack, voxel = read_volume(star.with_suffix(".mrcs"), mmap=True)
        assert len(stack) == len(table)
        assert voxel == pytest.approx(10.0)
        assert np.array_equal(table["avaeStackIndex"].to_numpy(), np.arange(len(table)))
