"""Checks of the `structures` config section that the schema cannot express.

Light (no gemmi/scipy import) so that the Snakefile's config check can call it before any job.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from affinity_vae.classnames import class_key
from affinity_vae.errors import InputError

PDB_ID = re.compile(r"^[0-9][A-Za-z0-9]{3}$")
MODEL_SUFFIXES = (".pdb.gz", ".cif.gz", ".ent.gz", ".pdb", ".ent", ".cif", ".mmcif")
MAP_SUFFIXES = (".mrc", ".map")


def split_name(path: Path) -> tuple[str, str] | None:
    """(class name, "model" | "map") of a structure file name, or None for other files.

    The class name is the file stem's :func:`affinity_vae.classnames.class_key` (lower case):
    ``1BXN.mrc`` and ``1bxn.pdb`` are one class, ``1bxn``, in every file the pipeline writes."""
    low = path.name.lower()
    for suf in MODEL_SUFFIXES:
        if low.endswith(suf):
            return class_key(path.name[: -len(suf)]), "model"
    for suf in MAP_SUFFIXES:
        if low.endswith(suf):
            return class_key(path.name[: -len(suf)]), "map"
    return None


def dir_class_names(folder: str | os.PathLike) -> list[str]:
    """Class names (file stems) of the structure files in ``folder`` and its subfolders, hidden
    paths skipped; [] when the folder does not exist (cheap: names only, nothing is read)."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        return []
    names = set()
    for path in folder.rglob("*"):
        if path.is_file() and not any(p.startswith(".")
                                      for p in path.relative_to(folder).parts):
            split = split_name(path)
            if split is not None:
                names.add(split[0])
    return sorted(names)


def check_pdb_id(pdb_id: Any) -> str:
    """The lower-case PDB ID, or InputError for a malformed one."""
    if not isinstance(pdb_id, str) or not PDB_ID.match(pdb_id):
        raise InputError(f"config key 'structures.ids': '{pdb_id}' is not a PDB ID "
                         f"(4 characters, a digit then 3 letters/digits, e.g. 1bxn) -- fix it")
    return pdb_id.lower()


def check_structures_config(structures: dict[str, Any], voxel_size: float) -> None:
    """Raise InputError (one line, naming the key) for a `structures` section that cannot work:
    rcsb without IDs or with a malformed ID, dir without a path, an unknown generated class, a
    map resolution finer than Nyquist, a bad ``structures.symmetry`` entry."""
    source = structures["source"]
    if source == "rcsb":
        if not structures["ids"]:
            raise InputError("config key 'structures.ids' is empty -- list the PDB IDs to "
                             "download when structures.source is rcsb")
        for pid in structures["ids"]:
            check_pdb_id(pid)
    if source == "dir" and not structures["path"]:
        raise InputError("config key 'structures.path' is required when structures.source is "
                         "'dir' -- set it to a folder of PDB/mmCIF/MRC files")
    if source == "generated" and structures["classes"]:
        from affinity_vae.structures.generate import CATALOGUE  # numpy only

        unknown = [c for c in structures["classes"] if c not in CATALOGUE]
        if unknown:
            raise InputError(f"config key 'structures.classes': unknown generated class "
                             f"'{unknown[0]}' -- choose from {', '.join(CATALOGUE)}")
    res = structures["resolution"]
    if res is not None and res < 2 * voxel_size - 1e-6:
        raise InputError(f"config key 'structures.resolution': {res} A is finer than Nyquist "
                         f"(2 x dataset.voxel_size = {2 * voxel_size} A) -- raise it or set null")
    check_symmetry_config(structures)


def _group(key: str, value: Any) -> str:
    """The canonical point group of one ``structures.symmetry`` entry, or a one-line InputError."""
    from affinity_vae.symmetry import ACCEPTED, parse_point_group  # numpy/scipy only

    try:
        return parse_point_group(str(value))
    except InputError:
        raise InputError(f"config key 'structures.symmetry.{key}': point group '{value}' is "
                         f"not understood -- use one of {ACCEPTED}") from None


def check_symmetry_config(structures: dict[str, Any]) -> dict[str, str]:
    """Validate ``structures.symmetry`` ({class: point group}) and return it as {lower-case
    class: canonical group}. Raises InputError (one line, naming the key) for an unknown group,
    two keys naming one class, a class the source does not have (generated: not in the
    catalogue; rcsb: not in ``ids``; dir: no file of that stem in ``path``), or, for generated
    classes, a group other than the catalogue's."""
    mapping = structures["symmetry"]
    if not mapping:
        return {}
    if not isinstance(mapping, dict):
        raise InputError("config key 'structures.symmetry': must be a mapping {class: point "
                         "group}, e.g. {1bxn: D4} -- fix it")
    source = structures["source"]
    if source == "generated":
        from affinity_vae.structures.generate import CATALOGUE  # numpy only

        known = {n.lower(): n for n in CATALOGUE}
        where = "the generated catalogue"
    elif source == "rcsb":
        known = {str(i).lower(): str(i).lower() for i in structures["ids"]}
        where = "structures.ids"
    elif (source == "dir" and structures["path"]
          and Path(structures["path"]).expanduser().is_dir()):
        known = {n.lower(): n for n in dir_class_names(structures["path"])}
        where = f"structures.path '{structures['path']}'"
    else:
        known = None  # no folder to compare with (reported by the path check)
    out: dict[str, str] = {}
    for key, value in mapping.items():
        key = str(key)
        group = _group(key, value)
        low = key.lower()
        if low in out:
            raise InputError(f"config key 'structures.symmetry': class '{key}' is listed twice "
                             f"(names match case-insensitively) -- keep one entry")
        if known is not None and low not in known:
            raise InputError(f"config key 'structures.symmetry.{key}': no class '{key}' in "
                             f"{where} -- fix the name or remove the entry")
        if source == "generated" and group != CATALOGUE[known[low]].symmetry:
            raise InputError(f"config key 'structures.symmetry.{key}': generated class "
                             f"'{known[low]}' has point group {CATALOGUE[known[low]].symmetry}, "
                             f"not {group} -- remove the entry (generated classes carry their "
                             f"own group)")
        out[low] = group
    return out
