"""The parts of evaluation that need the trained model (torch): encoding, pose, decoded sweeps."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import starfile
import torch

from affinity_vae.evaluate import figs, interpolate, pose
from affinity_vae.evaluate.analyse import analyse_latents
from affinity_vae.evaluate.encode import encode
from affinity_vae.evaluate.latents import block, latents_frame
from affinity_vae.evaluate.tables import read_manifest, write_json
from affinity_vae.io.affinity_csv import read_affinity
from affinity_vae.io.atomic import atomic_path

log = logging.getLogger(__name__)


def pick_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def is_gmd(model: torch.nn.Module) -> bool:
    return getattr(model, "config", {}).get("decoder") == "gmd"


def model_rotations(model: torch.nn.Module, P: np.ndarray, device: str) -> np.ndarray | None:
    """The rotations (N, 3, 3) (x, y, z) that a 3D model's pose vectors P (N, K) stand for, or
    None when its pose is not a rotation (``model.pose_rotation``) or it has none."""
    if not P.shape[1]:
        return None
    with torch.no_grad():
        t = torch.tensor(P, dtype=torch.float32, device=device)
        r = (model.pose_rotation(t) if hasattr(model, "pose_rotation") else
             model.decoder.rotation(t) if is_gmd(model) else None)
    return None if r is None else r.detach().cpu().double().numpy()


def pose_metrics(model: torch.nn.Module, lat: pd.DataFrame, classes: Sequence[str],
                 out: Mapping[str, str], dpi: int, device: str,
                 manifest: pd.DataFrame | None = None, seed: int = 0
                 ) -> tuple[dict[str, Any], np.ndarray | None, dict[str, np.ndarray]]:
    """Score the pose channel (see affinity_vae.evaluate.pose); writes pose_png and poses when
    ``out`` names them. 3D: symmetry-aware errors of the model's rotations (when it has them),
    the random and true baselines, and kNN probes of the pose channel and the shape latent.

    Returns:
        (metrics, the model's rotations (N, 3, 3) or None, {class: fitted frame Q (3, 3)}
        with true ~ rot @ Q @ g; empty for 2D data or without rotations)."""
    P = block(lat, "pose")
    labels = lat["class"].to_numpy(object)
    split = lat["split"].to_numpy(object)
    rot = frames = errors = None
    if len(model.box) == 2:
        scored = np.isin(split, ["validation", "test"]) & np.isin(labels, list(classes))
        if not scored.any():
            scored = np.isin(labels, list(classes))
        angle = lat["euler_z1"].to_numpy(float)
        res = pose.spearman_pose(P[scored], angle[scored])
        d = res["dimension"]
        if "pose_png" in out:
            figs.pose_figure("2d", {"pose": P[scored, d], "angle": angle[scored],
                                    "labels": labels[scored], "classes": list(classes),
                                    "rho": res["spearman_rho"]}, out["pose_png"], dpi)
    else:
        rot = model_rotations(model, P, device)
        groups = pose.class_point_groups(manifest, classes)
        euler = lat[["euler_z1", "euler_x", "euler_z2"]].to_numpy(float)
        res, series, errors, frames = pose.pose_report_3d(rot, P, block(lat, "mu"), euler,
                                                          labels, split, classes, groups, seed)
        log.info("pose (%s): median error %s deg (random %s, true %s); probes %s",
                 res["scored_on"], res["median_error_deg"], res["random_median_error_deg"],
                 res["true_median_error_deg"], res["probe"])
        if "pose_png" in out:
            figs.pose_figure("3d", {"series": series, "scored_on": res["scored_on"]},
                             out["pose_png"], dpi)
    frames = frames or {}
    if "poses" not in out:
        return res, rot, frames
    table = (pose.pose_star_table(lat, rot, errors, frames) if rot is not None else
             lat[["tomogram", "x", "y", "z", "class", "split"]].rename(columns={
                 "tomogram": "rlnTomoName", "x": "rlnCoordinateX", "y": "rlnCoordinateY",
                 "z": "rlnCoordinateZ", "class": "avaeClass", "split": "avaeSplit"}))
    for i in range(P.shape[1]):
        table[f"avaePose{i}"] = P[:, i]
    with atomic_path(out["poses"]) as tmp:
        starfile.write({"particles": table}, tmp, float_format="%.6f")
    return res, rot, frames


def class_densities(structures: str | Path | None, classes: Sequence[str], n: int,
                    voxel: float) -> dict[str, np.ndarray]:
    """Each class's density ``<structures>/<class>.mrc`` (stem matched case-insensitively)
    resampled into the (n, n, n) particle box at ``voxel`` Angstrom; classes without a file are
    left out."""
    from affinity_vae.evaluate.averages import density_in_box
    from affinity_vae.io.mrc import read_volume

    if not structures or not Path(structures).is_dir():
        return {}
    files = {f.stem.lower(): f for f in sorted(Path(structures).glob("*.mrc"))}
    return {c: density_in_box(*read_volume(files[c.lower()]), n, voxel)
            for c in classes if c.lower() in files}


def averaging_sets(lat: pd.DataFrame, rot: np.ndarray, frames: Mapping[str, np.ndarray],
                   classes: Sequence[str], groups: Mapping[str, str], min_particles: int,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
    """Which particles each class is averaged over, and their rotations in the structure's
    frame. Never a particle the class's frame was fitted on: the scored particles of
    :func:`pose.split_masks` (the test tomogram), and -- for a class with fewer than
    ``min_particles`` of those while validation particles exist -- validation + test, with the
    frame refitted on the training particles alone.

    Args:
        lat: latents table (N rows); rot: (N, 3, 3) the model's rotations; frames: {class: Q}
            from the pose metric (true ~ rot @ Q @ g); groups: {class: point group}.
    Returns:
        (mask (N,) bool, pred (N, 3, 3) = rot @ Q where masked (identity elsewhere),
        {class: which particles})."""
    labels = lat["class"].to_numpy(object)
    split = lat["split"].to_numpy(object)
    true = pose.true_matrices(lat[["euler_z1", "euler_x", "euler_z2"]].to_numpy(float))
    _, score, scored_on = pose.split_masks(split, np.isin(labels, list(classes)))
    mask = np.zeros(len(lat), bool)
    pred = np.broadcast_to(np.eye(3), (len(lat), 3, 3)).copy()
    on: dict[str, str] = {}
    for c, q in frames.items():
        m = score & (labels == c)
        q, where = np.asarray(q, float), scored_on
        val, tr = (labels == c) & (split == "validation"), (labels == c) & (split == "train")
        if m.sum() < min_particles and scored_on == "test" and val.any() and tr.any():
            q = pose.fit_frame(rot[tr], true[tr], groups.get(c, "C1"), rng=rng)
            m, where = m | val, "validation + test (frame refitted on train)"
        mask |= m
        pred[m] = rot[m] @ q
        on[c] = where
    return mask, pred, on


def pose_averages(boxes: np.ndarray, lat: pd.DataFrame, rot: np.ndarray,
                  frames: Mapping[str, np.ndarray], classes: Sequence[str],
                  groups: Mapping[str, str], structures: str | Path | None, voxel: float,
                  tilt_range: Sequence[float] | None, cfg: Mapping[str, Any], seed: int,
                  figure: str | None = None, dpi: int = 150) -> dict[str, Any]:
    """Subtomogram averages of every class from the predicted, true and random rotations
    (affinity_vae.evaluate.averages), scored by FSC against the class density.

    Args:
        boxes: (N, n, n, n) particle boxes (rows of ``lat``) at ``voxel`` Angstrom;
        rot: (N, 3, 3) the model's rotations; frames: {class: Q} of the pose metric;
        structures: folder of ``<class>.mrc`` densities; tilt_range: the data's tilt range
            (the boxes' missing wedge, compensated) or None (no wedge);
        cfg: ``evaluate.averages`` ({min_particles, wiener}); figure: PNG path or None.
    Returns:
        {"averages": {class: {resolution_A_predicted, resolution_A_true, resolution_A_random,
        n, sign}}, "averages_on": {class: which particles}, "averages_skipped": {class: why}}.
    """
    from affinity_vae.evaluate import averages
    from affinity_vae.wedge import wedge_mask

    rng = np.random.default_rng([seed, 0xA7])
    n = int(boxes.shape[-1])
    min_n = int(cfg["min_particles"])
    mask, pred, on = averaging_sets(lat, rot, frames, classes, groups, min_n, rng)
    labels = lat["class"].to_numpy(object)
    true = pose.true_matrices(lat[["euler_z1", "euler_x", "euler_z2"]].to_numpy(float))
    dens = class_densities(structures, sorted(on), n, voxel)
    wedge = wedge_mask((n,) * 3, tilt_range) if tilt_range is not None else None
    res = averages.class_averages(boxes[mask], labels[mask], pred[mask], true[mask], dens,
                                  voxel, wedge, rng, min_n, float(cfg["wiener"]))
    skipped = {c: (f"no density {c}.mrc in {structures}" if c not in dens else
                   f"{int((mask & (labels == c)).sum())} particles < min_particles {min_n}")
               for c in on if c not in res["metrics"]}
    for c, m in res["metrics"].items():
        log.info("average %s (%d particles, %s): FSC 0.5 at %.1f A predicted, %.1f A true, "
                 "%.1f A random", c, m["n"], on[c], m["resolution_A_predicted"],
                 m["resolution_A_true"], m["resolution_A_random"])
    if figure:
        averages.averages_figure(res, figure, dpi)
    return {"averages": res["metrics"], "averages_on": {c: on[c] for c in res["metrics"]},
            "averages_skipped": skipped}


def sweeps(model: torch.nn.Module, lat: pd.DataFrame, classes: Sequence[str],
           affinity: pd.DataFrame, cfg: Mapping[str, Any], out: Mapping[str, str], dpi: int,
           device: str, voxel: float) -> dict[str, Any]:
    """Decode the pose sweep (when the model has a pose) and the latent interpolation."""
    vol_dir = Path(out["volumes"])
    vol_dir.mkdir(parents=True, exist_ok=True)
    mu, P = block(lat, "mu"), block(lat, "pose")
    train = lat["split"].isin(["train", "validation"]).to_numpy()
    labels = lat["class"].to_numpy(object)
    present = [c for c in classes if (train & (labels == c)).any()]
    means = np.stack([mu[train & (labels == c)].mean(0) for c in present])
    steps = int(cfg["interpolation_steps"])
    pose_mean = P[train].mean(0) if P.shape[1] else np.zeros(0)
    info: dict[str, Any] = {}
    if P.shape[1] and "pose_sweep_png" in out:
        rows = np.vstack([means, mu[train].mean(0, keepdims=True)])
        names = present + ["mean"]
        full_turn = is_gmd(model) and len(model.box) == 3
        z, p = interpolate.pose_sweep_inputs(rows, pose_mean, P[train].std(0), steps,
                                             float(cfg["pose_sweep_sigma"]), full_turn)
        dec = interpolate.decode(model, z, p, device).reshape(len(rows), steps, *model.box)
        for name, stack in zip(names, dec):
            interpolate.write_stack(vol_dir / f"pose_sweep_{name}.mrcs", stack, voxel)
        np.savez(vol_dir / "pose_sweep.npz", grid=dec, names=np.array(names))  # for `figures`
        what = "rotation angle over a full turn" if full_turn else (
            f"pose_0 from -{cfg['pose_sweep_sigma']} to +{cfg['pose_sweep_sigma']} std")
        interpolate.montage(dec, names, out["pose_sweep_png"], f"pose sweep: {what}",
                            mode="projection", dpi=dpi)
        if dec.ndim == 5:
            interpolate.montage(dec, names, vol_dir / "pose_sweep_slices.png",
                                f"pose sweep: {what}", mode="slice", dpi=dpi)
        info["pose_sweep"] = what
    pair = list(cfg["interpolation_pair"])
    if len(pair) != 2:
        sub = affinity.loc[present, present].to_numpy(float).copy()
        np.fill_diagonal(sub, np.inf)
        i, j = np.unravel_index(np.argmin(sub), sub.shape)
        pair = [present[i], present[j]]
    missing = [c for c in pair if c not in present]
    if missing:
        from affinity_vae.errors import InputError
        raise InputError(f"config key 'evaluate.interpolation_pair': {missing} not among the "
                         f"training classes {present} -- name two of them")
    za, zb = (means[present.index(c)] for c in pair)
    z = interpolate.linear_inputs(za, zb, steps)
    p = np.repeat(pose_mean[None], steps, 0) if P.shape[1] else None
    dec = interpolate.decode(model, z, p, device)
    interpolate.write_stack(vol_dir / f"interpolation_{pair[0]}_{pair[1]}.mrcs", dec, voxel)
    np.savez(vol_dir / "interpolation.npz", grid=dec[None], names=np.array(["->".join(pair)]))
    grid = np.stack([dec, dec]) if dec.ndim == 4 else dec[None]
    modes = ["slice", "projection"] if dec.ndim == 4 else ["slice"]
    _montage_modes(grid, modes, [f"{pair[0]} -> {pair[1]}"], out["interp_png"],
                   f"linear latent interpolation {pair[0]} -> {pair[1]}", dpi)
    info["interpolation_pair"] = pair
    return info


def _montage_modes(grid: np.ndarray, modes: Sequence[str], names: Sequence[str], path: str,
                   title: str, dpi: int) -> None:
    """Rows of one interpolation shown as central slice and projection (3D) or image (2D)."""
    views = np.stack([[interpolate.view(v, m) for v in row] for row, m in zip(grid, modes)])
    labels = [f"{names[0]}\n({m})" if len(modes) > 1 else names[0] for m in modes]
    interpolate.montage(views, labels, path, title, mode="slice", dpi=dpi)


def spelled_as(affinity: pd.DataFrame, names: Sequence[str]) -> pd.DataFrame:
    """The affinity matrix with its class names spelled as in ``names`` (the model's and the
    particles' classes): names match case-insensitively (affinity_vae.classnames)."""
    from affinity_vae.classnames import align_names

    found, _ = align_names(names, list(affinity.index), "the run's affinity.csv")
    rename = {v: k for k, v in found.items()}
    return affinity.rename(index=rename, columns=rename)


def evaluate_variant(model_path: str, stacks: Sequence[str], stars: Sequence[str],
                     affinity_path: str, manifest_path: str | None, out: Mapping[str, str],
                     cfg: Mapping[str, Any], seed: int, device: str = "auto", dpi: int = 150,
                     threads: int = 1, tilt_range: Sequence[float] | None = None
                     ) -> dict[str, Any]:
    """Evaluate one trained model; writes every output in ``out`` and returns its metrics.
    ``manifest_path`` is the structures folder (3D; densities for the averages),
    ``tilt_range`` the data's tilt range (the boxes' missing wedge) or None."""
    from affinity_vae.data import load_subtomos
    from affinity_vae.io.mrc import read_voxel_size
    from affinity_vae.model import load_trained

    torch.set_num_threads(max(1, threads))
    torch.manual_seed(seed)
    device = pick_device(device)
    affinity = read_affinity(affinity_path)
    model, meta = load_trained(model_path, device=device)
    classes = [str(c) for c in meta["classes"]]
    X, table = load_subtomos(stacks, stars)
    if tuple(X.shape[1:]) != tuple(model.box):
        from affinity_vae.errors import InputError
        raise InputError(f"{model_path}: trained on boxes {tuple(model.box)} but the stacks hold "
                         f"{tuple(X.shape[1:])} -- re-run `snakemake train`")
    log.info("%s: encoding %d particles on %s", meta.get("variant"), len(X), device)
    mu, logvar, P = encode(model, X, int(cfg["batch_size"]), device)
    lat = latents_frame(table, mu, logvar, P)
    affinity = spelled_as(affinity, list(dict.fromkeys(classes + list(lat["class"]))))
    with atomic_path(out["latents"]) as tmp:
        lat.to_parquet(tmp, index=False)
    label = "aVAE" if meta["variant"] == "avae" else "beta-VAE"
    manifest = read_manifest(manifest_path)
    res = analyse_latents(lat, classes, affinity, cfg, seed, out, manifest, dpi, label,
                          threads)
    res["pose"], rot, frames = (pose_metrics(model, lat, classes, out, dpi, device, manifest,
                                             seed)
                                if P.shape[1] or len(model.box) == 3 else ({}, None, {}))
    voxel = read_voxel_size(stacks[0])
    acfg = cfg["averages"]
    if rot is not None and acfg["enabled"]:
        res["pose"] |= pose_averages(X, lat, rot, frames, classes,
                                     pose.class_point_groups(manifest, classes), manifest_path,
                                     voxel, tilt_range, acfg, seed, out.get("averages_png"), dpi)
    elif "averages_png" in out:  # declared, but the model's pose is not a rotation
        from affinity_vae.evaluate.averages import averages_figure
        averages_figure({"metrics": {}, "voxel_size": voxel}, out["averages_png"], dpi)
    res["interpolations"] = sweeps(model, lat, classes, affinity, cfg, out, dpi, device, voxel)
    res["variant"] = meta.get("variant")
    res["n_particles"] = {s: int(n) for s, n in lat["split"].value_counts().items()}
    write_json(out["metrics"], res)
    log.info("%s: macro-F1 %.3f, Pearson r %.3f", res["variant"], res["macro_f1"],
             res["affinity_pearson_r"])
    return res
