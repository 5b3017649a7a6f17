"""A copick project's settings and contents (``dataset.source: copick``): the
``dataset.copick`` section (:class:`CopickSettings`), opening a local filesystem project, its
runs, tomograms (scale 0 of the OME-Zarr), pickable objects and pick sets. The import into the
SHREC layout, the write-back of predictions as picks and the planning-time check are in
affinity_vae/io/copick_project.py (its docstring states the conventions).
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

from affinity_vae.errors import InputError

log = logging.getLogger(__name__)

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
        def seq(v: Any) -> tuple[str, ...] | None:
            return None if v is None else tuple(str(x) for x in v)

        def opt(v: Any) -> str | None:
            return None if v is None else str(v)

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


def tomogram_scale0(tomogram: Any, s: CopickSettings, run: str
                    ) -> tuple[str, tuple[int, ...], float]:
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


def _short(items: Sequence[Any], n: int = 8) -> str:
    items = list(items)
    return str(items[:n])[:-1] + f", ... ({len(items)})]" if len(items) > n else str(items)
