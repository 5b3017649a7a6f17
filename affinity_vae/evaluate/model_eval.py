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
from affinity_vae.evaluate.encode import encode
from affinity_vae.evaluate.latents import block, latents_frame
from affinity_vae.evaluate.run import (analyse_latents, read_affinity, read_manifest,
                                       write_json)
from affinity_vae.io.atomic import atomic_path

log = logging.getLogger(__name__)


def pick_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def is_gmd(model: torch.nn.Module) -> bool:
    return getattr(model, "config", {}).get("decoder") == "gmd"


def pose_metrics(model: torch.nn.Module, lat: pd.DataFrame, classes: Sequence[str],
                 out: Mapping[str, str], dpi: int, device: str,
                 manifest: pd.DataFrame | None = None, seed: int = 0) -> dict[str, Any]:
    """Score the pose channel (see affinity_vae.evaluate.pose); writes pose_png and poses when
    ``out`` names them. 3D: symmetry-aware errors of the model's rotations (when it has them),
    the random and true baselines, and kNN probes of the pose channel and the shape latent."""
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
        if P.shape[1]:
            with torch.no_grad():
                t = torch.tensor(P, dtype=torch.float32, device=device)
                r = (model.pose_rotation(t) if hasattr(model, "pose_rotation") else
                     model.decoder.rotation(t) if is_gmd(model) else None)
            rot = None if r is None else r.detach().cpu().double().numpy()
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
    if "poses" not in out:
        return res
    table = (pose.pose_star_table(lat, rot, errors, frames) if rot is not None else
             lat[["tomogram", "x", "y", "z", "class", "split"]].rename(columns={
                 "tomogram": "rlnTomoName", "x": "rlnCoordinateX", "y": "rlnCoordinateY",
                 "z": "rlnCoordinateZ", "class": "avaeClass", "split": "avaeSplit"}))
    for i in range(P.shape[1]):
        table[f"avaePose{i}"] = P[:, i]
    with atomic_path(out["poses"]) as tmp:
        starfile.write({"particles": table}, tmp, float_format="%.6f")
    return res


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
    steps = int(cfg.get("interpolation_steps", 8))
    pose_mean = P[train].mean(0) if P.shape[1] else np.zeros(0)
    info: dict[str, Any] = {}
    if P.shape[1] and "pose_sweep_png" in out:
        rows = np.vstack([means, mu[train].mean(0, keepdims=True)])
        names = present + ["mean"]
        full_turn = is_gmd(model) and len(model.box) == 3
        z, p = interpolate.pose_sweep_inputs(rows, pose_mean, P[train].std(0), steps,
                                             float(cfg.get("pose_sweep_sigma", 2.0)), full_turn)
        dec = interpolate.decode(model, z, p, device).reshape(len(rows), steps, *model.box)
        for name, stack in zip(names, dec):
            interpolate.write_stack(vol_dir / f"pose_sweep_{name}.mrcs", stack, voxel)
        np.savez(vol_dir / "pose_sweep.npz", grid=dec, names=np.array(names))  # for `figures`
        what = "rotation angle over a full turn" if full_turn else (
            f"pose_0 from -{cfg.get('pose_sweep_sigma', 2.0)} to "
            f"+{cfg.get('pose_sweep_sigma', 2.0)} std")
        interpolate.montage(dec, names, out["pose_sweep_png"], f"pose sweep: {what}",
                            mode="projection", dpi=dpi)
        if dec.ndim == 5:
            interpolate.montage(dec, names, vol_dir / "pose_sweep_slices.png",
                                f"pose sweep: {what}", mode="slice", dpi=dpi)
        info["pose_sweep"] = what
    pair = list(cfg.get("interpolation_pair") or [])
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


def evaluate_variant(model_path: str, stacks: Sequence[str], stars: Sequence[str],
                     affinity_path: str, manifest_path: str | None, out: Mapping[str, str],
                     cfg: Mapping[str, Any], seed: int, device: str = "auto", dpi: int = 150,
                     threads: int = 1) -> dict[str, Any]:
    """Evaluate one trained model; writes every output in ``out`` and returns its metrics."""
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
    mu, logvar, P = encode(model, X, int(cfg.get("batch_size", 256)), device)
    lat = latents_frame(table, mu, logvar, P)
    with atomic_path(out["latents"]) as tmp:
        lat.to_parquet(tmp, index=False)
    label = "aVAE" if meta.get("variant", "avae") == "avae" else "beta-VAE"
    res = analyse_latents(lat, classes, affinity, cfg, seed, out,
                          read_manifest(manifest_path), dpi, label)
    res["pose"] = (pose_metrics(model, lat, classes, out, dpi, device,
                                read_manifest(manifest_path), seed)
                   if P.shape[1] or len(model.box) == 3 else {})
    voxel = read_voxel_size(stacks[0])
    res["interpolations"] = sweeps(model, lat, classes, affinity, cfg, out, dpi, device, voxel)
    res["variant"] = meta.get("variant")
    res["n_particles"] = {s: int(n) for s, n in lat["split"].value_counts().items()}
    write_json(out["metrics"], res)
    log.info("%s: macro-F1 %.3f, Pearson r %.3f", res["variant"], res["macro_f1"],
             res["affinity_pearson_r"])
    return res
