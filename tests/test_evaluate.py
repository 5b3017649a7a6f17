"""Evaluation facts on synthetic latents (no trained model needed): classification metrics,
group F1, prior-vs-learned Pearson r, unseen-class placement, pose error, Table 1, predict calls."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.transform import Rotation

from affinity_vae.evaluate import classify, metrics, pose, unseen
from affinity_vae.evaluate.interpolate import linear_inputs, pose_sweep_inputs
from affinity_vae.evaluate.run import analyse_latents, summarise

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


CFG = {"classifier": "knn", "cv_folds": 3, "knn_neighbors": [1, 5]}


@pytest.mark.parametrize("method", ["mlp", "knn"])
def test_separated_latents_classify_perfectly(method):
    lat = latents(noise=0.02)
    fit = lat["split"] == "train"
    test = lat["split"] == "test"
    mu = lat.filter(like="mu_").to_numpy()
    est, info = classify.fit_classifier(mu[fit], lat["class"][fit], method, seed=0, cv_folds=3,
                                        mlp_hidden=[[16]], mlp_alpha=[1e-3])
    res = metrics.classification_metrics(lat["class"][test], est.predict(mu[test]), CLASSES)
    assert res["macro_f1"] == 1.0 and res["accuracy"] == 1.0
    assert info["cv_macro_f1"] == pytest.approx(1.0)
    assert set(res["per_class"]) == set(CLASSES)


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


def test_group_f1_forgives_confusion_within_a_group():
    y_true = ["1bxn", "1qvr", "1s3x", "3qm1", "4cr2"]
    y_pred = ["1qvr", "1bxn", "3qm1", "1s3x", "4cr2"]  # wrong class, right size group
    schemes = metrics.build_groups(["1BXN", "1QVR", "1S3X", "3QM1", "4CR2"], None, {}, {})
    schemes = {k: {c.lower(): g for c, g in v.items()} for k, v in schemes.items()}
    res = metrics.group_f1(y_true, y_pred, schemes)
    assert res == {"size/large": 1.0, "size/medium": 1.0, "size/small": 1.0}
    assert metrics.classification_metrics(y_true, y_pred, y_true)["macro_f1"] == pytest.approx(0.2)


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
    for key in ("macro_f1", "accuracy", "per_class", "groups", "affinity_pearson_r", "unseen"):
        assert key in json.loads((tmp_path / "m.json").read_text())


def test_no_test_particles_is_a_clear_error():
    from affinity_vae.errors import InputError

    lat = latents(noise=0.05)
    lat = lat[lat["split"] != "test"]
    with pytest.raises(InputError, match="dataset.splits.test"):
        analyse_latents(lat, CLASSES, affinity_matrix(), CFG, 0, {})


def test_gmd_pose_error_is_zero_up_to_a_class_frame_and_large_for_random():
    rng = np.random.default_rng(1)
    n = 60
    euler = Rotation.random(n, random_state=rng).as_euler("zxz", degrees=True)
    true = pose.true_rotations(euler)
    labels = np.array(["a"] * 30 + ["b"] * 30)
    splits = np.array((["train"] * 20 + ["test"] * 10) * 2)
    q = {"a": Rotation.random(random_state=2), "b": Rotation.random(random_state=3)}
    pred = np.stack([(true[i] * q[labels[i]].inv()).as_matrix() for i in range(n)])
    res, err = pose.gmd_pose_metrics(pred, euler, labels, splits)
    assert res["median_angular_error_deg"] < 1e-3 and np.nanmax(err) < 1e-3
    rand = Rotation.random(n, random_state=4).as_matrix()
    res_r, _ = pose.gmd_pose_metrics(rand, euler, labels, splits)
    assert res_r["median_angular_error_deg"] > 60


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
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=str(Path(__file__).resolve().parents[1]), timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert float(proc.stdout.strip().splitlines()[-1]) == 1.0
    import matplotlib.image as mpimg

    for name in ("fig2", "fig3", "fig6", "fig7"):
        img = mpimg.imread(figs / f"{name}.png")
        assert img.std() > 0.05, f"{name} is blank"
    assert "| macro-F1 (test) | 1.000 | 1.000 |" in (figs / "table1.md").read_text()
