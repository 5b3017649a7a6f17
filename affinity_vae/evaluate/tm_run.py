"""Rule ``template_match``: the template-matching baseline on the test particles the models are
scored on, scored by the same code (affinity_vae.evaluate.metrics, the symmetry-aware pose
metric of affinity_vae.symmetry). The matching itself: affinity_vae.evaluate.tm.

Classes: the training classes (those with particles in the train split, affinity-matrix order,
as the models are trained on); particles: the test split's particles of those classes. Each
class's template is its density ``structures/<class>.mrc`` resampled into the box.

Outputs (``eval/tm/``): metrics.json (macro_f1, micro_f1, accuracy, per_class, groups,
groups_merged, confusion, pose, time, settings), predictions.csv, confusion.csv,
confusion_norm.csv, confusion.png, poses.star (RELION angles of the winning template's peak).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import starfile
import torch
from scipy.spatial.transform import Rotation

from affinity_vae.errors import InputError
from affinity_vae.evaluate import metrics
from affinity_vae.evaluate.tables import read_manifest, write_csv, write_json
from affinity_vae.evaluate.tm import match, rotation_grid
from affinity_vae.io.atomic import atomic_path
from affinity_vae.rotation import matrix_to_relion, matrix_to_zxz, zxz_to_matrix
from affinity_vae.symmetry import class_point_groups, symmetric_error

log = logging.getLogger(__name__)
THRESHOLDS = (15, 30)


def training_classes(table: pd.DataFrame, affinity_path: str | Path) -> list[str]:
    """The classes the models are trained (and scored) on: those with training particles, in
    affinity-matrix order (affinity_vae.data.training_data's rule)."""
    from affinity_vae.data import read_affinity_matrix

    names = table["avaeClass"].astype(str).to_numpy()
    present = set(names[table["avaeSplit"].astype(str).to_numpy() == "train"])
    if not present:
        raise InputError("no training particles: the classes TM is scored on are the training "
                         "classes -- check dataset.splits and dataset.unseen_classes")
    aff = read_affinity_matrix(affinity_path, sorted(present))
    return [c for c in aff.index if c in present]


def test_mask(table: pd.DataFrame, classes: Sequence[str]) -> np.ndarray:
    """(N,) bool: test-split particles of a training class (what the models are scored on)."""
    split = table["avaeSplit"].astype(str).to_numpy()
    m = (split == "test") & np.isin(table["avaeClass"].astype(str).to_numpy(), list(classes))
    if not m.any():
        raise InputError("no test particles of a training class -- name a test tomogram in "
                         "dataset.splits.test (or folder_splits.test for subtomo_folder)")
    return m


def densities(structures: str | Path, classes: Sequence[str], n: int, voxel: float
              ) -> np.ndarray:
    """(C, n, n, n) each class's density in the particle box; InputError when one is missing."""
    from affinity_vae.evaluate.model_eval import class_densities

    dens = class_densities(structures, classes, n, voxel)
    missing = [c for c in classes if c not in dens]
    if missing:
        raise InputError(f"{structures}: no density <class>.mrc for {missing} -- template "
                         f"matching needs one per training class; set evaluate.tm.enabled: false")
    return np.stack([dens[c] for c in classes])


def _summary(err: np.ndarray) -> dict[str, Any]:
    err = np.asarray(err, float)
    err = err[np.isfinite(err)]
    if not len(err):
        return {"median_error_deg": None, "frac_under_15": None, "frac_under_30": None, "n": 0}
    return ({"median_error_deg": float(np.median(err))}
            | {f"frac_under_{t}": float(np.mean(err < t)) for t in THRESHOLDS}
            | {"n": len(err)})


def _median(a: np.ndarray) -> float | None:
    a = a[np.isfinite(a)]
    return float(np.median(a)) if len(a) else None


def pose_errors(pred: np.ndarray, true: np.ndarray, labels: Sequence[str],
                groups: Mapping[str, str], rng: np.random.Generator,
                correct: np.ndarray | None = None) -> tuple[dict[str, Any], np.ndarray]:
    """Symmetry-aware errors of TM's rotations (already in the template's frame: no frame fit).

    Args:
        pred, true: (N, 3, 3) active (x, y, z); labels: (N,) true classes; groups: {class:
            point group}; correct: (N,) bool, particles TM classified correctly (or None).
    Returns:
        ({median_error_deg, frac_under_15, frac_under_30, n, random_median_error_deg,
        asymmetric {the same over the C1 classes}, correct_only {...},
        per_class {class: {..., random_median_error_deg, group}},
        skipped {class: why}}, errors (N,) NaN where undefined (spherical classes)).
    """
    labels = np.asarray(labels, dtype=object)
    err = np.full(len(labels), np.nan)
    rand = np.full(len(labels), np.nan)
    per_class, skipped = {}, {}
    for c in sorted(set(labels)):
        m = labels == c
        g = groups.get(c, "C1")
        err[m] = symmetric_error(pred[m], true[m], g)
        rnd = Rotation.random(int(m.sum()) * 4, random_state=rng).as_matrix()
        r = symmetric_error(rnd, np.repeat(true[m], 4, 0), g)
        rand[m] = r.reshape(-1, 4)[:, 0]
        if not np.isfinite(err[m]).any():
            skipped[c] = f"point group {g}: no orientation defined"
            continue
        per_class[c] = _summary(err[m]) | {"random_median_error_deg": float(np.median(r)),
                                           "group": g}
    res = _summary(err) | {"random_median_error_deg": _median(rand)}
    c1 = np.array([groups.get(c, "C1") == "C1" for c in labels], bool)
    res["asymmetric"] = _summary(err[c1]) | {"random_median_error_deg": _median(rand[c1])}
    if correct is not None:
        res["correct_only"] = _summary(err[np.asarray(correct, bool)])
    return res | {"per_class": per_class, "skipped": skipped}, err


def score(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str],
          manifest: pd.DataFrame | None, cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The models' classification scoring (affinity_vae.evaluate.metrics): macro/micro-F1,
    accuracy, per_class, groups (the paper's: mean per-class F1), groups_merged; ``cfg``: the
    ``evaluate`` section (its structural_groups and groups)."""
    res = metrics.classification_metrics(y_true, y_pred, classes)
    schemes = metrics.build_groups(classes, manifest, cfg["structural_groups"], cfg["groups"])
    res["groups"] = metrics.group_f1(res["per_class"], schemes)
    res["groups_merged"] = metrics.merged_group_f1(y_true, y_pred, schemes)
    return res


def template_match(stacks: Sequence[str], stars: Sequence[str], affinity_path: str,
                   structures: str, out: Mapping[str, str], cfg: Mapping[str, Any],
                   tm_cfg: Mapping[str, Any], physics: Mapping[str, Any] | None, seed: int = 0,
                   threads: int = 1, dpi: int = 150) -> dict[str, Any]:
    """Run TM on the test particles and write the files named in ``out`` (keys metrics,
    predictions, confusion, confusion_norm, confusion_png, poses; missing keys skipped).

    Args:
        cfg: ``structural_groups`` and ``groups`` of the evaluate section;
        tm_cfg: ``evaluate.tm`` (angular_step_deg, max_shift_vox, lowpass_A, mask_radius_A,
            rotation_batch);
        physics: the data's filter ({tilt_range, microscope, dark, invert}, see
            affinity_vae.evaluate.tm.data_transfer) or None.
    Returns:
        metrics (also written to out["metrics"]).
    """
    from affinity_vae.data import load_subtomos
    from affinity_vae.io.mrc import read_voxel_size

    torch.set_num_threads(max(1, threads))
    X, table = load_subtomos(stacks, stars)
    if X.ndim != 4:
        raise InputError("template matching needs 3D boxes (the data are 2D images) -- set "
                         "evaluate.tm.enabled: false")
    classes = training_classes(table, affinity_path)
    test = test_mask(table, classes)
    voxel = read_voxel_size(stacks[0])
    dens = densities(structures, classes, int(X.shape[-1]), voxel)
    rots = rotation_grid(float(tm_cfg["angular_step_deg"]))
    log.info("TM: %d test particles x %d classes x %d rotations (step %s deg)", int(test.sum()),
             len(classes), len(rots), tm_cfg["angular_step_deg"])
    t0 = time.perf_counter()
    res = match(X[test], dens, voxel, rots, float(tm_cfg["lowpass_A"]),
                int(tm_cfg["max_shift_vox"]), tm_cfg["mask_radius_A"], physics,
                int(tm_cfg["rotation_batch"]), progress=True)
    seconds = time.perf_counter() - t0
    labels = table["avaeClass"].astype(str).to_numpy()[test]
    win = res.scores.argmax(1)
    pred = np.asarray(classes, dtype=object)[win]
    manifest = read_manifest(structures)
    out_m = score(labels, pred, classes, manifest, cfg)
    counts, norm = metrics.confusion_tables(labels, pred, classes)
    out_m["confusion"] = {"classes": list(counts.columns), "counts": counts.to_numpy().tolist()}
    true = zxz_to_matrix(table[["avaeEulerZ1", "avaeEulerX", "avaeEulerZ2"]]
                         .to_numpy(float)[test]).reshape(-1, 3, 3)
    own = res.rotations[res.rot_index[np.arange(len(labels)),
                                      [classes.index(c) for c in labels]]]
    groups = class_point_groups(manifest, classes)
    rng = np.random.default_rng([seed, 0x7E])
    out_m["pose"], err = pose_errors(own, true, labels, groups, rng, correct=pred == labels)
    out_m["pose"]["note"] = ("TM's rotation is in the template's frame: scored without a frame "
                             "fit, the peak rotation of the particle's own class's template")
    out_m["time"] = {"seconds": seconds, "rotations": len(rots), "particles": int(test.sum()),
                     "classes": len(classes), "shifts": res.grid.shifts}
    g = res.grid
    out_m["settings"] = dict(tm_cfg) | {"bin": g.b, "working_box": g.w, "working_voxel_A": g.voxel,
                                        "mask_radius_vox": g.radius * g.b,
                                        "filter": _filter_name(physics)}
    out_m["variant"] = "tm"
    log.info("TM: macro-F1 %.3f, accuracy %.3f, pose median error %s deg (random %s) in %.1f s",
             out_m["macro_f1"], out_m["accuracy"], out_m["pose"]["median_error_deg"],
             out_m["pose"]["random_median_error_deg"], seconds)
    best = res.rotations[res.rot_index[np.arange(len(labels)), win]]
    _write(out, table[test].reset_index(drop=True), labels, pred, res.scores, win, best, err,
           counts, norm, dpi)
    if "metrics" in out:
        write_json(out["metrics"], out_m)
    return out_m


def _filter_name(physics: Mapping[str, Any] | None) -> str:
    if physics is None:
        return "none"
    parts = (["missing wedge"] if physics["tilt_range"] else []) + (
        ["CTF"] if physics["microscope"] else [])
    return " x ".join(parts) or "none"


def _write(out: Mapping[str, str], rows: pd.DataFrame, labels: np.ndarray, pred: np.ndarray,
           scores: np.ndarray, win: np.ndarray, best: np.ndarray, err: np.ndarray,
           counts: pd.DataFrame, norm: pd.DataFrame, dpi: int) -> None:
    """predictions.csv, confusion tables and figure, poses.star (winning template's rotation)."""
    zxz = matrix_to_zxz(best).reshape(-1, 3)
    if "predictions" in out:
        pt = pd.DataFrame({"tomogram": rows["rlnTomoName"], "stack_index": rows["avaeStackIndex"],
                           "x": rows["rlnCoordinateX"], "y": rows["rlnCoordinateY"],
                           "z": rows["rlnCoordinateZ"], "class": labels, "predicted": pred,
                           "score": scores[np.arange(len(win)), win],
                           "euler_z1": zxz[:, 0], "euler_x": zxz[:, 1], "euler_z2": zxz[:, 2],
                           "own_class_angular_error_deg": err})
        write_csv(out["predictions"], pt, index=False)
    for key, tab in (("confusion", counts), ("confusion_norm", norm)):
        if key in out:
            write_csv(out[key], tab)
    if "confusion_png" in out:
        metrics.plot_confusion(norm, out["confusion_png"], "TM confusion on the test tomogram "
                               "(row-normalised)", True, dpi)
    if "poses" in out:
        ang = matrix_to_relion(best).reshape(-1, 3)
        star = pd.DataFrame({"rlnTomoName": rows["rlnTomoName"],
                             "rlnCoordinateX": rows["rlnCoordinateX"],
                             "rlnCoordinateY": rows["rlnCoordinateY"],
                             "rlnCoordinateZ": rows["rlnCoordinateZ"],
                             "rlnAngleRot": ang[:, 0], "rlnAngleTilt": ang[:, 1],
                             "rlnAnglePsi": ang[:, 2], "avaeClass": labels,
                             "avaePredictedClass": pred, "avaeScore": scores[np.arange(len(win)),
                                                                             win]})
        with atomic_path(out["poses"]) as tmp:
            starfile.write({"particles": star}, tmp, float_format="%.6f")


def main(smk: Any) -> None:
    """Rule ``template_match`` (scripts/template_match.py)."""
    out = {k: str(v) for k, v in smk.output.items()}
    template_match(list(smk.input.stacks), list(smk.input.stars), str(smk.input.affinity),
                   str(smk.input.structures), out, dict(smk.params.evaluate),
                   dict(smk.params.tm), smk.params.physics, int(smk.params.seed),
                   int(smk.threads), int(smk.params.report["dpi"]))
