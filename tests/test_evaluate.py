"""Evaluation facts on synthetic latents (no trained model needed): classification metrics,
group F1, prior-vs-learned Pearson r, unseen-class placement, pose scores with a stub model whose
rotations are the true ones (frame fit, subtomogram averages), Table 1, predict calls and angles."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.transform import Rotation

from affinity_vae.config import schema_defaults
from affinity_vae.evaluate import classify, metrics, pose, unseen
from affinity_vae.evaluate.analyse import analyse_latents
from affinity_vae.evaluate.interpolate import linear_inputs, pose_sweep_inputs
from affinity_vae.evaluate.run import summarise

CLASSES = ["ring5", "ring6", "rod_s", "rod_l", "tetra"]
UNSEEN = "ring7"  # near-twin of ring6


def affinity_matrix() -> pd.DataFrame:
    names = CLASSES + [UNSEEN]
    A = np.array([
        [1.00, 0.85, 0.20, 0.15, 0.30, 0.80],
        [0.85, 1.00, 0.20, 0.15, 0.30, 0.92],
        [0.20, 0.20, 1.00, 0.75, 0.10, 0.20],
        [0.15, 0.15, 0.75, 1.00, 0.10, 0.15],
        [0.30, 0.30, 0.10, 0.10, 1.00, 0.30],
        [0.80, 0.92, 0.20, 0.15, 0.30, 1.00],
    ])
    return pd.DataFrame(A, index=names, columns=names)


def centres_from_affinity(A: np.ndarray, dims: int = 8) -> np.ndarray:
    """Unit vectors whose pairwise cosine similarities equal A (A is positive definite)."""
    w, V = np.linalg.eigh(A)
    X = V * np.sqrt(np.clip(w, 0, None))
    out = np.zeros((len(A), dims))
    out[:, :X.shape[1]] = X
    return out


def latents(noise: float, seed: int = 0, n_train: int = 30, n_test: int = 12,
            geometry: str = "affinity") -> pd.DataFrame:
    """A latents table: particles around class centres; ring7 only as unseen particles."""
    rng = np.random.default_rng(seed)
    aff = affinity_matrix()
    C = (centres_from_affinity(aff.to_numpy()) if geometry == "affinity"
         else rng.normal(size=(len(aff), 8)))
    rows, mus = [], []
    for i, c in enumerate(aff.index):
        splits = ["unseen"] * n_test if c == UNSEEN else ["train"] * n_train + ["test"] * n_test
        for s in splits:
            rows.append((c, s))
            mus.append(C[i] + noise * rng.normal(size=C.shape[1]))
    df = pd.DataFrame(rows, columns=["class", "split"])
    df["tomogram"] = np.where(df["split"] == "test", "model_2", "model_0")
    df["stack_index"] = np.arange(len(df))
    for k in ("x", "y", "z", "euler_z1", "euler_x", "euler_z2"):
        df[k] = 0.0
    mu = np.asarray(mus)
    for k in range(mu.shape[1]):
        df[f"mu_{k}"] = mu[:, k]
    return df


CFG = schema_defaults("evaluate", {"classifier": "knn", "cv_folds": 3, "knn_neighbors": [1, 5]})


@pytest.mark.parametrize("method", ["mlp", "knn"])
def test_separated_latents_classify_perfectly(method):
    lat = latents(noise=0.02)
    fit = lat["split"] == "train"
    test = lat["split"] == "test"
    mu = lat.filter(like="mu_").to_numpy()
    cfg = schema_defaults("evaluate", {"classifier": method, "cv_folds": 3,
                                       "mlp_hidden": [[16]], "mlp_alpha": [1e-3]})
    est, info = classify.fit_classifier(mu[fit], lat["class"][fit], cfg, seed=0)
    res = metrics.classification_metrics(lat["class"][test], est.predict(mu[test]), CLASSES)
    assert res["macro_f1"] == 1.0 and res["accuracy"] == 1.0
    assert info["cv_macro_f1"] == pytest.approx(1.0)
    assert set(res["per_class"]) == set(CLASSES)


def test_mlp_grid_converges_on_small_noisy_latents():
    """An MLP of the default grid on 10 noisy particles a class (as a small run's latents):
    every fit converges (at lbfgs max_iter 1000 this point gave 2 ConvergenceWarnings)."""
    from sklearn.exceptions import ConvergenceWarning

    lat = latents(noise=0.8, n_train=10)
    fit = (lat["split"] == "train").to_numpy()
    mu = lat.filter(like="mu_").to_numpy()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        classify.fit_classifier(mu[fit], lat["class"][fit],
                                schema_defaults("evaluate", {"cv_folds": 3, "mlp_hidden": [[32]],
                                                             "mlp_alpha": [0.01]}), seed=0)
    assert not [w for w in caught if issubclass(w.category, ConvergenceWarning)]


def test_metrics_known_confusions():
    y_true = ["a"] * 4 + ["b"] * 4 + ["c"] * 2
    y_pred = ["a", "a", "a", "b"] + ["b"] * 4 + ["c", "a"]
    res = metrics.classification_metrics(y_true, y_pred, ["a", "b", "c"])
    # a: P = 3/4, R = 3/4; b: P = 4/5, R = 1; c: P = 1, R = 1/2
    assert res["per_class"]["a"]["f1"] == pytest.approx(0.75)
    assert res["per_class"]["b"]["f1"] == pytest.approx(2 * 0.8 / 1.8)
    assert res["per_class"]["c"]["f1"] == pytest.approx(2 * 0.5 / 1.5)
    assert res["accuracy"] == pytest.approx(0.8) == res["micro_f1"]
    counts, norm = metrics.confusion_tables(y_true, y_pred, ["a", "b", "c"])
    assert counts.loc["c", "a"] == 1 and counts.to_numpy().sum() == 10
    assert np.allclose(norm.sum(axis=1), 1.0)


def test_group_scores_paper_mean_f1_versus_merged_label_on_a_hand_made_confusion():
    classes = ["1bxn", "1qvr", "1s3x", "3qm1", "4cr2"]
    y_true = ["1bxn", "1bxn", "1qvr", "1qvr", "1s3x", "1s3x", "3qm1", "3qm1", "4cr2", "4cr2"]
    y_pred = ["1bxn", "1qvr", "1qvr", "1qvr", "1s3x", "1s3x", "3qm1", "3qm1", "4cr2", "1s3x"]
    # per class: 1bxn P 1 R 1/2 -> 2/3; 1qvr P 2/3 R 1 -> 4/5 (a within-group confusion);
    # 1s3x P 2/3 R 1 -> 4/5; 3qm1 1; 4cr2 P 1 R 1/2 -> 2/3
    per_class = metrics.classification_metrics(y_true, y_pred, classes)["per_class"]
    schemes = metrics.build_groups(classes, None, metrics.PAPER_STRUCTURAL_GROUPS, {})
    paper = metrics.group_f1(per_class, schemes)
    merged = metrics.merged_group_f1(y_true, y_pred, schemes)
    want_paper = {"medium": (2 / 3 + 4 / 5) / 2, "small": (4 / 5 + 1) / 2, "large": 2 / 3}
    # merged: medium 4/4 right; small 4 true, 5 predicted (one 4cr2) -> P 4/5 R 1 -> 8/9
    want_merged = {"medium": 1.0, "small": 8 / 9, "large": 2 / 3}
    for g, want in want_paper.items():
        assert paper[f"size/{g}"] == pytest.approx(want)
        assert merged[f"size/{g}"] == pytest.approx(want_merged[g])
    # structural (i) = 1s3x 3qm1, (iii) = 1bxn 1qvr, (iv) = 4cr2; (ii) has no test class
    assert paper["structure/i"] == pytest.approx(0.9)
    assert paper["structure/iii"] == pytest.approx(11 / 15)
    assert paper["structure/iv"] == pytest.approx(2 / 3)
    assert "structure/ii" not in paper and "structure/ii" not in merged
    assert merged["structure/iii"] == 1.0 > paper["structure/iii"]
    assert metrics.mean_f1_by_group({"1BXN": 2 / 3, "1qvr": 0.8}, {"m": ["1bxn", "1QVR", "x"],
                                                                    "none": ["x"]}) == {
        "m": pytest.approx(11 / 15)}


def test_group_scores_of_a_perfect_classifier_are_one():
    classes = [c for g in metrics.SHREC_SIZE_GROUPS.values() for c in g]
    y = [c for c in classes for _ in range(3)]
    schemes = metrics.build_groups(classes, None, metrics.PAPER_STRUCTURAL_GROUPS, {})
    paper = metrics.group_f1(metrics.classification_metrics(y, y, classes)["per_class"], schemes)
    merged = metrics.merged_group_f1(y, y, schemes)
    keys = {f"size/{g}" for g in ("small", "medium", "large")} | {
        f"structure/{g}" for g in ("i", "ii", "iii", "iv")}
    assert set(paper) == set(merged) == keys
    assert all(v == 1.0 for v in [*paper.values(), *merged.values()])


def test_default_structural_groups_are_the_papers():
    import yaml

    schema = yaml.safe_load((Path(__file__).parents[1] / "workflow" / "schemas"
                             / "evaluate.schema.yaml").read_text())
    default = schema["properties"]["structural_groups"]["default"]
    assert default == metrics.PAPER_STRUCTURAL_GROUPS
    assert default == {"i": ["1s3x", "3qm1", "3gl1"], "ii": ["3h84", "2cg9", "3d2f", "1u6g"],
                       "iii": ["3cf3", "1bxn", "1qvr"], "iv": ["4cr2", "5mrc"]}  # section 4.2
    members = sorted(c for m in default.values() for c in m)
    assert members == sorted(c for m in metrics.SHREC_SIZE_GROUPS.values() for c in m)


def test_family_groups_from_manifest():
    manifest = pd.DataFrame({"class": CLASSES, "family": ["ring", "ring", "rod", "rod", ""]})
    schemes = metrics.build_groups(CLASSES, manifest, {}, {})
    assert schemes == {"family": {"ring5": "ring", "ring6": "ring", "rod_s": "rod",
                                  "rod_l": "rod"}}


def test_latent_geometry_built_from_affinity_gives_pearson_one():
    aff = affinity_matrix()
    lat = latents(noise=0.01)
    mu = lat.filter(like="mu_").to_numpy()
    learned = unseen.class_mean_cosine(mu, lat["class"], list(aff.index))
    assert np.allclose(np.diag(learned), 1.0)
    assert unseen.offdiag_pearson(aff.to_numpy(), learned.to_numpy()) > 0.99
    rand = latents(noise=0.01, geometry="random")
    learned_r = unseen.class_mean_cosine(rand.filter(like="mu_").to_numpy(), rand["class"],
                                         list(aff.index))
    assert abs(unseen.offdiag_pearson(aff.to_numpy(), learned_r.to_numpy())) < 0.8


@pytest.mark.parametrize("method", ["centroid", "knn"])
def test_unseen_class_lands_next_to_its_twin(method):
    aff = affinity_matrix()
    lat = latents(noise=0.05)
    mu = lat.filter(like="mu_").to_numpy()
    tr, un = (lat["split"] == "train").to_numpy(), (lat["split"] == "unseen").to_numpy()
    place = unseen.place_unseen(mu[un], lat["class"][un], mu[tr], lat["class"][tr], CLASSES,
                                aff, method, k=5)
    p = place[UNSEEN]
    assert p["most_affine_training_class"] == "ring6"
    assert p["nearest_training_class"] == "ring6" and p["agrees"]
    assert sum(p["distribution"].values()) == pytest.approx(1.0)
    assert p["distribution"]["ring6"] > 0.5


def test_analyse_latents_writes_consistent_results(tmp_path):
    aff = affinity_matrix()
    lat = latents(noise=0.05)
    keys = ["predictions", "confusion", "confusion_norm", "similarity", "unseen"]
    out = {k: str(tmp_path / f"{k}.csv") for k in keys}
    out |= {k: str(tmp_path / f"{k}.png") for k in
            ["confusion_png", "confusion_norm_png", "similarity_png", "unseen_png"]}
    res = analyse_latents(lat, CLASSES, aff, CFG, 0, out, None, dpi=50, label="test")
    assert res["macro_f1"] == 1.0
    assert res["affinity_pearson_r"] > 0.98
    att = res["affinity_attainable"]  # the training classes' prior: positive definite, rank 5
    assert att["latent_dims"] == lat.filter(like="mu_").shape[1] and att["rank_needed"] == 5
    assert att["psd"] and att["best_pearson_r"] == pytest.approx(1.0)
    assert att["best_pearson_r"] >= res["affinity_pearson_r"]
    assert res["groups_merged"] == {} == res["groups"]  # no SHREC class, no family manifest
    assert res["unseen"][UNSEEN]["nearest_training_class"] == "ring6"
    assert res["unseen_agreement"] == 1.0
    sim = pd.read_csv(out["similarity"], index_col=0)
    assert list(sim.index) == list(aff.index)  # same class order as the affinity matrix
    pred = pd.read_csv(out["predictions"])
    assert (pred["class"] == pred["predicted"]).all() and len(pred) == 12 * len(CLASSES)
    # metrics.json of two variants -> one file with the baseline under "baseline"
    for v, r in (("avae", res), ("bvae", {**res, "macro_f1": 0.5})):
        (tmp_path / v).mkdir()
        (tmp_path / v / "metrics.json").write_text(json.dumps(r))
    merged = summarise({"avae": tmp_path / "avae" / "metrics.json",
                        "bvae": tmp_path / "bvae" / "metrics.json"}, tmp_path / "m.json")
    assert merged["baseline"]["macro_f1"] == 0.5 and merged["macro_f1"] == 1.0
    for key in ("macro_f1", "accuracy", "per_class", "groups", "groups_merged",
                "affinity_pearson_r", "affinity_attainable", "unseen"):
        assert key in json.loads((tmp_path / "m.json").read_text())


def test_no_test_particles_is_a_clear_error():
    from affinity_vae.errors import InputError

    lat = latents(noise=0.05)
    lat = lat[lat["split"] != "test"]
    with pytest.raises(InputError, match="dataset.splits.test"):
        analyse_latents(lat, CLASSES, affinity_matrix(), CFG, 0, {})


def test_relion_angles_match_the_pipeline_convention():
    from affinity_vae.rotation import zxz_to_matrix, zxz_to_relion

    euler = np.array([[10.0, 40.0, -70.0], [100.0, 120.0, 5.0]])
    assert np.allclose(pose.relion_angles(zxz_to_matrix(euler)), zxz_to_relion(euler), atol=1e-6)


def test_spearman_pose_finds_the_angle_dimension():
    rng = np.random.default_rng(0)
    angle = rng.uniform(-45, 45, 200)
    P = np.stack([rng.normal(size=200), -0.01 * angle + 0.01 * rng.normal(size=200)], axis=1)
    res = pose.spearman_pose(P, angle)
    assert res["dimension"] == 1 and res["spearman_rho"] < -0.95


def test_sweep_inputs():
    z, p = pose_sweep_inputs(np.ones((3, 4)), np.zeros(2), np.ones(2), steps=5, sigma=2.0)
    assert z.shape == (15, 4) and p.shape == (15, 2)
    assert np.allclose(p[:5, 0], np.linspace(-2, 2, 5)) and np.allclose(p[:, 1], 0)
    _, p = pose_sweep_inputs(np.ones((1, 4)), np.array([0.3, 0, 0, 1.0]), np.ones(4), 4,
                             full_turn=True)
    assert np.allclose(p[:, 0], [-np.pi, -np.pi / 2, 0, np.pi / 2]) and np.allclose(p[:, 3], 1)
    zl = linear_inputs(np.zeros(3), np.ones(3), 5)
    assert np.allclose(zl[0], 0) and np.allclose(zl[-1], 1) and np.allclose(zl[2], 0.5)


def test_predict_calls_poor_fits_unknown_with_nearest_class():
    from affinity_vae.predict import call_particles, unknown_thresholds

    lat = latents(noise=0.05)
    mu = lat.filter(like="mu_").to_numpy()
    tr = (lat["split"] == "train").to_numpy()
    means, thr = unknown_thresholds(mu[tr], lat["class"][tr], CLASSES, 0.99)
    te = (lat["split"] == "test").to_numpy()
    calls = call_particles(mu[te], lat["class"][te].to_numpy(), means, thr, CLASSES)
    assert (calls["avaeCall"] == lat["class"][te].to_numpy()).mean() > 0.9
    far = means[1] + 3.0 * np.eye(8)[7]  # ring6 direction plus a large orthogonal component
    odd = call_particles(far[None], ["ring6"], means, thr, CLASSES)
    assert odd["avaeCall"][0] == "unknown, nearest ring6"


def blob(n: int, seed: int) -> np.ndarray:
    """An asymmetric density (n, n, n): four Gaussian blobs of different sizes about n // 2."""
    rng = np.random.default_rng(seed)
    idx = np.indices((n,) * 3, dtype=float) - n // 2
    vol = np.zeros((n,) * 3)
    for _ in range(4):
        c, s = rng.uniform(-n / 6, n / 6, 3), rng.uniform(1.0, 2.0)
        vol += rng.uniform(0.5, 1) * np.exp(-((idx - c[:, None, None, None]) ** 2).sum(0)
                                            / (2 * s * s))
    return vol.astype(np.float32)


class TruePoseModel:
    """Stands in for a trained 3D model: its pose vector (N, 9) is a flattened rotation, which
    ``pose_rotation`` returns -- the test puts R_true @ Q_c^T there (the model's own frame)."""

    box = (16, 16, 16)

    def pose_rotation(self, pose):
        return pose.reshape(-1, 3, 3)


def synthetic_3d(tmp_path: Path, tilt_range=(-60.0, 60.0)):
    """Boxes of two C1 classes at random true poses with a missing wedge, their latents table
    (pose = the true rotation in a per-class model frame), and their densities on disk.
    Class b has only 6 test particles: its average needs the validation ones too."""
    from affinity_vae.io.mrc import write_volume
    from affinity_vae.rotation import rotate_volume, zxz_to_matrix
    from affinity_vae.wedge import apply_wedge, wedge_mask

    n, rng = 16, np.random.default_rng(5)
    structures = tmp_path / "structures"
    structures.mkdir()
    counts = {"a": {"train": 8, "validation": 4, "test": 12},
              "b": {"train": 8, "validation": 6, "test": 6}}
    q = {"a": Rotation.random(random_state=7).as_matrix(),
         "b": Rotation.random(random_state=8).as_matrix()}
    rows, boxes, pose_vec = [], [], []
    wedge = wedge_mask((n,) * 3, tilt_range)
    for k, (c, splits) in enumerate(counts.items()):
        tpl = blob(n, seed=k)
        write_volume(structures / f"{c}.mrc", np.pad(tpl, 3), 10.0)  # 22^3, centre 11 -> 8
        for split, m in splits.items():
            euler = Rotation.random(m, random_state=rng).as_euler("zxz", degrees=True)
            for e in euler:
                R = zxz_to_matrix(e)
                boxes.append(rotate_volume(tpl, R, order=3))
                pose_vec.append((R @ q[c].T).ravel())
                rows.append((c, split, *e))
    lat = pd.DataFrame(rows, columns=["class", "split", "euler_z1", "euler_x", "euler_z2"])
    lat["tomogram"] = np.where(lat["split"] == "test", "model_2", "model_0")
    lat["stack_index"] = np.arange(len(lat))
    for k in ("x", "y", "z"):
        lat[k] = 0.0
    mu = np.random.default_rng(0).normal(size=(len(lat), 4))
    for k in range(4):
        lat[f"mu_{k}"] = mu[:, k]
    for k in range(9):
        lat[f"pose_{k}"] = np.asarray(pose_vec)[:, k]
    X = apply_wedge(np.stack(boxes), wedge)
    return X, lat, structures, q


def test_true_rotations_score_zero_and_average_like_the_true_poses(tmp_path):
    """A model whose rotations are the true ones in its own per-class frame: after the fitted
    frames the symmetry-aware median error is 0 (random baseline ~132 deg for C1), poses.star
    carries the structure-frame angles, and the averages from the predicted rotations reach the
    true-pose resolution, far better than random poses."""
    import starfile

    from affinity_vae.evaluate.model_eval import pose_averages, pose_metrics
    from affinity_vae.rotation import zxz_to_relion

    X, lat, structures, q = synthetic_3d(tmp_path)
    out = {"poses": str(tmp_path / "poses.star")}
    res, rot, frames = pose_metrics(TruePoseModel(), lat, ["a", "b"], out, 50, "cpu", None, 0)
    assert res["scored_on"] == "test" and res["rotation"]
    assert res["median_error_deg"] < 1e-3 and res["true_median_error_deg"] < 1e-3
    assert 110 < res["random_median_error_deg"] < 150
    for c in ("a", "b"):
        np.testing.assert_allclose(frames[c], q[c], atol=1e-6)
    star = starfile.read(out["poses"])
    relion = star[["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]].to_numpy()
    expect = zxz_to_relion(lat[["euler_z1", "euler_x", "euler_z2"]].to_numpy())
    d = np.abs((relion - expect + 180) % 360 - 180)
    assert (star["avaeInStructureFrame"] == 1).all() and d.max() < 1e-2

    cfg = schema_defaults("evaluate")["averages"]
    avg = pose_averages(X, lat, rot, frames, ["a", "b"], {"a": "C1", "b": "C1"}, structures,
                        10.0, (-60.0, 60.0), cfg, 0, str(tmp_path / "averages.png"), 40)
    assert avg["averages_on"] == {"a": "test",
                                  "b": "validation + test (frame refitted on train)"}
    for c, n in (("a", 12), ("b", 12)):
        m = avg["averages"][c]
        assert m["n"] == n and m["sign"] == 1
        assert m["resolution_A_predicted"] == pytest.approx(m["resolution_A_true"], abs=0.05)
        assert m["resolution_A_true"] < 40  # 10 A voxels: Nyquist is 20 A
        assert not m["resolution_A_random"] < 1.5 * m["resolution_A_true"]


def test_averages_skip_classes_without_density_or_particles(tmp_path):
    from affinity_vae.evaluate.model_eval import pose_averages

    X, lat, structures, q = synthetic_3d(tmp_path)
    (structures / "b.mrc").unlink()
    rot = lat.filter(like="pose_").to_numpy().reshape(-1, 3, 3)
    avg = pose_averages(X, lat, rot, q, ["a", "b"], {}, structures, 10.0, None,
                        schema_defaults("evaluate")["averages"] | {"min_particles": 17}, 0)
    assert avg["averages"] == {}
    assert "min_particles" in avg["averages_skipped"]["a"]
    assert "b.mrc" in avg["averages_skipped"]["b"]


def test_table1_pose_rows_3d():
    from affinity_vae.figures import table1

    pose3d = {"median_error_deg": 12.0, "random_median_error_deg": 131.0,
              "asymmetric": {"median_error_deg": 15.0, "random_median_error_deg": 132.0},
              "probe": {"pose_channel_median_error_deg": 20.0, "latent_median_error_deg": 90.0},
              "averages": {"a": {"resolution_A_predicted": 30.0, "resolution_A_true": 24.0,
                                 "resolution_A_random": None},
                           "b": {"resolution_A_predicted": 40.0, "resolution_A_true": 26.0,
                                 "resolution_A_random": 80.0}}}
    base = {"median_error_deg": None, "random_median_error_deg": 130.0,
            "asymmetric": {"median_error_deg": None, "random_median_error_deg": 131.0},
            "probe": {"pose_channel_median_error_deg": None, "latent_median_error_deg": 95.0}}
    t = table1({"pose": pose3d, "baseline": {"pose": base}})
    sc = "pose median error, deg (symmetry-aware, test)"
    assert t.loc[sc, "aVAE"] == 12.0 and pd.isna(t.loc[sc, "beta-VAE"])
    assert t.loc[f"{sc}: random baseline", "beta-VAE"] == 130.0
    assert t.loc["pose median error, deg, C1 classes", "aVAE"] == 15.0
    assert t.loc["probe median error, deg: shape latent", "beta-VAE"] == 95.0
    assert t.loc["average resolution, A (FSC 0.5): predicted poses", "aVAE"] == 35.0
    assert t.loc["average resolution, A (FSC 0.5): true poses", "aVAE"] == 25.0
    assert t.loc["average resolution, A (FSC 0.5): random poses", "aVAE"] == \
        "80.0 (1 of 2 classes)"
    assert pd.isna(t.loc["average resolution, A (FSC 0.5): predicted poses", "beta-VAE"])
    assert "pose spearman_rho" not in t.index


def test_predict_angles_are_in_the_predicted_class_frame():
    from affinity_vae.predict import angle_columns
    from affinity_vae.rotation import zxz_to_matrix, zxz_to_relion

    euler = Rotation.random(6, random_state=1).as_euler("zxz", degrees=True)
    q = Rotation.random(random_state=2).as_matrix()
    rot = zxz_to_matrix(euler) @ q.T  # the model's frame
    cols = angle_columns(rot, ["a"] * 4 + ["b"] * 2, {"a": q})
    assert list(cols["avaeInStructureFrame"]) == [1, 1, 1, 1, 0, 0]
    got = cols[["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]].to_numpy()
    d = np.abs((got[:4] - zxz_to_relion(euler[:4]) + 180) % 360 - 180)
    assert d.max() < 1e-6
    assert np.allclose(got, cols[["rlnAngleRotPrior", "rlnAngleTiltPrior",
                                  "rlnAnglePsiPrior"]].to_numpy())


def test_table1_lists_both_models(tmp_path):
    from affinity_vae.figures import write_table1

    m = {"macro_f1": 0.9, "micro_f1": 0.91, "accuracy": 0.91, "groups": {"family/ring": 1.0},
         "affinity_pearson_r": 0.95, "per_class": {},
         "unseen": {"ring7": {"nearest_training_class": "ring6",
                              "most_affine_training_class": "ring6"}},
         "unseen_agreement": 1.0, "pose": {},
         "baseline": {"macro_f1": 0.8, "groups": {"family/ring": 0.9},
                      "affinity_pearson_r": 0.3, "unseen": {}, "per_class": {}}}
    t = write_table1(m, tmp_path / "t.csv", tmp_path / "t.md")
    assert list(t.columns) == ["aVAE", "beta-VAE"]
    assert t.loc["macro-F1 (test)", "beta-VAE"] == 0.8
    md = (tmp_path / "t.md").read_text()
    assert "| Pearson r (affinity vs latent cosine) | 0.950 | 0.300 |" in md


def test_figures_regenerate_from_cached_results_without_torch(tmp_path):
    """The `figures` stage reads only eval/ and affinity/ (torch is made unimportable)."""
    import subprocess
    import sys

    aff = affinity_matrix()
    aff.to_csv(tmp_path / "affinity.csv")
    ev = tmp_path / "eval"
    lat = latents(noise=0.05)
    lat["pose_0"] = np.linspace(-1, 1, len(lat))
    lat["euler_z1"] = 40 * lat["pose_0"]
    paths = {}
    for v in ("avae", "bvae"):
        d = ev / v
        (d / "volumes").mkdir(parents=True)
        out = {k: str(d / f"{k}.csv") for k in ("similarity", "confusion_norm")}
        res = analyse_latents(lat, CLASSES, aff, CFG, 0, out)
        res["pose"] = {"spearman_rho": 1.0, "dimension": 0}
        (d / "metrics.json").write_text(json.dumps(res))
        paths[v] = d / "metrics.json"
        emb = lat[["class", "split", "tomogram", "stack_index"]].copy()
        emb["umap_x"], emb["umap_y"] = lat["mu_0"], lat["mu_1"]
        emb.to_csv(d / "embedding.csv", index=False)
        lat.to_parquet(d / "latents.parquet")
        np.savez(d / "volumes" / "pose_sweep.npz", grid=np.random.rand(2, 3, 8, 8, 8),
                 names=np.array(["ring5", "mean"]))
    summarise(paths, ev / "metrics.json")
    figs = tmp_path / "figures"
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from affinity_vae.figures import make_figures\n"
        f"t = make_figures({str(ev)!r}, {str(tmp_path / 'affinity.csv')!r}, "
        f"{{k: {str(figs)!r} + '/' + f for k, f in [('fig2', 'fig2.png'), ('fig3', 'fig3.png'), "
        f"('fig6', 'fig6.png'), ('fig7', 'fig7.png'), ('table1_csv', 'table1.csv'), "
        f"('table1_md', 'table1.md')]}}, "
        "dpi=40)\n"
        "print(t.loc['macro-F1 (test)', 'aVAE'])\n")
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True,
                          cwd=str(Path(__file__).resolve().parents[1]), timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert float(proc.stdout.strip().splitlines()[-1]) == 1.0
    import matplotlib.image as mpimg

    for name in ("fig2", "fig3", "fig6", "fig7"):
        img = mpimg.imread(figs / f"{name}.png")
        assert img.std() > 0.05, f"{name} is blank"
    assert "| macro-F1 (test) | 1.000 | 1.000 |" in (figs / "table1.md").read_text()
