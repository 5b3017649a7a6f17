"""Planning-time checks: every mistake ``snakemake -n`` can see, before any job runs.

:func:`preflight` is called by workflow/rules/common.smk right after the config check. It reads
only what is cheap and already there: MRC headers (never the data), the text particle lists,
the names of particle and structure files, and a user's affinity CSV. Each problem is one
``InputError`` line naming the user's file (or the config key) and the fix. The stages repeat
their own checks at job time, as a second line of defence.

What is checked (the README's bad-input table lists every message):

- boxes: ``extract.box_size`` even, ``extract.bin_to`` consistent, and the box the model sees
  (``extract.bin_to`` or ``box_size``; a subtomo folder's own box; the glyph size) divisible by
  ``2**model.depth``;
- a SHREC folder (dataset.source shrec): every tomogram's reconstruction header (shape, 3D, not
  truncated, voxel size = dataset.voxel_size) and its particle_locations.txt (every line, every
  coordinate inside the tomogram);
- a subtomo folder: the file names, classes.csv and the first particle's header;
- class names (case-insensitive): extract.classes / rename / unseen_classes against the data's
  classes, and every class the run trains on against the structures (affinity.method soap or
  fsc; every class for extract.source isolated) or the user's affinity CSV (method file);
- a user's affinity CSV, restricted to the classes the run uses (the other classes' problems
  only warn: the affinity job leaves them out).

Simulated data do not exist at planning time: their classes are the structures' classes.
Light imports only (numpy, pandas, mrcfile and the project's readers).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from affinity_vae.affinity.matrix import read_affinity
from affinity_vae.classnames import align_names, class_key
from affinity_vae.errors import InputError
from affinity_vae.extract.boxes import check_voxel_size
from affinity_vae.extract.classes import (
    Settings,
    check_unseen,
    dataset_classes,
    folder_settings,
    map_classes,
)
from affinity_vae.io.shrec import read_shrec_folder, volume_header
from affinity_vae.io.subtomo_folder import find_particles, read_classes_csv
from affinity_vae.structures.checks import check_pdb_id, dir_class_names

log = logging.getLogger(__name__)


@dataclass
class DataClasses:
    """The classes of the run's data after extract's filter.

    classes: sorted class list (rlnClassNumber order); unseen: dataset.unseen_classes as
    {lower-case name: class}; origin: lower-case class -> (file, raw name) where a particle of
    the class first occurs (a particle list or a particle file), for messages.
    """

    classes: list[str]
    unseen: dict[str, str]
    origin: dict[str, tuple[Path, str]] = field(default_factory=dict)

    @property
    def training(self) -> list[str]:
        return [c for c in self.classes if class_key(c) not in self.unseen]

    def where(self, cls: str) -> str:
        """'<particle list>:<line>' (or the particle file) of the first particle of ``cls``."""
        path, raw = self.origin.get(class_key(cls), (None, cls))
        if path is None:
            return "the data"
        if path.name != "particle_locations.txt":
            return str(path)
        for lineno, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
            fields = line.split("#", 1)[0].split()
            if fields and fields[0] == raw:
                return f"{path}:{lineno}"
        return str(path)


def preflight(config: dict[str, Any]) -> None:
    """Run every planning-time check the config and the data on disk allow (module docstring).

    Args:
        config: the validated config (schema defaults filled, affinity_vae.config.check_config).
    Raises:
        InputError: one line naming the file or config key and the fix.
    """
    ds = config["dataset"]
    if ds["source"] == "alphanumeric":
        # matplotlib: only for glyphs
        from affinity_vae.alphanumeric import check_settings

        check_settings(ds["alphanumeric"], ds["unseen_classes"])
        check_depth(config, int(ds["alphanumeric"]["size"]), "dataset.alphanumeric.size")
        return
    s = Settings.from_config(config["extract"])
    if ds["source"] == "subtomo_folder":
        data, box, key = subtomo_folder_classes(config, s)
    else:
        s.check()
        box = s.out_box()
        key = "extract.bin_to" if s.bin_to else "extract.box_size"
        data = (shrec_classes(config, s) if ds["source"] == "shrec"
                else check_relion(config) if ds["source"] == "relion"
                else check_copick(config) if ds["source"] == "copick"
                else simulated_classes(config, s))
    check_depth(config, box, key)
    if data is not None:
        check_structures_cover(config, data)
        check_affinity_file(config, data)


# ---------------------------------------------------------------- boxes
def check_depth(config: dict[str, Any], box: int, key: str) -> None:
    """The box edge the model sees (``box`` voxels, set by config key ``key`` or a file) must be
    divisible by 2**model.depth (the encoder halves it depth times)."""
    depth = int(config["model"]["depth"])
    step = 2 ** depth
    if box % step == 0:
        return
    fits = max((d for d in range(1, depth) if box % 2 ** d == 0), default=0)
    fix = (f"set model.depth to {fits} or {key} to a multiple of {step}" if fits
           else f"set {key} to a multiple of {step}")
    raise InputError(f"config key 'model.depth': the model sees boxes of {box} voxels (set by "
                     f"{key}), not divisible by 2**model.depth = {step} -- {fix}")


# ---------------------------------------------------------------- the data's classes
def shrec_classes(config: dict[str, Any], s: Settings) -> DataClasses:
    """Read every tomogram folder of a SHREC dataset (headers and particle lists only) and
    return its classes; checks shapes, coordinates, voxel sizes, extract.classes/rename and
    dataset.unseen_classes."""
    ds = config["dataset"]
    raw, origin = [], {}
    for tomo in ds["tomograms"]:
        folder = read_shrec_folder(Path(ds["path"]) / tomo)
        if s.source != "isolated":  # isolated boxes are rendered, no tomogram is read
            check_voxel_size(folder.voxel_size, float(ds["voxel_size"]),
                             folder.files["reconstruction"])
        if s.source == "grandmodel" and "grandmodel" not in folder.files:
            raise InputError(f"{folder.folder}: no grandmodel.mrc -- extract.source grandmodel "
                             f"cuts the noise-free volume; use extract.source reconstruction")
        names = sorted(set(folder.particles["class"]))
        raw += names
        for name, mapped in zip(names, map_classes(names, s)):
            if mapped is not None:
                origin.setdefault(class_key(mapped), (folder.folder / "particle_locations.txt",
                                                      name))
    source = f"the particle_locations.txt files under dataset.path '{ds['path']}'"
    return _classes(config, raw, s, source, origin)


def subtomo_folder_classes(config: dict[str, Any], s: Settings
                           ) -> tuple[DataClasses, int, str]:
    """The classes of a subtomo folder (file names, classes.csv), the box the model sees and the
    key or file that sets it; checks the first particle's header (voxel size, binning)."""
    ds = config["dataset"]
    files = find_particles(ds["path"])
    unseen = ds["unseen_classes"]
    s, listed_in = folder_settings(s, ds["path"], read_classes_csv(ds["path"]), unseen,
                                   files["class"])
    first = Path(files["path"][0])
    shape, voxel = volume_header(first)
    check_voxel_size(voxel, float(ds["voxel_size"]), first)
    box = int(shape[-1])
    if s.bin_to is not None:
        s.check(box, where=f"{first} (binning with extract.bin_to)")
    key = "extract.bin_to" if s.bin_to else f"the particle files' box ({first})"
    origin = {}
    for path, name, mapped in zip(files["path"], files["class"], map_classes(files["class"], s)):
        if mapped is not None:
            origin.setdefault(class_key(mapped), (Path(path), name))
    class_list = dataset_classes(files["class"], s, str(ds["path"]), listed_in)
    data = DataClasses(class_list, check_unseen(unseen, class_list, str(ds["path"])), origin)
    return data, s.out_box(box), key


def check_relion(config: dict[str, Any]) -> DataClasses:
    """A RELION 5 project (dataset.source relion): tomograms, voxel sizes, coordinates inside
    their tomograms (affinity_vae.io.relion.check_project) and the classes of its particles."""
    # starfile: only for RELION projects
    from affinity_vae.io.relion import check_project

    ds = config["dataset"]
    s = Settings.from_config(config["extract"])
    raw = check_project(ds, float(ds["voxel_size"]),
                        read_mrc=config["extract"]["source"] != "isolated")
    star = Path(ds["relion"]["particles_star"])
    origin = {}
    for name, mapped in zip(raw, map_classes(raw, s)):
        if mapped is not None:
            origin.setdefault(class_key(mapped), (star, name))
    return _classes(config, raw, s, f"the particles of {star}", origin)


def check_copick(config: dict[str, Any]) -> DataClasses:
    """A copick project (dataset.source copick): project file, runs, tomogram type and voxel
    spacing (= dataset.voxel_size), objects, every pick inside its tomogram
    (affinity_vae.io.copick_project.check_project) and the classes (objects) of its picks."""
    # copick: only for copick projects
    from affinity_vae.io.copick_project import check_project

    s = Settings.from_config(config["extract"])
    found = check_project(config)
    raw = sorted(found)
    origin = {}
    for name, mapped in zip(raw, map_classes(raw, s)):
        if mapped is not None:
            origin.setdefault(class_key(mapped), (Path(found[name]), name))
    where = config["dataset"]["copick"]["config"]
    return _classes(config, raw, s, f"the picks of copick project {where}", origin)


def simulated_classes(config: dict[str, Any], s: Settings) -> DataClasses | None:
    """Simulated particles carry the structures' classes: check extract's filter and
    dataset.unseen_classes against them (None when the structures are not known yet)."""
    found = structure_classes(config)
    if found is None:
        return None
    names, where = found
    return _classes(config, names, s, f"the simulated particles (classes of {where})", {})


def _classes(config: dict[str, Any], raw: Sequence[str], s: Settings, source: str,
             origin: dict[str, tuple[Path, str]]) -> DataClasses:
    class_list = dataset_classes(raw, s, source)
    unseen = check_unseen(config["dataset"]["unseen_classes"], class_list, source)
    return DataClasses(class_list, unseen, origin)


# ---------------------------------------------------------------- structures and affinity
def structure_classes(config: dict[str, Any]) -> tuple[list[str], str] | None:
    """(class names, where they come from) of the structures stage, known from the config and
    the file names of structures.path; None when they cannot be known before it runs."""
    st = config["structures"]
    source = st["source"]
    classes, exclude = list(st["classes"]), list(st["exclude"])
    if source == "generated":
        from affinity_vae.structures.generate import class_names  # numpy only

        names = class_names(int(st["n_classes"]), classes)
        return ([n for n in names if n not in set(exclude)],
                "the generated structures (structures.n_classes / structures.classes)")
    if source == "rcsb":
        names, where = [check_pdb_id(i) for i in st["ids"]], "structures.ids"
    elif source == "dir" and st["path"] and Path(st["path"]).expanduser().is_dir():
        names, where = dir_class_names(st["path"]), f"structures.path '{st['path']}'"
    else:
        return None
    keys = [class_key(c) for c in classes]
    missing = [c for c in keys if c not in names]
    if missing:
        raise InputError(f"config key 'structures.classes': no structure for class "
                         f"'{missing[0]}' in {where} -- add it there or remove it from the "
                         f"list (found: {', '.join(sorted(names))})")
    drop = {class_key(c) for c in exclude}
    return sorted(n for n in (list(dict.fromkeys(keys)) or names) if n not in drop), where


def check_structures_cover(config: dict[str, Any], data: DataClasses) -> None:
    """Every class that needs a structure has one: the training classes when the affinity is
    computed from structures (affinity.method soap | fsc), every class for extract.source
    isolated (rendered from its density)."""
    isolated = config["extract"]["source"] == "isolated"
    need = data.classes if isolated else (
        data.training if config["affinity"]["method"] != "file" else [])
    found = structure_classes(config) if need else None
    if found is None or config["dataset"]["source"] == "simulate":
        return
    names, where = found
    known = {class_key(n) for n in names}
    missing = [c for c in need if class_key(c) not in known]
    if missing:
        c = missing[0]
        also = "" if isolated else " (or dataset.unseen_classes)"
        raise InputError(f"{data.where(c)}: class '{c}' has no structure in {where} (classes: "
                         f"{', '.join(names)}; {len(missing)} such: {missing}) -- add its "
                         f"structure there, fix the class name, or list it in "
                         f"extract.exclude_classes{also}")


def check_affinity_file(config: dict[str, Any], data: DataClasses) -> None:
    """affinity.method file: the user's CSV has every training class, and its values for the
    classes the run uses are valid (the other classes' problems warn)."""
    aff = config["affinity"]
    if aff["method"] != "file":
        return
    if not aff["path"]:
        raise InputError("config key 'affinity.path' is required when affinity.method is "
                         "'file' -- set it to your affinity CSV")
    path = Path(aff["path"])
    if not path.is_file():
        if path.parts[:1] == ("results",):
            return  # made by a rule of this workflow (e.g. the glyph affinity)
        raise InputError(f"config key 'affinity.path': file '{path}' not found -- point it at "
                         f"your affinity CSV")
    df = read_affinity(path, scale="keep" if aff["scale"] == "keep" else "unit",
                       tol=float(aff["tolerance"]), check=data.classes)
    _, missing = align_names(data.training, list(df.index), str(path))
    if missing:
        raise InputError(f"{path}: no row and column for class(es) {missing} of the data (e.g. "
                         f"{data.where(missing[0])}) -- add them to this CSV (config key "
                         f"affinity.path), or list them in dataset.unseen_classes or "
                         f"extract.exclude_classes")
