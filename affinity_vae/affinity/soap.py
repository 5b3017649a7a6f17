"""SOAP affinity: normalised average SOAP power spectra (dscribe), dot product raised to zeta.

Atoms come from the class's PDB/mmCIF (gemmi; first model, hydrogens and waters removed) or, for
a map-only class (or ``source: map``), from *pseudo-atoms*: the voxel centres of the density
above ``map_threshold`` x its maximum, all carbon. Species outside ``species`` are dropped or
mapped to the nearest configured element by atomic number (``other_species``).

Coarse-graining (``coarse``): ``none`` keeps every heavy atom, ``ca`` keeps C-alpha atoms,
``grid`` replaces the points by one carbon pseudo-atom per occupied ``grid_A`` cell (at the
centroid of the points in it) -- the default, because the shape similarity Affinity-VAE needs
lives at the nanometre scale: all-atom SOAP with a few-Angstrom cutoff sees the same local
protein chemistry everywhere (every SHREC pair scores > 0.998). With ``grid_A`` equal to the
map voxel size, atom-derived and map-derived pseudo-atoms are of the same kind.

The structure kernel (De et al. 2016, average kernel) is
``k(A, B) = (p_A . p_B) ** zeta`` with ``p`` the per-centre SOAP power spectra averaged over
centres (dscribe ``average="outer"``) and normalised to unit length, so it is invariant to
rotation and translation and lies in [0, 1] (negative dot products, possible in principle,
are clipped to 0). At most ``max_centers`` centres (seeded random subset) enter the average;
every point stays in their environments.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import ase
import gemmi
import numpy as np
from dscribe.descriptors import SOAP

from affinity_vae.errors import InputError

log = logging.getLogger(__name__)


def read_atoms(path: str | Path, species: list[str], other: str = "drop",
               ca_only: bool = False) -> tuple[np.ndarray, list[str]]:
    """Heavy atoms of the first model of a PDB/mmCIF file.

    Args:
        species: element symbols kept (e.g. ``["C", "N", "O", "S"]``).
        other: ``drop`` atoms of other elements, or map them to the ``nearest`` kept element
            by atomic number (ties to the lighter one).
        ca_only: keep only C-alpha atoms (coarse-graining).
    Returns:
        positions: (n, 3) float64 in Angstrom (x, y, z); symbols: n element symbols.
    """
    path = Path(path)
    try:
        st = gemmi.read_structure(str(path))
    except (RuntimeError, ValueError, OSError) as exc:
        raise InputError(f"{path}: cannot read structure ({exc}) -- fix or replace the file"
                         ) from None
    st.remove_hydrogens()
    st.remove_waters()
    if len(st) == 0:
        raise InputError(f"{path}: no model in the file -- give a PDB/mmCIF with atoms")
    kept_z = {s: gemmi.Element(s).atomic_number for s in species}
    pos, sym = [], []
    for chain in st[0]:
        for res in chain:
            for atom in res:
                if ca_only and not (atom.name == "CA" and atom.element.name == "C"):
                    continue
                el = atom.element.name
                if el not in kept_z:
                    if other == "drop":
                        continue
                    z = atom.element.atomic_number
                    el = min(kept_z, key=lambda s: (abs(kept_z[s] - z), kept_z[s]))
                pos.append((atom.pos.x, atom.pos.y, atom.pos.z))
                sym.append(el)
    if not pos:
        raise InputError(f"{path}: no {'C-alpha' if ca_only else 'heavy'} atoms of species "
                         f"{species} -- give a structure with atoms or its density map")
    return np.asarray(pos, dtype=np.float64), sym


def map_pseudo_atoms(volume: np.ndarray, voxel_size: float, threshold: float) -> np.ndarray:
    """Voxel centres (n, 3) in Angstrom (x, y, z) of a (z, y, x) density above
    ``threshold`` x its maximum (the pseudo-atoms of a map-only class)."""
    vmax = float(np.nanmax(volume)) if volume.size else 0.0
    if not np.isfinite(vmax) or vmax <= 0:
        raise ValueError("density has no positive voxel")
    zyx = np.argwhere(volume >= threshold * vmax)
    return zyx[:, ::-1].astype(np.float64) * voxel_size


def grid_coarsen(positions: np.ndarray, grid: float) -> np.ndarray:
    """One point per occupied cube of side ``grid`` (Angstrom), at the centroid of its points.

    The cubes are laid out in the principal-axes frame of the points, centred on their
    centroid, so a rotated or translated copy gives the same cubes (up to a signed permutation
    of the axes, which maps the lattice onto itself) and SOAP stays rotation invariant.
    positions: (n, 3) -> (k, 3) in that frame, k <= n, rows in sorted-cell order.
    """
    centred = positions - positions.mean(0)
    _, axes = np.linalg.eigh(centred.T @ centred)
    frame = centred @ axes
    cells = np.floor(frame / grid + 0.5).astype(np.int64)
    _, inv = np.unique(cells, axis=0, return_inverse=True)
    inv = inv.ravel()
    count = np.bincount(inv).astype(np.float64)
    return np.stack([np.bincount(inv, weights=frame[:, d]) / count for d in range(3)], 1)


def class_points(pdb: Path | None, volume: np.ndarray | None, voxel_size: float,
                 cfg: dict[str, Any]) -> tuple[np.ndarray, list[str]]:
    """The points (n, 3) Angstrom and species of one class after source choice and
    coarse-graining (``cfg`` = the ``affinity.soap`` config section)."""
    use_map = pdb is None or cfg["source"] == "map"
    if use_map:
        if volume is None:
            raise ValueError("neither atoms nor a map")
        pos = map_pseudo_atoms(volume, voxel_size, cfg["map_threshold"])
        sym = ["C"] * len(pos)
    else:
        pos, sym = read_atoms(pdb, cfg["species"], cfg["other_species"], cfg["coarse"] == "ca")
    if cfg["coarse"] == "grid":
        pos = grid_coarsen(pos, cfg["grid_A"])
        sym = ["C"] * len(pos)
    return pos, sym


def soap_descriptor(cfg: dict[str, Any]) -> SOAP:
    """The dscribe SOAP (average="outer") of the config section ``affinity.soap``."""
    species = ["C"] if cfg["coarse"] in ("grid",) else list(cfg["species"])
    if "C" not in species:
        species = ["C", *species]
    with warnings.catch_warnings():  # GTO basis at large r_cut: harmless conditioning warning
        warnings.simplefilter("ignore")
        return SOAP(species=species, r_cut=cfg["r_cut"], n_max=cfg["n_max"],
                    l_max=cfg["l_max"], sigma=cfg["sigma"], rbf=cfg["rbf"], average="outer",
                    periodic=False)


def soap_vectors(points: list[tuple[np.ndarray, list[str]]], cfg: dict[str, Any],
                 seed: int = 0, n_jobs: int = 1) -> np.ndarray:
    """Unit-length average SOAP power spectrum of each class, shape (n_classes, n_features)."""
    desc = soap_descriptor(cfg)
    rng = np.random.default_rng(seed)
    systems, centers = [], []
    for pos, sym in points:
        centred = pos - pos.mean(0)
        systems.append(ase.Atoms(symbols=sym, positions=centred))
        n = len(pos)
        if n > cfg["max_centers"]:
            centers.append(np.sort(rng.choice(n, cfg["max_centers"], replace=False)).tolist())
        else:
            centers.append(list(range(n)))
    log.info("SOAP: %d classes, %s points, %d features", len(systems),
             [len(p) for p, _ in points], desc.get_number_of_features())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # joblib workers cost seconds to start: only worth it for large jobs
        work = sum(len(c) for c in centers) * max(len(p) for p, _ in points)
        jobs = max(1, min(n_jobs, len(systems))) if work > 5e7 else 1
        x = desc.create(systems, centers=centers, n_jobs=jobs)
    x = np.asarray(x, dtype=np.float64).reshape(len(systems), -1)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    if not np.all(norm > 0):
        raise InputError("a class has an all-zero SOAP spectrum (no neighbour within "
                         "affinity.soap.r_cut) -- raise r_cut or lower grid_A")
    return x / norm


def soap_kernel(x: np.ndarray, zeta: float) -> np.ndarray:
    """Structure kernel (n, n) = clip(x x^T, 0, 1) ** zeta, symmetric, unit diagonal."""
    k = np.clip(x @ x.T, 0.0, 1.0) ** zeta
    k = 0.5 * (k + k.T)
    np.fill_diagonal(k, 1.0)
    return k


def soap_matrix(pdbs: dict[str, Path | None], volumes: dict[str, np.ndarray | None],
                voxel_size: float, cfg: dict[str, Any], seed: int = 0,
                n_jobs: int = 1) -> np.ndarray:
    """SOAP affinity (n, n) of the classes of ``pdbs`` (in that order); a class without a PDB
    uses its density from ``volumes`` (at ``voxel_size`` Angstrom)."""
    points = [class_points(pdbs[k], volumes.get(k), voxel_size, cfg) for k in pdbs]
    return soap_kernel(soap_vectors(points, cfg, seed, n_jobs), cfg["zeta"])
