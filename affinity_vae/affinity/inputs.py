"""The classes of a structures folder (stage `structures` output) as the affinity stage sees them.

A folder holds ``manifest.csv`` (class,family,source,n_atoms,radius_A,has_atoms), ``<class>.pdb``
(atomic model; absent for map-only classes) and ``<class>.mrc`` (density at the tomogram voxel
size). Without a manifest, the classes are the stems of the ``.pdb``/``.cif``/``.mrc`` files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from affinity_vae.errors import InputError
from affinity_vae.io.mrc import read_volume

MODEL_SUFFIXES = (".pdb", ".cif", ".mmcif", ".ent")


@dataclass
class ClassSet:
    """Ordered classes with their atomic model and/or density paths (None when absent)."""

    names: list[str]
    pdbs: dict[str, Path | None]
    maps: dict[str, Path | None]
    families: dict[str, str] = field(default_factory=dict)

    def volumes(self, names: list[str] | None = None) -> tuple[dict[str, np.ndarray], float]:
        """Densities (z, y, x) of ``names`` (default all; each must have a map) and their common
        voxel size in Angstrom."""
        vols, sizes = {}, {}
        for name in names if names is not None else self.names:
            path = self.maps.get(name)
            if path is None:
                raise InputError(f"class '{name}' has no density map (<class>.mrc) -- "
                                 f"re-run the structures stage or add the map")
            vols[name], sizes[name] = read_volume(path)
        if len({round(v, 4) for v in sizes.values()}) > 1:
            raise InputError(f"density maps have different voxel sizes {sizes} -- resample them "
                             f"to the tomogram voxel size (stage `structures` does)")
        return vols, (next(iter(sizes.values())) if sizes else 0.0)


def from_paths(pdbs: dict[str, str | os.PathLike | None],
               maps: dict[str, str | os.PathLike | None]) -> ClassSet:
    """A ClassSet from explicit paths; classes are the union of both keys (sorted)."""
    names = sorted(set(pdbs) | set(maps))
    cs = ClassSet(names, {n: Path(pdbs[n]) if pdbs.get(n) else None for n in names},
                  {n: Path(maps[n]) if maps.get(n) else None for n in names})
    check(cs, "the given structures")
    return cs


def check(cs: ClassSet, where: str) -> None:
    """Every class has an existing atomic model or density map; at least two classes."""
    if len(cs.names) < 2:
        raise InputError(f"{where}: {len(cs.names)} class(es); an affinity matrix needs at least "
                         f"2 -- add structures")
    for name in cs.names:
        pdb, mrc = cs.pdbs.get(name), cs.maps.get(name)
        if pdb is not None and not pdb.is_file():
            raise InputError(f"{where}: atomic model {pdb} of class '{name}' is missing -- "
                             f"re-run the structures stage")
        if mrc is not None and not mrc.is_file():
            raise InputError(f"{where}: density {mrc} of class '{name}' is missing -- "
                             f"re-run the structures stage")
        if pdb is None and mrc is None:
            raise InputError(f"{where}: class '{name}' has neither atoms (<class>.pdb) nor a "
                             f"density map (<class>.mrc) -- give one of them")


def read_structures_dir(folder: str | os.PathLike) -> ClassSet:
    """The classes of a structures folder, in manifest (else sorted file-stem) order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: structures folder not found -- run `snakemake structures`")
    manifest = folder / "manifest.csv"
    families: dict[str, str] = {}
    if manifest.is_file():
        try:
            df = pd.read_csv(manifest, dtype={"class": str, "family": str},
                             keep_default_na=False)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise InputError(f"{manifest}: unreadable ({exc}) -- re-run the structures stage"
                             ) from None
        if "class" not in df.columns or df["class"].duplicated().any():
            raise InputError(f"{manifest}: needs a 'class' column of unique names -- re-run "
                             f"the structures stage")
        names = [str(c) for c in df["class"]]
        if "family" in df.columns:
            families = dict(zip(names, df["family"].astype(str)))
        has_atoms = (df["has_atoms"].astype(str).str.lower().isin(["true", "1"]).tolist()
                     if "has_atoms" in df.columns else [True] * len(names))
    else:
        stems = {p.stem for p in folder.iterdir()
                 if p.suffix.lower() in MODEL_SUFFIXES + (".mrc",)}
        names, has_atoms = sorted(stems), [True] * len(stems)
    pdbs: dict[str, Path | None] = {}
    maps: dict[str, Path | None] = {}
    for name, atoms in zip(names, has_atoms):
        model = next((folder / f"{name}{s}" for s in MODEL_SUFFIXES
                      if (folder / f"{name}{s}").is_file()), None)
        pdbs[name] = model if atoms else None
        maps[name] = folder / f"{name}.mrc" if (folder / f"{name}.mrc").is_file() else None
    cs = ClassSet(names, pdbs, maps, families)
    check(cs, str(folder))
    return cs
