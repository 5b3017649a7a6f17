"""Stage `structures`: collect the classes, make their density maps, write the folder.

Output folder (written under a temporary name and renamed when complete)::

    <class>.pdb     atomic model overlaying the map (absent for map-only classes)
    <class>.mrc     density, cubic, float32, centre of mass on voxel n//2, voxel size in header
    manifest.csv    class,family,source,n_atoms,radius_A,has_atoms,symmetry (sorted by class)

``symmetry`` is each class's point group in the frame of its map: from the catalogue for
generated classes, from ``structures.symmetry`` (default C1) for ``dir`` and ``rcsb``.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from affinity_vae.errors import InputError
from affinity_vae.io.mrc import write_volume
from affinity_vae.structures.checks import (
    check_structures_config,
    check_symmetry_config,
)
from affinity_vae.structures.density import (
    centre_map,
    model_density,
    probe_rotations,
    self_correlation,
)
from affinity_vae.structures.generate import class_names, generate_molecule
from affinity_vae.structures.sources import (
    ClassSource,
    molecule_to_structure,
    read_dir,
    read_rcsb,
)

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ["class", "family", "source", "n_atoms", "radius_A", "has_atoms", "symmetry"]
#: check_symmetry: a map correlating less than this with itself under its group warns
SYMMETRY_WARN_BELOW = 0.9


def collect(cfg: dict[str, Any], seed: int) -> list[ClassSource]:
    """Every class of the configured source, validated (raises InputError before heavy work)."""
    source = cfg["source"]
    classes = list(cfg["classes"])
    exclude = list(cfg["exclude"])
    if source == "generated":
        names = [n for n in class_names(int(cfg["n_classes"]), classes)
                 if n not in set(exclude)]
        out = []
        for name in names:
            mol = generate_molecule(name, seed, float(cfg["atom_volume"]))
            out.append(ClassSource(name, mol.family, "generated", molecule_to_structure(mol),
                                   mol.multiplicity, symmetry=mol.symmetry))
        return out
    if source == "dir":
        out = read_dir(cfg["path"], classes, exclude)
    elif source == "rcsb":
        out = read_rcsb(list(cfg["ids"]),
                        cfg["rcsb_url"],
                        cfg["cache"], classes, exclude)
    else:
        raise InputError(f"config key 'structures.source': unknown source '{source}' "
                         f"-- use generated, dir or rcsb")
    groups = check_symmetry_config(cfg)  # {lower-case class: group}; unlisted classes are C1
    for cs in out:
        cs.symmetry = groups.get(cs.name.lower(), "C1")
    return out


def log_symmetry(cs: ClassSource, vol: np.ndarray, check: bool) -> None:
    """Log the class's point group and, with ``check``, the lowest self-correlation of its map
    under the group's rotations (warning below SYMMETRY_WARN_BELOW: the declared group or its
    axes do not match the map's frame)."""
    rots = probe_rotations(cs.symmetry) if check else np.zeros((0, 3, 3))
    if len(rots) == 0:
        log.info("%-14s point group %s", cs.name, cs.symmetry)
        return
    worst = float(self_correlation(vol, rots).min())
    if worst < SYMMETRY_WARN_BELOW:
        log.warning("%-14s point group %s: the map correlates only %.3f with itself under the "
                    "group's rotations (>= %.2f expected) -- check structures.symmetry and the "
                    "map's frame (Cn about z, Dn 2-fold about x)", cs.name, cs.symmetry, worst,
                    SYMMETRY_WARN_BELOW)
    else:
        log.info("%-14s point group %s: self-correlation under its %d probe rotations >= %.3f",
                 cs.name, cs.symmetry, len(rots), worst)


def build_structures(cfg: dict[str, Any], voxel_size: float, seed: int,
                     out_dir: str | os.PathLike) -> pd.DataFrame:
    """Build the structures folder ``out_dir`` (replaced atomically) and return the manifest."""
    t0 = time.perf_counter()
    resolution = cfg["resolution"]
    check = bool(cfg["check_symmetry"])
    check_structures_config(cfg, voxel_size)
    sources = collect(cfg, seed)
    log.info("%d classes from source %s (%.2f s)", len(sources), cfg["source"],
             time.perf_counter() - t0)

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    rows, peaks, map_only = [], [], []
    try:
        for cs in sources:
            if cs.structure is None:
                map_only.append(cs)
                continue
            vol, radius = model_density(cs.structure, voxel_size, resolution, cs.multiplicity)
            cs.structure.write_pdb(str(tmp / f"{cs.name}.pdb"))
            write_volume(tmp / f"{cs.name}.mrc", vol, voxel_size)
            peaks.append(float(vol.max()))
            n_atoms = cs.structure[0].count_atom_sites()
            rows.append((cs.name, cs.family, cs.source, n_atoms, round(radius, 1), True,
                         cs.symmetry))
            log.info("%-14s %-9s %6d atoms  radius %5.1f A  box %d^3", cs.name, cs.family,
                     n_atoms, radius, vol.shape[0])
            log_symmetry(cs, vol, check)
        # Map-only classes: bring them to the units of the computed maps by matching the peak
        # density (a compact protein's peak density at a fixed resolution is nearly constant).
        target = float(np.median(peaks)) if peaks else None
        for cs in map_only:
            vol, radius = centre_map(cs.map, cs.map_voxel, voxel_size, resolution)
            if target is not None:
                vol *= target / float(vol.max())
            write_volume(tmp / f"{cs.name}.mrc", vol, voxel_size)
            rows.append((cs.name, cs.family, cs.source, 0, round(radius, 1), False,
                         cs.symmetry))
            log.info("%-14s map only (%.2f A/voxel in file), radius %5.1f A  box %d^3%s",
                     cs.name, cs.map_voxel, radius, vol.shape[0],
                     "" if target is not None else "  (values as in the file)")
            log_symmetry(cs, vol, check)
        manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS).sort_values("class")
        manifest = manifest.reset_index(drop=True)
        manifest.to_csv(tmp / "manifest.csv", index=False)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("wrote %d classes to %s in %.2f s", len(manifest), out_dir, time.perf_counter() - t0)
    return manifest


def main(smk: Any) -> None:
    """Rule entry: params structures (config section), voxel_size, seed; output the folder."""
    build_structures(dict(smk.params.structures), float(smk.params.voxel_size),
                     int(smk.params.seed), smk.output[0])
