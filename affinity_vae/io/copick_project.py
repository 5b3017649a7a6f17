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

import json
import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from affinity_vae.errors import InputError
from affinity_vae.io.atomic import atomic_path
from affinity_vae.io.mrc import write_volume
from affinity_vae.rotation import matrix_to_zxz

log = logging.getLogger(__name__)

ROTATION_COLUMNS = [f"r{i}{j}" for i in range(3) for j in range(3)]
SPACING_RTOL = 1e-4
LOCAL_PROTOCOLS = ("local://", "file://", "/")


@dataclass(frozen=True)
class CopickSettings:
    """The ``dataset.copick`` section (no defaults here: they live in
    workflow/schemas/dataset.schema.yaml).

    voxel_spacing: Angstrom (null in config = dataset.voxel_size); runs/objects None = all
    (all particle objects); picks_user_id/picks_session_id None = any (the input picks);
    user_id/session_id: where predictions are written.
    """

    config: Path
    tomo_type: str
    voxel_spacing: float
    runs: tuple[str, ...] | None
    objects: tuple[str, ...] | None
    picks_user_id: str | None
    picks_session_id: str | None
    user_id: str
    session_id: str

    @classmethod
    def from_dataset(cls, ds: Mapping[str, Any]) -> CopickSettings:
        cp = ds["copick"]
        if not cp["config"]:
            raise InputError("config key 'dataset.copick.config' is required when dataset.source "
                             "is copick -- set it to your copick project's config JSON")
        if not cp["tomo_type"]:
            raise InputError("config key 'dataset.copick.tomo_type' is required when "
                             "dataset.source is copick -- set it to the tomogram type to read "
                             "(e.g. wbp, denoised)")
        spacing = cp["voxel_spacing"] or ds["voxel_size"]
        if not spacing:
            raise InputError("config key 'dataset.copick.voxel_spacing' is required -- set it to "
                             "the voxel spacing (Angstrom) of the tomograms to read")
        seq = (lambda v: None if v is None else tuple(str(x) for x in v))
        opt = (lambda v: None if v is None else str(v))
        return cls(Path(cp["config"]).expanduser(), str(cp["tomo_type"]), float(spacing),
                   seq(cp["runs"]), seq(cp["objects"]), opt(cp["picks_user_id"]),
                   opt(cp["picks_session_id"]), str(cp["user_id"]), str(cp["session_id"]))


# ---------------------------------------------------------------- the project
def open_project(s: CopickSettings) -> Any:
    """The copick root of ``s.config`` (a local filesystem project), or one InputError line."""
    import copick

    path = s.config
    if not path.is_file():
        raise InputError(f"config key 'dataset.copick.config': file '{path}' not found -- point "
                         f"it at your copick project's config JSON")
    try:
        data = json.loads(path.read_text(errors="replace"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON ({exc}) -- fix the copick config") from None
    if not isinstance(data, dict) or data.get("config_type", "filesystem") != "filesystem":
        raise InputError(f"{path}: config_type must be 'filesystem' (local copick projects only) "
                         f"-- copy the project to a local folder and point overlay_root there")
    for key in ("overlay_root", "static_root"):
        root = data.get(key)
        if root is not None and not str(root).startswith(LOCAL_PROTOCOLS):
            raise InputError(f"{path}: {key} '{root}' is not on the local filesystem -- only "
                             f"local copick projects are read (use local:///abs/path)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return copick.from_file(str(path))
    except (ValueError, TypeError, KeyError, OSError) as exc:  # pydantic's errors are ValueErrors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{path}: not a readable copick config ({first}) -- fix the "
                         f"file (copick's config format)") from None


def run_names(ds: Mapping[str, Any]) -> list[str]:
    """The copick runs the dataset uses (planning time): dataset.copick.runs or every run of
    the project, in the project's order."""
    s = CopickSettings.from_dataset(ds)
    if s.runs is not None:
        return list(s.runs)
    names = [r.name for r in open_project(s).runs]
    if not names:
        raise InputError(f"{s.config}: the copick project has no runs -- add runs (tomograms) "
                         f"to it or point dataset.copick.config at another project")
    return names


def get_run(root: Any, s: CopickSettings, name: str) -> Any:
    run = root.get_run(name)
    if run is None:
        have = sorted(r.name for r in root.runs)
        raise InputError(f"{s.config}: no run '{name}' in the copick project (runs: "
                         f"{_short(have)}) -- fix dataset.copick.runs")
    return run


def get_tomogram(run: Any, s: CopickSettings) -> Any:
    """The run's tomogram of s.tomo_type at s.voxel_spacing (relative tolerance 1e-4)."""
    spacings = [v for v in run.voxel_spacings
                if math.isclose(v.voxel_size, s.voxel_spacing, rel_tol=SPACING_RTOL)]
    if not spacings:
        have = sorted(v.voxel_size for v in run.voxel_spacings)
        raise InputError(f"{s.config}: run '{run.name}' has no voxel spacing {s.voxel_spacing:g} A "
                         f"(has: {have}) -- set dataset.copick.voxel_spacing (and "
                         f"dataset.voxel_size) to one of them")
    tomos = spacings[0].get_tomograms(s.tomo_type)
    if not tomos:
        have = sorted(t.tomo_type for t in spacings[0].tomograms)
        raise InputError(f"{s.config}: run '{run.name}' has no tomogram of type '{s.tomo_type}' at "
                         f"{s.voxel_spacing:g} A (types: {have}) -- set dataset.copick.tomo_type "
                         f"to one of them")
    return tomos[0]


def tomogram_scale0(tomogram: Any, s: CopickSettings, run: str) -> tuple[str, tuple[int, ...], float]:
    """(array path, (z, y, x) shape, voxel size in A) of the full-resolution scale of the
    tomogram's OME-Zarr, from its metadata only."""
    import zarr
    from copick.util.ome import get_voxel_size_from_zarr

    try:
        group = zarr.open_group(tomogram.zarr(), mode="r")
        path = str(group.attrs["multiscales"][0]["datasets"][0]["path"])
        shape = tuple(int(n) for n in group[path].shape)
        voxel = float(get_voxel_size_from_zarr(group))
    except (ValueError, TypeError, KeyError, IndexError, OSError) as exc:  # zarr's are ValueErrors
        raise InputError(f"{s.config}: the '{s.tomo_type}' tomogram of run '{run}' is not a "
                         f"readable OME-Zarr ({type(exc).__name__}: {exc}) -- rewrite it with "
                         f"copick (copick add tomogram)") from None
    if len(shape) != 3:
        raise InputError(f"{s.config}: the '{s.tomo_type}' tomogram of run '{run}' has shape "
                         f"{list(shape)}, not (z, y, x) -- store a 3D tomogram")
    if not math.isclose(voxel, s.voxel_spacing, rel_tol=SPACING_RTOL):
        raise InputError(f"{s.config}: the '{s.tomo_type}' tomogram of run '{run}' stores voxel "
                         f"size {voxel:g} A in its OME-Zarr scale 0 but sits under voxel spacing "
                         f"{s.voxel_spacing:g} A -- fix its multiscales metadata")
    return path, shape, voxel


def object_names(root: Any, s: CopickSettings) -> list[str]:
    """The pickable objects that become classes: dataset.copick.objects or every particle
    object of the project."""
    objects = {o.name: o for o in root.pickable_objects}
    if s.objects is None:
        names = [n for n, o in objects.items() if o.is_particle]
        if not names:
            raise InputError(f"{s.config}: the copick project has no particle objects "
                             f"(is_particle: true) -- add them to pickable_objects")
        return names
    for name in s.objects:
        if name not in objects:
            raise InputError(f"{s.config}: no pickable object '{name}' (objects: "
                             f"{_short(sorted(objects))}) -- fix dataset.copick.objects")
        if not objects[name].is_particle:
            raise InputError(f"{s.config}: pickable object '{name}' is a segmentation "
                             f"(is_particle: false), not picks -- drop it from "
                             f"dataset.copick.objects")
    return list(s.objects)


def pick_sets(run: Any, s: CopickSettings, names: Sequence[str]) -> dict[str, Any]:
    """object name -> its one input pick set in ``run`` (objects without picks are left out).

    Raises:
        InputError: several users'/sessions' sets of one object and no picks_user_id to choose.
    """
    out = {}
    for name in names:
        sets = run.get_picks(object_name=name, user_id=s.picks_user_id,
                             session_id=s.picks_session_id)
        if s.picks_user_id is None:  # never read our own predictions back as ground truth
            sets = [p for p in sets if (p.user_id, p.session_id) != (s.user_id, s.session_id)]
        if len(sets) > 1:
            ids = sorted(f"{p.user_id}/{p.session_id}" for p in sets)
            raise InputError(f"{s.config}: run '{run.name}' has {len(sets)} pick sets of "
                             f"'{name}' (user/session: {ids}) -- set dataset.copick."
                             f"picks_user_id (and picks_session_id) to the one to read")
        if sets:
            out[name] = sets[0]
    return out


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


def _short(items: Sequence[Any], n: int = 8) -> str:
    items = list(items)
    return str(items[:n])[:-1] + f", ... ({len(items)})]" if len(items) > n else str(items)
