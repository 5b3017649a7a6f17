"""copick projects as a dataset (``dataset.source: copick``) and predictions written back as picks.

A copick project (the ``copick`` package; local filesystem projects only) enters the pipeline
through the import rule, which writes for every run the SHREC 2021 layout the rest of the
pipeline reads (docs/datasets.md):

- ``reconstruction.mrc``: the run's tomogram of ``dataset.copick.tomo_type`` at
  ``dataset.copick.voxel_spacing``, its full-resolution OME-Zarr scale (the first multiscales
  dataset), written with that voxel size, array order (z, y, x) as copick stores it;
- ``particle_locations.txt``: ``CLASS x y z Z1 X Z2``, one line a pick of the configured
  pickable objects (the class is the object's name).

Conventions (those of copick's own converters, copick/util/formats.py and util/relion.py):

- A pick's centre is ``location + transformation[:3, 3]`` in Angstrom (``CopickPicks.
  full_positions``); voxel = Angstrom / voxel spacing with no half-voxel shift: the centre of
  voxel index i is at i * spacing (copick converts to RELION centred coordinates with the
  tomogram centre at shape / 2 * spacing, and to Dynamo/EM pixels by a plain division).
- ``transformation[:3, :3]`` maps object (template) coordinates to tomogram coordinates, in
  (x, y, z): it is the *active* rotation that turns the template into the particle, the same
  matrix as ``affinity_vae.rotation.zxz_to_matrix`` of the SHREC angles (and as RELION's
  ``Euler_angles2matrix``, which copick composes the same way). The angles are written with
  ``matrix_to_zxz``; no other conversion is made here. Picks with ``trust_orientation: false``
  get NaN angles (SHREC's "no orientation").

Predictions go back as one pick set per predicted class under ``dataset.copick.user_id`` /
``session_id`` (:func:`write_picks`). When ``picks_user_id`` is null the import reads every
user's picks except that output set, so predictions never become ground truth.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from affinity_vae.errors import InputError
from affinity_vae.io.atomic import atomic_path
from affinity_vae.io.copick_access import (  # noqa: F401  (public names stay importable here)
    LOCAL_PROTOCOLS,
    SPACING_RTOL,
    CopickSettings,
    _short,
    get_run,
    get_tomogram,
    object_names,
    open_project,
    pick_sets,
    run_names,
    tomogram_scale0,
)
from affinity_vae.io.mrc import write_volume
from affinity_vae.rotation import matrix_to_zxz

log = logging.getLogger(__name__)

ROTATION_COLUMNS = [f"r{i}{j}" for i in range(3) for j in range(3)]


# ---------------------------------------------------------------- import
def particle_table(run: Any, s: CopickSettings, names: Sequence[str],
                   shape: Sequence[int] | None = None) -> pd.DataFrame:
    """The run's picks as a SHREC table: class, x, y, z (voxels), z1, x_angle, z2 (degrees).

    Args:
        shape: (z, y, x) of the tomogram; when given every pick must lie inside it.
    Returns:
        DataFrame, one row a pick, objects in ``names`` order, picks in file order.
    """
    frames = []
    for name, picks in pick_sets(run, s, names).items():
        centres, transforms = picks.full_positions(), picks.numpy()[1]
        if len(centres) == 0:
            continue
        xyz = np.asarray(centres, float) / s.voxel_spacing
        where = getattr(picks, "path", f"run '{run.name}' picks of '{name}'")
        rot = transforms[:, :3, :3]
        if not np.allclose(rot @ np.swapaxes(rot, 1, 2), np.eye(3), atol=1e-4) or np.any(
                np.linalg.det(rot) < 0):
            bad = int(np.argmax(np.abs(np.linalg.det(rot) - 1)))
            raise InputError(f"{where}: point {bad} has a transformation whose 3x3 part is not a "
                             f"rotation -- fix it (orthonormal, determinant +1)")
        angles = (matrix_to_zxz(rot).reshape(-1, 3) if picks.trust_orientation is not False
                  else np.full((len(xyz), 3), np.nan))
        if shape is not None:
            check_inside(xyz, shape, where, s)
        frames.append(pd.DataFrame({"class": name, "x": xyz[:, 0], "y": xyz[:, 1],
                                    "z": xyz[:, 2], "z1": angles[:, 0],
                                    "x_angle": angles[:, 1], "z2": angles[:, 2]}))
    cols = ["class", "x", "y", "z", "z1", "x_angle", "z2"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)


def check_inside(xyz: np.ndarray, shape: Sequence[int], where: str, s: CopickSettings) -> None:
    """Every (x, y, z) voxel coordinate (n, 3) inside [0, X) x [0, Y) x [0, Z)."""
    extent = np.asarray(shape[::-1], float)
    out = np.flatnonzero(np.any((xyz < 0) | (xyz >= extent), axis=1))
    if len(out):
        i = int(out[0])
        raise InputError(f"{where}: point {i} at voxel ({', '.join(f'{v:g}' for v in xyz[i])}) "
                         f"(= Angstrom / {s.voxel_spacing:g}) lies outside the "
                         f"{'x'.join(map(str, shape[::-1]))} (x, y, z) tomogram ({len(out)} such) "
                         f"-- fix the picks or dataset.copick.voxel_spacing")


def import_tomogram(ds: Mapping[str, Any], tomo: str, out_dir: Path) -> None:
    """Write ``out_dir/particle_locations.txt`` and ``out_dir/reconstruction.mrc`` (each
    atomically, the tomogram last) for copick run ``tomo`` (module docstring)."""
    s = CopickSettings.from_dataset(ds)
    root = open_project(s)
    run = get_run(root, s, tomo)
    tomogram = get_tomogram(run, s)
    path, shape, _ = tomogram_scale0(tomogram, s, tomo)
    table = particle_table(run, s, object_names(root, s), shape)
    out_dir = Path(out_dir)
    write_locations(out_dir / "particle_locations.txt", table)
    data = np.asarray(tomogram.numpy(zarr_group=path), dtype=np.float32)
    write_volume(out_dir / "reconstruction.mrc", data, s.voxel_spacing)
    log.info("%s: %d picks of %s, tomogram %s %s at %g A", tomo, len(table),
             sorted(set(table["class"])), s.tomo_type, "x".join(map(str, shape)),
             s.voxel_spacing)


def write_locations(path: Path, table: pd.DataFrame) -> None:
    """``particle_locations.txt`` with every number at full precision (repr of the float), so
    coordinates and angles round-trip exactly."""
    lines = [" ".join([str(row[0]), *(repr(float(v)) for v in row[1:])]) + "\n"
             for row in table[["class", "x", "y", "z", "z1", "x_angle", "z2"]]
             .itertuples(index=False)]
    with atomic_path(path) as tmp:
        tmp.write_text("".join(lines))


# ---------------------------------------------------------------- write-back
def match_object(name: str, objects: Sequence[str]) -> str | None:
    """The pickable object of class ``name``: same name case-insensitively, or the name copick
    would make of it (``sanitize_name``: '_' and spaces become '-')."""
    from copick.util.escape import sanitize_name

    by_key = {o.lower(): o for o in objects}
    if name.lower() in by_key:
        return by_key[name.lower()]
    try:
        return by_key.get(sanitize_name(name, suppress_warnings=True).lower())
    except ValueError:
        return None


def rotations(table: pd.DataFrame) -> np.ndarray:
    """(n, 3, 3) rotations from columns r00..r22 (identity where absent or NaN)."""
    n = len(table)
    if not set(ROTATION_COLUMNS) <= set(table.columns):
        return np.tile(np.eye(3), (n, 1, 1))
    rot = table[ROTATION_COLUMNS].to_numpy(float, copy=True).reshape(n, 3, 3)  # writable
    bad = ~np.isfinite(rot).all(axis=(1, 2))
    rot[bad] = np.eye(3)
    return rot


def write_picks(ds: Mapping[str, Any], table: pd.DataFrame, voxel_size: float) -> None:
    """Write predictions as copick picks: one pick set per (run, predicted class) under
    dataset.copick.user_id / session_id, locations in Angstrom (voxel * voxel_size),
    transformations 4x4 (rotation r00..r22, no translation). Earlier sets of this user/session
    for classes no longer predicted in a run are emptied.

    Args:
        table: columns tomogram (the run name), x, y, z (voxels), predicted, optionally
            r00..r22 (NaN = no pose: written as identity with trust_orientation false),
            score, and unknown (True: the call is "unknown, nearest <predicted>"; not written).
        voxel_size: Angstrom per voxel of x, y, z.
    """
    from copick.util.escape import sanitize_name

    s = CopickSettings.from_dataset(ds)
    check_output_ids(s)
    root = open_project(s)
    if "unknown" in table:
        unknown = table["unknown"].fillna(False).astype(bool)
        log.info("copick: %d calls 'unknown' are not written as picks", int(unknown.sum()))
        table = table[~unknown]
    objects = [o.name for o in root.pickable_objects if o.is_particle]
    target = {c: match_object(str(c), objects) for c in table["predicted"].unique()}
    for c, obj in target.items():
        if obj is None:
            log.warning("copick: class '%s' is no particle object of %s: its %d predictions are "
                        "not written as picks", c, s.config, int((table["predicted"] == c).sum()))
    uid, sid = sanitize_name(s.user_id), sanitize_name(s.session_id)
    for run_name, rows in table.groupby("tomogram", sort=False):
        run = root.get_run(str(run_name))
        if run is None:
            log.warning("copick: no run '%s' in %s: its predictions are not written as picks",
                        run_name, s.config)
            continue
        written = set()
        for c, part in rows.groupby("predicted", sort=False):
            if target[c] is None:
                continue
            positions = part[["x", "y", "z"]].to_numpy(float) * float(voxel_size)
            transforms = np.tile(np.eye(4), (len(part), 1, 1))
            transforms[:, :3, :3] = rotations(part)
            scores = part["score"].to_numpy(float) if "score" in part else None
            posed = (part[ROTATION_COLUMNS].notna().all(axis=1).any()
                     if set(ROTATION_COLUMNS) <= set(part.columns) else False)
            picks = run.new_picks(target[c], sid, uid, exist_ok=True)
            picks.meta.trust_orientation = bool(posed)
            picks.from_numpy(positions, transforms, scores=scores)
            written.add(target[c])
        for old in run.get_picks(user_id=uid, session_id=sid):
            if old.pickable_object_name not in written:
                old.from_numpy(np.zeros((0, 3)))
        log.info("copick: run %s: %d picks in %d sets (user %s, session %s)", run_name,
                 len(rows), len(written), uid, sid)


def check_output_ids(s: CopickSettings) -> None:
    """user_id/session_id are valid copick names and not the input picks' ids."""
    from copick.util.escape import sanitize_name

    for key, value in (("user_id", s.user_id), ("session_id", s.session_id)):
        clean = sanitize_name(value, suppress_warnings=True) if value.strip("-_ ") else ""
        if clean != value:
            raise InputError(f"config key 'dataset.copick.{key}': '{value}' is not a valid copick "
                             f"name (no spaces, '_' or path characters) -- use e.g. "
                             f"'{clean or 'affinity-vae'}'")
    if s.picks_user_id == s.user_id and s.picks_session_id in (None, s.session_id):
        raise InputError(f"config key 'dataset.copick.user_id': predictions would overwrite the "
                         f"input picks of user '{s.user_id}' in {s.config} -- choose another "
                         f"dataset.copick.user_id or session_id")


# ---------------------------------------------------------------- planning-time check
def check_project(config: Mapping[str, Any]) -> dict[str, str]:
    """Every check ``snakemake -n`` can make of a copick dataset (metadata and pick files only,
    never the tomogram data): the project file, runs, voxel spacing (= dataset.voxel_size),
    tomogram type, objects, output ids, every pick inside its tomogram.

    Returns:
        class (object name) -> the pick file where it first occurs, for messages.
    Raises:
        InputError: one line naming the copick config (or pick file) and the fix.
    """
    ds = config["dataset"]
    s = CopickSettings.from_dataset(ds)
    voxel_size = float(ds["voxel_size"] or s.voxel_spacing)
    if not math.isclose(voxel_size, s.voxel_spacing, rel_tol=SPACING_RTOL):
        raise InputError(f"config key 'dataset.voxel_size': {voxel_size:g} A differs from "
                         f"dataset.copick.voxel_spacing {s.voxel_spacing:g} A of {s.config} -- "
                         f"set both to the spacing of the tomograms you read")
    check_output_ids(s)
    root = open_project(s)
    names = object_names(root, s)
    found: dict[str, str] = {}
    for tomo in run_names(ds):
        run = get_run(root, s, tomo)
        _, shape, _ = tomogram_scale0(get_tomogram(run, s), s, tomo)
        table = particle_table(run, s, names, shape)
        sets = pick_sets(run, s, names)
        for name in table["class"].unique():
            found.setdefault(name, str(getattr(sets[name], "path", s.config)))
    if not found:
        who = (f"user '{s.picks_user_id}'" if s.picks_user_id else "any user")
        raise InputError(f"{s.config}: no picks of {_short(names)} by {who} in runs "
                         f"{_short(run_names(ds))} -- add picks or fix dataset.copick.objects / "
                         f"picks_user_id / picks_session_id")
    return found
