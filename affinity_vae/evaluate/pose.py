"""Does the pose channel capture orientation? Symmetry-aware scores and probes.

2D data: Spearman rho between each pose dimension and the true in-plane angle (the STAR's
``avaeEulerZ1`` column holds theta for 2D data); the dimension with the largest |rho| counts.

3D data. Conventions (affinity_vae.rotation): a particle is its class template rotated actively
by R_true (SHREC ZXZ Euler angles, ``zxz_to_matrix``), matrices act on (x, y, z). A template with
point group G (affinity_vae.symmetry) satisfies template = g . template for g in G, so R_true and
R_true @ g are the same particle. A model's rotation R_pred lives in a frame it learned itself,
so R_true ~ R_pred @ Q @ g with one constant Q per class and any g in G.

- :func:`symmetric_error`: min over g of the geodesic angle between R_pred and R_true @ g; for
  Cinf only the axis counts (angle between R_pred e_z and R_true e_z), for Dinf the axis up to
  sign; NaN for spherical classes (K).
- :func:`fit_frame`: the per-class Q, robust and symmetry-aware (fitted on train + validation).
- :func:`pose_scores`: errors on the test tomogram after the frame fit, beside the same pipeline
  applied to uniformly random rotations (the random baseline, computed) and to the true
  rotations (must give 0).
- :func:`probe_scores`: how much orientation a feature block holds (pose channel, shape latent):
  a per-class kNN regression from features to the true rotation, no frame fit needed.
- Predicted angles are exported as RELION ZYZ (rlnAngleRot/Tilt/Psi, + prior columns).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.spatial.transform import Rotation
from scipy.stats import spearmanr

from affinity_vae.rotation import matrix_to_relion, zxz_to_matrix
from affinity_vae.symmetry import (
    E_Z,
    best_elements,
    chordal_mean,
    class_point_groups,
    group_rotations,
    is_axial,
    is_spherical,
    parse_point_group,
    rotation_to_axis,
    symmetric_error,
    symmetric_representative,
)

__all__ = ["class_point_groups", "fit_frame", "pose_report_3d", "pose_scores", "pose_star_table",
           "probe_errors", "probe_scores", "relion_angles", "spearman_pose", "symmetric_error",
           "symmetric_representative"]

N_CANDIDATES = 64  # particles whose pred^T true are tried as the frame
ROBUST_CAP_DEG = 45.0  # errors above this count as outliers in the frame fit
THRESHOLDS = (15, 30)


def spearman_pose(pose: np.ndarray, angle: np.ndarray) -> dict:
    """Spearman rho of every pose dimension (pose (N, P)) with the true angle (N,) in degrees.

    Returns {spearman_rho (the dimension with the largest |rho|), dimension, per_dim, n}.
    """
    pose = np.asarray(pose, float).reshape(len(angle), -1)
    rhos = []
    for d in range(pose.shape[1]):
        rho = spearmanr(pose[:, d], angle).statistic if np.std(pose[:, d]) > 0 else np.nan
        rhos.append(float(rho))
    best = int(np.nanargmax(np.abs(rhos))) if np.isfinite(rhos).any() else 0
    return {"spearman_rho": rhos[best], "dimension": best, "per_dim": rhos, "n": len(angle)}


def true_matrices(euler_zxz: np.ndarray) -> np.ndarray:
    """SHREC (Z1, X, Z2) degrees (N, 3) -> active (x, y, z) matrices (N, 3, 3)."""
    return zxz_to_matrix(np.asarray(euler_zxz, float).reshape(-1, 3)).reshape(-1, 3, 3)


def _robust_loss(err: np.ndarray) -> float:
    return float(np.mean(np.minimum(err, ROBUST_CAP_DEG)))


def _fit_axis(pred: np.ndarray, true: np.ndarray, group: str, q0: np.ndarray) -> np.ndarray:
    """Refine Q for an axial class: only Q e_z is defined (= pred_i^T true_i e_z)."""
    v = np.einsum("nji,nj->ni", pred, true @ E_Z)  # pred^T (true e_z), (N, 3)
    u = q0 @ E_Z
    for _ in range(30):
        if group == "Dinf":
            v = v * np.sign(v @ u + 1e-300)[:, None]
        err = np.degrees(np.arccos(np.clip(v @ u, -1, 1)))
        w = err < ROBUST_CAP_DEG
        if w.sum() < 3:
            w[:] = True
        new = v[w].sum(0)
        new /= np.linalg.norm(new)
        if np.allclose(new, u, atol=1e-14):
            break
        u = new
    return rotation_to_axis(u)[0]


def fit_frame(pred: np.ndarray, true: np.ndarray, group: str, n_candidates: int = N_CANDIDATES,
              rng: np.random.Generator | None = None) -> np.ndarray:
    """The constant frame Q (3, 3) with true ~ pred @ Q @ g, robust and symmetry-aware.

    Candidates Q_i = pred_i^T true_i of up to ``n_candidates`` particles; the one with the
    smallest median symmetric_error(pred @ Q, true) is refined by iterating: each particle's
    best g, chordal mean of pred_i^T true_i g_i over the particles with error < 45 deg, until
    stable (axial classes: the mean axis). Q is defined only up to right-multiplication by G
    (and spin about z for axial classes). pred, true: (N, 3, 3).
    """
    pred = np.asarray(pred, float).reshape(-1, 3, 3)
    true = np.asarray(true, float).reshape(-1, 3, 3)
    g = parse_point_group(group)
    if len(pred) == 0 or is_spherical(g):
        return np.eye(3)
    rng = np.random.default_rng(0) if rng is None else rng
    idx = np.arange(len(pred))
    if len(idx) > n_candidates:
        idx = np.sort(rng.choice(idx, n_candidates, replace=False))
    cands = np.swapaxes(pred[idx], -1, -2) @ true[idx]
    med = [np.median(symmetric_error(pred @ q, true, g, precise=False)) for q in cands]
    q = cands[int(np.argmin(med))]
    if is_axial(g):
        return _fit_axis(pred, true, g, q)
    G = group_rotations(g)
    rel = np.swapaxes(pred, -1, -2) @ true  # (N, 3, 3)
    err = symmetric_error(pred @ q, true, g, precise=False)
    loss = _robust_loss(err)
    for _ in range(30):
        best = G[best_elements(pred @ q, true, g)]
        w = (err < ROBUST_CAP_DEG).astype(float)
        if w.sum() < 3:
            w[:] = 1.0
        new = chordal_mean(rel @ best, w)
        err = symmetric_error(pred @ new, true, g, precise=False)
        new_loss = _robust_loss(err)
        if new_loss > loss + 1e-6:
            break
        done = np.allclose(new, q, atol=1e-13)
        q, loss = new, new_loss
        if done:
            break
    return q


def _summary(err: np.ndarray) -> dict:
    err = np.asarray(err, float)
    err = err[np.isfinite(err)]
    if not len(err):
        return {"median_error_deg": None, "frac_under_15": None, "frac_under_30": None, "n": 0}
    out = {"median_error_deg": float(np.median(err))}
    out |= {f"frac_under_{t}": float(np.mean(err < t)) for t in THRESHOLDS}
    return out | {"n": len(err)}


def class_errors(pred: np.ndarray, true: np.ndarray, group: str, fit: np.ndarray,
                 score: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Fit Q on the ``fit`` rows, return (errors on the ``score`` rows (S,), Q (3, 3))."""
    q = fit_frame(pred[fit], true[fit], group, rng=rng)
    return symmetric_error(pred[score] @ q, true[score], group), q


def pose_scores(pred: np.ndarray, true: np.ndarray, labels: Sequence[str],
                groups: Mapping[str, str], fit_mask: np.ndarray, score_mask: np.ndarray,
                rng: np.random.Generator, random_draws: int = 4) -> dict:
    """Symmetry-aware pose scores of predicted rotations, one frame fitted per class.

    Args:
        pred, true: (N, 3, 3) rotations (x, y, z) (pred None: only the random and true
            pipelines run, the prediction's entries are None); labels: (N,) classes;
        groups: {class: point group} (missing -> C1);
        fit_mask, score_mask: (N,) bool (frame fit / scoring rows);
        rng: seeds the frame candidates and the random baseline (``random_draws`` sets of
            uniform rotations, pooled).
    Returns:
        {median_error_deg, frac_under_15, frac_under_30, n, random_median_error_deg,
        true_median_error_deg, per_class {class: {median_error_deg, frac_under_15, frac_under_30,
        random_median_error_deg, n, group}}, asymmetric {median_error_deg,
        random_median_error_deg, frac_under_15, frac_under_30}, skipped {class: reason},
        frames {class: Q (3x3 list)}, errors (N,) per particle (NaN where not scored),
        random_errors (the pooled random-baseline errors)}.
    """
    true = np.asarray(true, float)
    pred = None if pred is None else np.asarray(pred, float)
    labels = np.asarray(labels, dtype=object)
    fit_mask, score_mask = np.asarray(fit_mask, bool), np.asarray(score_mask, bool)
    errors = np.full(len(labels), np.nan)
    pooled: dict[str, list] = {"pred": [], "rand": [], "true": [], "pred_c1": [], "rand_c1": []}
    per_class, skipped, frames = {}, {}, {}
    for c in sorted(set(labels)):
        grp = parse_point_group(groups.get(c, "C1"))
        m = labels == c
        fit, score = m & fit_mask, m & score_mask
        if is_spherical(grp):
            skipped[c] = f"point group {grp}: no orientation defined"
            continue
        if not fit.any() or not score.any():
            skipped[c] = "no particles to fit the frame on" if not fit.any() else \
                "no particles to score"
            continue
        if pred is not None:
            err, q = class_errors(pred, true, grp, fit, score, rng)
            errors[score] = err
            frames[c] = q.tolist()
        else:
            err = np.full(int(score.sum()), np.nan)
        rand = np.concatenate([class_errors(Rotation.random(len(labels), random_state=rng)
                                            .as_matrix(), true, grp, fit, score, rng)[0]
                               for _ in range(random_draws)])
        exact = class_errors(true, true, grp, fit, score, rng)[0]
        per_class[c] = _summary(err) | {"random_median_error_deg": float(np.median(rand)),
                                        "group": grp}
        pooled["pred"].append(err)
        pooled["rand"].append(rand)
        pooled["true"].append(exact)
        if grp == "C1":
            pooled["pred_c1"].append(err)
            pooled["rand_c1"].append(rand)
    cat = {k: np.concatenate(v) if v else np.zeros(0) for k, v in pooled.items()}

    def med(a: np.ndarray) -> float | None:
        return float(np.median(a)) if len(a) else None

    res = _summary(cat["pred"]) | {"random_median_error_deg": med(cat["rand"]),
                                   "true_median_error_deg": med(cat["true"])}
    asym = _summary(cat["pred_c1"])
    res["asymmetric"] = {k: asym[k] for k in ("median_error_deg", "frac_under_15",
                                              "frac_under_30", "n")}
    res["asymmetric"]["random_median_error_deg"] = med(cat["rand_c1"])
    return res | {"per_class": per_class, "skipped": skipped, "frames": frames,
                  "errors": errors, "random_errors": cat["rand"]}


def probe_errors(features: np.ndarray, true: np.ndarray, labels: Sequence[str],
                 groups: Mapping[str, str], fit_mask: np.ndarray, score_mask: np.ndarray,
                 k: int = 5) -> np.ndarray:
    """Per-particle errors (N,) (NaN where not scored) of a per-class kNN probe from features
    (N, F) to the true rotation (N, 3, 3): features standardised on the fit rows, the k nearest
    fit particles' rotations averaged modulo the symmetry, scored by symmetric_error."""
    from sklearn.neighbors import NearestNeighbors
    from sklearn.preprocessing import StandardScaler

    features = np.asarray(features, float).reshape(len(true), -1)
    labels = np.asarray(labels, dtype=object)
    fit_mask, score_mask = np.asarray(fit_mask, bool), np.asarray(score_mask, bool)
    err = np.full(len(labels), np.nan)
    for c in sorted(set(labels)):
        grp = parse_point_group(groups.get(c, "C1"))
        fit, score = (labels == c) & fit_mask, (labels == c) & score_mask
        if is_spherical(grp) or not fit.any() or not score.any():
            continue
        scaler = StandardScaler().fit(features[fit])
        nn = NearestNeighbors(n_neighbors=min(k, int(fit.sum()))).fit(
            scaler.transform(features[fit]))
        _, nbr = nn.kneighbors(scaler.transform(features[score]))
        fit_true = true[fit]
        pred = np.stack([symmetric_representative(fit_true[row], grp) for row in nbr])
        err[score] = symmetric_error(pred, true[score], grp)
    return err


def probe_scores(features: np.ndarray, true: np.ndarray, labels: Sequence[str],
                 groups: Mapping[str, str], fit_mask: np.ndarray, score_mask: np.ndarray,
                 k: int = 5) -> float | None:
    """Median symmetric error (degrees) of the kNN probe (:func:`probe_errors`); None when no
    particle could be scored."""
    err = probe_errors(features, true, labels, groups, fit_mask, score_mask, k)
    err = err[np.isfinite(err)]
    return float(np.median(err)) if len(err) else None


def split_masks(split: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """(fit_mask, score_mask, scored_on): fit on train + validation, score on test; without a
    test particle fit on train and score on validation; without either, in-sample on train."""
    split = np.asarray(split, dtype=object)
    if (keep & (split == "test")).any():
        return keep & np.isin(split, ["train", "validation"]), keep & (split == "test"), "test"
    if (keep & (split == "validation")).any():
        return keep & (split == "train"), keep & (split == "validation"), "validation"
    return keep & (split == "train"), keep & (split == "train"), "train (in-sample)"


def pose_report_3d(rot: np.ndarray | None, pose_block: np.ndarray, mu: np.ndarray,
                   euler_zxz: np.ndarray, labels: np.ndarray, split: np.ndarray,
                   classes: Sequence[str], groups: Mapping[str, str], seed: int
                   ) -> tuple[dict, dict, np.ndarray | None, dict]:
    """Everything the evaluate stage reports about 3D pose.

    Args:
        rot: (N, 3, 3) the model's rotations or None (no rotation: CNN, no pose);
        pose_block: (N, P) pose channel (P may be 0); mu: (N, L) shape latent;
        euler_zxz: (N, 3) true SHREC angles; labels, split: (N,); classes: the seen classes;
        groups: {class: point group}; seed: seeds frame candidates, baselines and features.
    Returns:
        (metrics, {series label: errors} for the figure, per-particle errors (N,) after each
        class's frame (in-sample on the fit rows) or None, {class: Q}).
    """
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels, dtype=object)
    true = true_matrices(euler_zxz)
    fit, score, scored_on = split_masks(split, np.isin(labels, list(classes)))
    sc = pose_scores(rot, true, labels, groups, fit, score, rng)
    frames = {c: np.asarray(q) for c, q in sc.pop("frames").items()}
    err_pred, err_rand = sc.pop("errors"), sc.pop("random_errors")
    series: dict[str, np.ndarray] = {}
    all_err = None
    if rot is not None:
        series["predicted"] = err_pred[score & np.isfinite(err_pred)]
        all_err = np.full(len(labels), np.nan)
        for c, q in frames.items():
            m = labels == c
            all_err[m] = symmetric_error(rot[m] @ q, true[m], groups.get(c, "C1"))
    series["random rotations"] = err_rand
    probe = {"k": 5, "fit_on": "train + validation" if scored_on == "test" else "train"}
    feats = {"pose_channel": pose_block, "latent": mu,
             "random": rng.standard_normal((len(labels), max(mu.shape[1], 1)))}
    for name, f in feats.items():
        if f.shape[1] == 0:
            probe[f"{name}_median_error_deg"] = None
            continue
        e = probe_errors(f, true, labels, groups, fit, score)
        probe[f"{name}_median_error_deg"] = (float(np.nanmedian(e))
                                             if np.isfinite(e).any() else None)
        if rot is None:
            series[f"{name.replace('_', '-')} probe"] = e[np.isfinite(e)]
    sc["probe"] = probe
    sc["frames"] = {c: q.tolist() for c, q in frames.items()}  # true ~ pred @ Q @ g
    sc["scored_on"] = scored_on
    sc["frame_fitted_on"] = probe["fit_on"]
    sc["rotation"] = rot is not None
    if rot is None:
        sc["note"] = ("the model's pose is not a rotation (or it has none): only the random "
                      "baseline and the probes apply")
    return sc, series, all_err, frames


def relion_angles(rot: np.ndarray) -> np.ndarray:
    """Active (x, y, z) rotation matrices (N, 3, 3) -> RELION (rot, tilt, psi) degrees (N, 3)
    (the pipeline's one RELION convention: affinity_vae.rotation.matrix_to_relion)."""
    return matrix_to_relion(np.asarray(rot, float))


def pose_star_table(latents: pd.DataFrame, rot: np.ndarray, errors: np.ndarray | None = None,
                    frames: Mapping[str, np.ndarray] | None = None) -> pd.DataFrame:
    """A RELION-style particle table carrying each particle's predicted angles.

    Args:
        latents: the latents table (N rows); rot: (N, 3, 3) predicted rotations (model frame);
        errors: (N,) symmetric errors in degrees or None; frames: {class: Q (3, 3)} fitted by
            :func:`fit_frame`. Where a class's Q is known the exported rotation is rot @ Q, i.e.
            the angles are in the structure's (template's) frame, the one RELION's reference
            uses; other classes keep the model's own frame.
    Columns: rlnTomoName, rlnCoordinateX/Y/Z, rlnAngleRot/Tilt/Psi and the prior columns
    rlnAngleRotPrior/TiltPrior/PsiPrior (the same angles), avaeClass, avaeSplit,
    avaeInStructureFrame, the paper's axis-angle form of the same rotation
    (avaeRotationAngleDeg, avaeRotationAxisX/Y/Z), avaeAngularErrorDeg (when errors are given).
    """
    rot = np.array(rot, float)
    labels = latents["class"].to_numpy(object)
    in_frame = np.zeros(len(rot), bool)
    for c, q in (frames or {}).items():
        m = labels == c
        rot[m] = rot[m] @ np.asarray(q, float)
        in_frame |= m
    ang = relion_angles(rot)
    rotvec = Rotation.from_matrix(rot).as_rotvec()
    theta = np.linalg.norm(rotvec, axis=1)
    axis = rotvec / np.where(theta > 0, theta, 1.0)[:, None]
    out = pd.DataFrame({
        "rlnTomoName": latents["tomogram"].to_numpy(),
        "rlnCoordinateX": latents["x"].to_numpy(), "rlnCoordinateY": latents["y"].to_numpy(),
        "rlnCoordinateZ": latents["z"].to_numpy(),
        "rlnAngleRot": ang[:, 0], "rlnAngleTilt": ang[:, 1], "rlnAnglePsi": ang[:, 2],
        "rlnAngleRotPrior": ang[:, 0], "rlnAngleTiltPrior": ang[:, 1],
        "rlnAnglePsiPrior": ang[:, 2],
        "avaeClass": labels, "avaeSplit": latents["split"].to_numpy(),
        "avaeInStructureFrame": in_frame.astype(int),
        "avaeRotationAngleDeg": np.degrees(theta), "avaeRotationAxisX": axis[:, 0],
        "avaeRotationAxisY": axis[:, 1], "avaeRotationAxisZ": axis[:, 2],
    })
    if errors is not None:
        out["avaeAngularErrorDeg"] = errors
    return out
