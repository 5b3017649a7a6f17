"""Stage `predict`: a trained model applied to new tomograms -> latents, classes, poses (STAR).

Per new tomogram (``predict.tomograms``; by default the run's own test tomograms):

1. the tomogram is denoised like the training data (rule ``predict_denoise``, when
   ``denoise.enabled`` and ``predict.denoise``), and boxes are cut at the given coordinates
   (SHREC particle_locations.txt or STAR) with the run's ``extract`` settings;
2. every box is encoded (mu, logvar, pose) -> ``predict/<name>_latents.parquet``;
3. the ``evaluate.classifier`` is fitted on the run's training latents and predicts a seen class;
4. poor fits: d = 1 - cos(mu, m_c) to the nearest training-class mean m_c; when d exceeds the
   ``predict.unknown_quantile`` quantile of the same distance over class c's own training
   particles, the call is ``unknown, nearest <c>`` instead of the classifier's class;
5. ``predict/<name>.star``: coordinates, the call, the classifier's class, nearest class,
   distance and threshold, the pose vector, and for a 3D model whose pose is a rotation
   (``model.pose_rotation``) the predicted angles as RELION rot/tilt/psi and the same angles as
   the prior columns rlnAngleRotPrior/TiltPrior/PsiPrior -- a pose prior for subtomogram
   averaging. When the training run's ``eval/<variant>/metrics.json`` holds ``pose.frames``
   (each class's fitted frame Q, true ~ R_pred @ Q), a particle's rotation is R_pred @ Q of its
   predicted class, i.e. in that class structure's frame (``avaeInStructureFrame`` 1), else in
   the model's own frame (0);
6. write-back (:func:`write_back`): ``predict/<name>_relion.star``, a RELION 5 particles STAR
   (centred A coordinates, rlnClassNumber of the predicted class, the angles and priors;
   affinity_vae.io.relion.write_particles), and copick picks when the dataset is a copick
   project (affinity_vae.io.copick_project.write_picks, table :func:`picks_table`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from affinity_vae.errors import InputError
from affinity_vae.evaluate.latents import block

log = logging.getLogger(__name__)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def unknown_thresholds(train_mu: np.ndarray, train_labels: Sequence[str],
                       classes: Sequence[str], quantile: float
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Class means of mu (C, L) and per-class thresholds (C,) on the cosine distance."""
    labels = np.asarray(train_labels, dtype=object)
    means = np.stack([train_mu[labels == c].mean(0) for c in classes])
    thr = np.empty(len(classes))
    for i, c in enumerate(classes):
        d = 1 - _unit(train_mu[labels == c]) @ _unit(means[i:i + 1]).T
        thr[i] = np.quantile(d, quantile)
    return means, thr


def call_particles(mu: np.ndarray, predicted: Sequence[str], means: np.ndarray,
                   thresholds: np.ndarray, classes: Sequence[str]) -> pd.DataFrame:
    """The call per particle (mu (N, L)): the predicted class, or "unknown, nearest X"."""
    sims = _unit(mu) @ _unit(means).T
    k = np.argmax(sims, axis=1)
    dist = 1 - sims[np.arange(len(mu)), k]
    nearest = np.asarray(classes, dtype=object)[k]
    poor = dist > thresholds[k]
    call = np.where(poor, [f"unknown, nearest {c}" for c in nearest], np.asarray(predicted))
    return pd.DataFrame({"avaeCall": call, "avaePredictedClass": list(predicted),
                         "avaeNearestClass": nearest, "avaeCosineDistance": dist,
                         "avaeUnknownThreshold": thresholds[k]})


def read_frames(metrics_path: str | Path | None) -> dict[str, np.ndarray]:
    """{class: Q (3, 3)} from a training run's metrics.json (``pose.frames``); empty when the
    file or the key is absent."""
    import json

    if not metrics_path or not Path(metrics_path).is_file():
        return {}
    try:
        frames = json.loads(Path(metrics_path).read_text()).get("pose", {}).get("frames") or {}
    except json.JSONDecodeError as exc:
        raise InputError(f"{metrics_path}: not valid JSON ({exc}) -- re-run `snakemake "
                         f"evaluate`") from None
    return {str(c): np.asarray(q, float).reshape(3, 3) for c, q in frames.items()}


def angle_columns(rot: np.ndarray, predicted: Sequence[str],
                  frames: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """RELION angle and prior columns of predicted rotations rot (N, 3, 3) (x, y, z), each put
    into its predicted class's structure frame (rot @ Q) where ``frames`` has that class.

    Columns: rlnAngleRot/Tilt/Psi, rlnAngleRotPrior/TiltPrior/PsiPrior (the same angles),
    avaeInStructureFrame (1 where a frame was applied)."""
    from affinity_vae.evaluate.pose import relion_angles

    rot = np.array(rot, float)
    predicted = np.asarray(predicted, dtype=object)
    in_frame = np.zeros(len(rot), bool)
    for c, q in frames.items():
        m = predicted == c
        rot[m] = rot[m] @ np.asarray(q, float)
        in_frame |= m
    ang = relion_angles(rot).reshape(-1, 3)
    cols = {"rlnAngleRot": ang[:, 0], "rlnAngleTilt": ang[:, 1], "rlnAnglePsi": ang[:, 2]}
    cols |= {f"{k}Prior": v for k, v in cols.items()}
    return pd.DataFrame(cols | {"avaeInStructureFrame": in_frame.astype(int)})


def predict_particles(model_path: str, stack: str, star: str, train_latents: str,
                      eval_cfg: Mapping[str, Any], quantile: float, seed: int, out_star: str,
                      out_latents: str, device: str = "auto", threads: int = 1,
                      train_metrics: str | None = None) -> pd.DataFrame:
    """Encode, classify and call one tomogram's particles; writes out_star and out_latents.
    ``train_metrics``: the run's eval/<variant>/metrics.json (its pose.frames put predicted
    angles into each class's structure frame)."""
    import starfile
    import torch

    from affinity_vae.data import load_subtomos
    from affinity_vae.evaluate.classify import fit_classifier
    from affinity_vae.evaluate.encode import encode
    from affinity_vae.evaluate.latents import latents_frame
    from affinity_vae.evaluate.model_eval import model_rotations, pick_device
    from affinity_vae.io.atomic import atomic_path
    from affinity_vae.model import load_trained

    torch.set_num_threads(max(1, threads))
    device = pick_device(device)
    model, meta = load_trained(model_path, device=device)
    classes = [str(c) for c in meta["classes"]]
    X, table = load_subtomos([stack], [star])
    if tuple(X.shape[1:]) != tuple(model.box):
        raise InputError(f"{stack}: boxes {tuple(X.shape[1:])} but the model expects "
                         f"{tuple(model.box)} -- extract with the run's extract settings")
    mu, logvar, P = encode(model, X, int(eval_cfg["batch_size"]), device)
    lat = latents_frame(table, mu, logvar, P)
    with atomic_path(out_latents) as tmp:
        lat.to_parquet(tmp, index=False)
    train = pd.read_parquet(train_latents)
    fit = train["split"].isin(["train", "validation"]) & train["class"].isin(classes)
    tmu, tlab = block(train[fit], "mu"), train.loc[fit, "class"].to_numpy(object)
    est, _ = fit_classifier(tmu, tlab, eval_cfg, seed, threads)  # evaluate's, same grid
    present = [c for c in classes if (tlab == c).any()]
    means, thr = unknown_thresholds(tmu, tlab, present, quantile)
    calls = call_particles(mu.astype(float), est.predict(mu.astype(float)), means, thr, present)
    out = pd.DataFrame({"rlnTomoName": lat["tomogram"], "rlnCoordinateX": lat["x"],
                        "rlnCoordinateY": lat["y"], "rlnCoordinateZ": lat["z"]})
    rot = model_rotations(model, P, device) if len(model.box) == 3 else None
    if rot is not None:
        frames = read_frames(train_metrics)
        out = pd.concat([out, angle_columns(rot, calls["avaePredictedClass"], frames)], axis=1)
        log.info("angles of %d particles, %s", len(out),
                 "in their predicted class's structure frame" if frames else
                 "in the model's own frame (no pose.frames in the run's metrics.json)")
    out = pd.concat([out, calls], axis=1)
    out["avaeGivenClass"] = lat["class"]
    for i in range(P.shape[1]):
        out[f"avaePose{i}"] = P[:, i]
    with atomic_path(out_star) as tmp:
        starfile.write({"particles": out}, tmp, float_format="%.6f")
    out.attrs["classes"] = classes
    n_unknown = int(calls["avaeCall"].str.startswith("unknown").sum())
    log.info("%s: %d particles, %d called unknown (quantile %.3g)", out_star, len(out),
             n_unknown, quantile)
    return out


def picks_table(out: pd.DataFrame) -> pd.DataFrame:
    """The predictions as the copick write-back reads them (affinity_vae.io.copick_project.
    write_picks): one row a particle, columns tomogram, x, y, z (voxels of the tomogram),
    predicted (the classifier's class), unknown (bool: the call is "unknown, nearest ..."),
    r00 .. r22 (row-major entries of the (3, 3) active rotation in (x, y, z) -- the predicted
    pose in the class's structure frame when known, see :func:`angle_columns`; NaN without
    predicted angles).
    """
    from affinity_vae.rotation import relion_to_matrix

    angles = ["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]
    if all(c in out.columns for c in angles):
        rot = relion_to_matrix(out[angles].to_numpy(float)).reshape(-1, 9)
    else:
        rot = np.full((len(out), 9), np.nan)
    cols = {f"r{i}{j}": rot[:, 3 * i + j] for i in range(3) for j in range(3)}
    return pd.DataFrame({"tomogram": out["rlnTomoName"].astype(str).to_numpy(),
                         "x": out["rlnCoordinateX"].to_numpy(float),
                         "y": out["rlnCoordinateY"].to_numpy(float),
                         "z": out["rlnCoordinateZ"].to_numpy(float),
                         "predicted": out["avaePredictedClass"].astype(str).to_numpy(),
                         "unknown": out["avaeCall"].astype(str).str.startswith("unknown")
                         .to_numpy(bool), **cols})


def write_back(out: pd.DataFrame, ds: Mapping[str, Any], relion_star: str | None,
               header: str | None) -> None:
    """Predictions out to the user's tools: a RELION 5 particles STAR (``relion_star``;
    coordinates centred in A with the RELION project's geometry when the tomogram is one of
    its tomograms, else with ``header``'s MRC at dataset.voxel_size, binning 1) and, for a
    copick dataset, copick picks (one pick set per predicted class)."""
    from affinity_vae.io import relion

    voxel_size = float(ds["voxel_size"])
    names = list(dict.fromkeys(out["rlnTomoName"].astype(str)))
    if relion_star:
        info = relion.read_tomograms(ds) if ds["source"] == "relion" else {}
        if not all(n in info for n in names):
            if header is None:
                raise InputError(f"{relion_star}: no tomogram geometry for {names} -- "
                                 f"internal: the predict rule needs the tomogram's header")
            info = {n: relion.header_tomogram(n, header, voxel_size) for n in names}
        optics = {k: ds[k] for k in ("voltage_kv", "cs_mm", "amplitude_contrast")}
        relion.write_particles(out, info, relion_star, out.attrs.get("classes") or
                               sorted(set(out["avaePredictedClass"].astype(str))), optics)
    if ds["source"] == "copick":
        try:
            from affinity_vae.io.copick_project import write_picks
        except ImportError as exc:
            raise InputError(f"dataset.source copick: cannot import copick ({exc}) -- install "
                             f"copick in the predict environment") from None
        write_picks(dict(ds), picks_table(out), voxel_size)


def extract_new(tomogram: str, coordinates: str, stack: str, star: str, name: str,
                extract_cfg: Mapping[str, Any], voxel_size: float) -> None:
    """Cut boxes from a new tomogram with the run's extract settings.

    ``coordinates``: a SHREC particle_locations.txt, or a STAR file (``.star``) with
    rlnCoordinateX/Y/Z in voxels (see affinity_vae.io.star.read_coordinates_star). Labelled
    particles go through the run's class filter; unlabelled ones (a STAR file without a class
    column) are all kept.
    """
    from dataclasses import replace

    from affinity_vae.extract import Settings, dataset_classes, extract_tomogram
    from affinity_vae.io.mrc import read_volume
    from affinity_vae.io.shrec import read_particle_locations
    from affinity_vae.io.star import UNLABELLED, read_coordinates_star

    s = Settings.from_config(dict(extract_cfg))
    if not Path(coordinates).is_file():
        raise InputError(f"config key 'predict.tomograms': coordinates file {coordinates} not "
                         f"found -- give a SHREC particle_locations.txt or a STAR file")
    if Path(coordinates).suffix.lower() == ".star":
        shape = read_volume(tomogram, mmap=True)[0].shape
        locations = read_coordinates_star(coordinates, shape)
        if (locations["class"] == UNLABELLED).all():
            s = replace(s, exclude_classes=(), rename={}, classes=None)
        raw = list(locations["class"])
    else:
        locations = coordinates
        raw = list(read_particle_locations(coordinates)["class"].astype(str))
    class_list = dataset_classes(raw, s, str(coordinates))
    extract_tomogram(tomogram, locations, stack, star, name, s, voxel_size, class_list, "test")


def main_extract(smk: Any) -> None:
    """Rule ``predict_extract`` (scripts/predict_extract.py): boxes of a new tomogram."""
    extract_new(smk.input.tomogram, smk.input.coordinates, smk.output.stack, smk.output.star,
                smk.wildcards.name, smk.params.extract, float(smk.params.voxel_size))


def main(smk: Any) -> None:
    """Rule ``predict_particles`` (scripts/predict.py): encode, classify, call, write back."""
    out = predict_particles(smk.input.model, smk.input.stack, smk.input.star,
                            smk.input.latents, smk.params.evaluate,
                            float(smk.params.predict["unknown_quantile"]), int(smk.params.seed),
                            smk.output.star, smk.output.latents, smk.params.device,
                            int(smk.threads), train_metrics=smk.input.get("metrics"))
    write_back(out, smk.params.dataset, smk.output.get("relion"), smk.input.get("header"))
