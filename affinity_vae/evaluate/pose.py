"""Does the pose channel capture orientation?

- 2D data: Spearman rho between each pose dimension and the true in-plane angle (the STAR's
  ``avaeEulerZ1`` column holds theta for 2D data); the dimension with the largest |rho| counts.
- 3D GMD model: the pose is an axis-angle rotation applied to the decoder's Gaussians. Its frame
  is learned, so it equals the true rotation only up to a constant per-class offset Q:
  R_true = R_pred Q. Q is estimated per class on the training split (the chordal L2 mean of
  R_pred^T R_true), and the angular error |R_pred Q R_true^-1| is measured on the other particles.
  The true rotation of a particle is SHREC's ZXZ Euler triple (degrees) read with the pipeline's
  convention (affinity_vae.rotation: extrinsic zxz, active, acting on (x, y, z)); the GMD decoder
  also rotates its (x, y, z) centroids actively, so both act in the same frame.
- Predicted angles are exported as RELION ZYZ (rlnAngleRot/Tilt/Psi) for use as a pose prior.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.spatial.transform import Rotation
from scipy.stats import spearmanr

from affinity_vae.rotation import SHREC_ORDER


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
    return {"spearman_rho": rhos[best], "dimension": best, "per_dim": rhos, "n": int(len(angle))}


def true_rotations(euler_zxz: np.ndarray) -> Rotation:
    """SHREC (Z1, X, Z2) degrees (N, 3) -> scipy Rotation (N)."""
    return Rotation.from_euler(SHREC_ORDER, np.asarray(euler_zxz, float), degrees=True)


def rotation_error(pred: Rotation, true: Rotation, labels: Sequence[str],
                   fit_mask: np.ndarray) -> tuple[np.ndarray, dict[str, Rotation]]:
    """Angular error (degrees) of predicted rotations after a per-class frame offset.

    Args:
        pred, true: N rotations each; labels: (N,) class names; fit_mask: (N,) bool, the
            particles on which each class's offset is estimated (e.g. the training split).
    Returns:
        errors (N,) in degrees (NaN for classes without fitting particles), {class: offset}.
    """
    labels = np.asarray(labels, dtype=object)
    fit_mask = np.asarray(fit_mask, bool)
    err = np.full(len(labels), np.nan)
    offsets: dict[str, Rotation] = {}
    for c in sorted(set(labels)):
        m = labels == c
        f = m & fit_mask
        if not f.any():
            continue
        q = (pred[f].inv() * true[f]).mean()
        offsets[c] = q
        idx = np.flatnonzero(m)
        err[idx] = np.degrees(((pred[idx] * q) * true[idx].inv()).magnitude())
    return err, offsets


def gmd_pose_metrics(rot_pred: np.ndarray, euler_zxz: np.ndarray, labels: Sequence[str],
                     splits: Sequence[str]) -> tuple[dict, np.ndarray]:
    """Median angular error of a GMD model's rotations on non-training particles.

    Args:
        rot_pred: (N, 3, 3) predicted rotation matrices acting on (x, y, z) columns.
        euler_zxz: (N, 3) true SHREC Euler angles; labels, splits: (N,).
    Returns:
        ({median_angular_error_deg, mean, n, random_baseline_deg, offset_fitted_on}, errors (N,)).
    """
    splits = np.asarray(splits, dtype=object)
    pred = Rotation.from_matrix(np.asarray(rot_pred, float))
    true = true_rotations(euler_zxz)
    fit = splits == "train"
    err, _ = rotation_error(pred, true, labels, fit)
    score = (~fit) & np.isfinite(err)
    if not score.any():  # e.g. no test particles: report the in-sample error, and say so
        score = np.isfinite(err)
    # Uniformly random rotations have a median angular distance of about 126.5 degrees.
    return {"median_angular_error_deg": float(np.median(err[score])),
            "mean_angular_error_deg": float(np.mean(err[score])), "n": int(score.sum()),
            "random_baseline_deg": 126.5,
            "offset_fitted_on": "train split, per class"}, err


def relion_angles(rot: np.ndarray) -> np.ndarray:
    """Active (x, y, z) rotation matrices (N, 3, 3) -> RELION (rot, tilt, psi) degrees (N, 3)
    (RELION's matrix is the inverse of the active rotation; see affinity_vae.rotation)."""
    return Rotation.from_matrix(np.asarray(rot, float)).inv().as_euler("ZYZ", degrees=True)


def pose_star_table(latents: pd.DataFrame, rot: np.ndarray, errors: np.ndarray | None
                    ) -> pd.DataFrame:
    """A RELION-style particle table carrying the predicted angles (model frame) per particle."""
    ang = relion_angles(rot)
    out = pd.DataFrame({
        "rlnTomoName": latents["tomogram"].to_numpy(),
        "rlnCoordinateX": latents["x"].to_numpy(), "rlnCoordinateY": latents["y"].to_numpy(),
        "rlnCoordinateZ": latents["z"].to_numpy(),
        "rlnAngleRot": ang[:, 0], "rlnAngleTilt": ang[:, 1], "rlnAnglePsi": ang[:, 2],
        "avaeClass": latents["class"].to_numpy(), "avaeSplit": latents["split"].to_numpy(),
    })
    if errors is not None:
        out["avaeAngularErrorDeg"] = errors
    return out
