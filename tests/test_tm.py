"""The template-matching baseline (affinity_vae/evaluate/tm.py, tm_run.py): a rotated template
is found with its class and orientation, noise scores low, and TM is scored by the models' code."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.spatial.transform import Rotation

from affinity_vae.config import schema_defaults
from affinity_vae.evaluate import metrics, tm, tm_run
from affinity_vae.rotation import angular_distance, rotate_volume
from affinity_vae.symmetry import symmetric_error

torch.set_num_threads(1)
CFG = schema_defaults("evaluate")
N = 24
VOXEL = 10.0


def blobs(centres: list[tuple[float, float, float]], sigmas: list[float]) -> np.ndarray:
    """(N, N, N) sum of Gaussians at (x, y, z) offsets (voxels) from the box centre N // 2."""
    z, y, x = np.meshgrid(*[np.arange(N) - N // 2] * 3, indexing="ij")
    vol = np.zeros((N, N, N), np.float32)
    for (cx, cy, cz), s in zip(centres, sigmas):
        vol += np.exp(-((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2) / (2 * s * s))
    return vol


# two asymmetric (C1) classes: three unequal lobes in different arrangements
TEMPLATES = np.stack([
    blobs([(0, 0, 0), (6, 0, 0), (0, 4, 3)], [2.5, 2.0, 1.5]),
    blobs([(0, 0, 0), (-3, 5, 0), (3, -3, 4)], [2.5, 2.0, 1.5]),
])


def test_rotation_grid_covers_so3_within_the_step():
    for step in (30.0, 20.0):
        grid = tm.rotation_grid(step)
        probe = Rotation.random(300, random_state=3).as_matrix()
        # geodesic distance to the nearest grid rotation
        rel = np.einsum("nji,gjk->ngik", probe, grid)
        near = np.degrees(np.arccos(np.clip((np.trace(rel, axis1=-2, axis2=-1) - 1) / 2, -1, 1)))
        assert near.min(1).max() < step
        assert np.allclose(np.linalg.det(grid), 1.0)


def test_rotated_template_gives_its_class_and_orientation():
    step = 25.0
    grid = tm.rotation_grid(step)
    true = Rotation.random(4, random_state=7).as_matrix()
    classes = [0, 1, 1, 0]
    boxes = np.stack([rotate_volume(TEMPLATES[c], r) for c, r in zip(classes, true)])
    boxes[1] = np.roll(boxes[1], 2, axis=2)  # off-centre by 2 voxels: the shift search finds it
    res = tm.match(boxes, TEMPLATES, VOXEL, grid, lowpass_A=40.0, max_shift_vox=2)
    assert list(res.scores.argmax(1)) == classes
    assert (res.scores.max(1) > 0.9).all()
    found = res.rotations[res.rot_index[np.arange(4), classes]]
    err = symmetric_error(found, true, "C1")
    assert (err < step).all(), err
    assert np.allclose(angular_distance(found, true), err, atol=1e-6)
    assert list(res.shift_vox[1, 1]) == [0, 0, 2]


def test_rotated_template_through_the_data_filter_is_still_found():
    """Missing wedge (tomogram frame, after the rotation) and CTF on the box and the templates."""
    physics = {"tilt_range": [-60, 60], "dark": True, "invert": False,
               "microscope": {"defocus_um": 3.0, "voltage_kv": 300.0, "cs_mm": 2.7,
                              "amplitude_contrast": 0.07}}
    grid0 = tm.working_grid(N, VOXEL, 20.0, 0, None)  # full-res filter
    transfer = tm.data_transfer(grid0, physics)
    true = Rotation.random(2, random_state=11).as_matrix()
    raw = np.stack([rotate_volume(TEMPLATES[c], r) for c, r in zip([1, 0], true)])
    boxes = torch.fft.irfftn(torch.fft.rfftn(torch.from_numpy(raw), dim=(-3, -2, -1))
                             * transfer, s=(N,) * 3, dim=(-3, -2, -1)).numpy()
    res = tm.match(boxes, TEMPLATES, VOXEL, tm.rotation_grid(25.0), 40.0, 0, None, physics)
    assert list(res.scores.argmax(1)) == [1, 0]
    found = res.rotations[res.rot_index[[0, 1], [1, 0]]]
    assert (symmetric_error(found, true, "C1") < 25.0).all()


def test_pure_noise_gives_a_low_peak():
    rng = np.random.default_rng(0)
    noise = rng.standard_normal((3, N, N, N)).astype(np.float32)
    signal = rotate_volume(TEMPLATES[0], Rotation.random(random_state=1).as_matrix())[None]
    res = tm.match(np.concatenate([noise, signal]), TEMPLATES, VOXEL, tm.rotation_grid(30.0),
                   40.0, 1)
    assert res.scores[:3].max() < 0.4
    assert res.scores[3].max() > 0.9


def test_tm_is_scored_by_the_models_code():
    classes = ["1s3x", "3qm1", "5mrc", "4cr2"]
    y = np.array(classes * 3, dtype=object)
    perfect = tm_run.score(y, y, classes, None, CFG)
    assert perfect["macro_f1"] == 1.0 and perfect["accuracy"] == 1.0
    assert perfect["groups"]["size/large"] == perfect["groups"]["size/small"] == 1.0
    wrong = y.copy()
    wrong[y == "1s3x"] = "3qm1"
    res = tm_run.score(y, wrong, classes, None, CFG)
    ref = metrics.classification_metrics(y, wrong, classes)
    assert res["macro_f1"] == ref["macro_f1"]
    small = metrics.mean_f1_by_group({c: v["f1"] for c, v in ref["per_class"].items()},
                                     metrics.SHREC_SIZE_GROUPS)["small"]
    assert res["groups"]["size/small"] == pytest.approx(small)
    assert res["groups_merged"]["size/small"] == 1.0  # a confusion inside the group


def test_pose_errors_zero_for_truth_and_random_baseline_for_random():
    rng = np.random.default_rng(0)
    true = Rotation.random(400, random_state=2).as_matrix()
    labels = np.array(["a", "b", "ball"] * 133 + ["a"], dtype=object)
    groups = {"a": "C1", "b": "D2", "ball": "K"}
    sym = true.copy()
    sym[labels == "b"] = true[labels == "b"] @ np.diag([1.0, -1, -1])  # a D2 element
    res, err = tm_run.pose_errors(sym, true, labels, groups, rng)
    assert res["median_error_deg"] == pytest.approx(0.0, abs=1e-4)
    assert res["skipped"] == {"ball": "point group K: no orientation defined"}
    assert np.isnan(err[labels == "ball"]).all()
    rand, _ = tm_run.pose_errors(Rotation.random(400, random_state=5).as_matrix(), true,
                                 labels, groups, rng)
    assert rand["median_error_deg"] == pytest.approx(rand["random_median_error_deg"], rel=0.15)
    assert res["asymmetric"]["median_error_deg"] == pytest.approx(0.0, abs=1e-4)


def test_table1_has_a_tm_column():
    from affinity_vae.figures import table1

    m = {"macro_f1": 0.5, "accuracy": 0.6, "groups": {"size/small": 0.4},
         "pose": {"median_error_deg": 40.0, "random_median_error_deg": 70.0}}
    t = table1(m, {"macro_f1": 0.7, "accuracy": 0.8, "groups": {"size/small": 0.9},
                   "pose": {"median_error_deg": 12.0, "random_median_error_deg": 66.0}})
    assert list(t.columns) == ["aVAE", "TM"]
    assert t.loc["macro-F1 (test)", "TM"] == 0.7
    assert t.loc["group F1 size/small", "TM"] == 0.9
    assert t.loc["pose median error, deg (symmetry-aware, test)", "TM"] == 12.0


@pytest.mark.slow
def test_tiny_pipeline_has_tm_in_table1():
    from workflow_helpers import REPO, TINY, snakemake

    run = "test_tm"
    try:
        snakemake("--cores", "2", "--configfile", str(TINY), "--config", f"run={run}",
                  timeout=1800)
        t = pd.read_csv(REPO / "results" / run / "figures" / "table1.csv", index_col=0)
        assert "TM" in t.columns
        f1 = float(t.loc["macro-F1 (test)", "TM"])
        assert 0.0 <= f1 <= 1.0
        pred = pd.read_csv(REPO / "results" / run / "eval" / "tm" / "predictions.csv")
        lat = pd.read_parquet(REPO / "results" / run / "eval" / "avae" / "latents.parquet")
        test = lat[(lat["split"] == "test") & (lat["class"] != "ring7")]
        assert sorted(pred["stack_index"]) == sorted(test["stack_index"])  # same particles
        assert np.isfinite(float(t.loc["pose median error, deg (symmetry-aware, test)", "TM"]))
    finally:
        shutil.rmtree(REPO / "results" / run, ignore_errors=True)


def test_paper_table1_has_tm_columns_beside_the_models():
    from affinity_vae import paper

    model = {"groups": {"size/small": 0.5}, "macro_f1": 0.6,
             "pose": {"median_error_deg": 30.0, "random_median_error_deg": 70.0}}
    tm_m = {"groups": {"size/small": 0.3}, "macro_f1": 0.4,
            "pose": {"median_error_deg": 10.0, "random_median_error_deg": 66.0}}
    t = paper.table1({"recon_cnn": model, "recon_gmd": model},
                     {"recon_cnn": tm_m, "recon_gmd": {"macro_f1": 0.0}})
    col = "TM (iii), this project"
    assert t.loc["small", col] == 0.3 and t.loc["macro-F1", col] == 0.4  # the first run's
    assert t.loc["pose error, deg", col] == 10.0
    assert t.loc["pose error, deg", "CNN-aVAE (iii), this project"] == 30.0
    assert t.loc["small", "TM (published)"] == 0.233
