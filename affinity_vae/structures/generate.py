"""Deterministic generator of pseudo-atomic molecules in shape families of controlled similarity.

Each class is a union of simple solids (spheres, capsules, hollow cylinders, shells) filled with
coarse pseudo-atoms on a jittered cubic lattice. One pseudo-atom stands for ``atom_volume`` cubic
Angstrom of protein (default 144 A^3, i.e. 8 heavy atoms at the protein density of one heavy atom
per 18 A^3); its element is drawn with protein composition (C 63 %, N 17 %, O 19 %, S 1 % of heavy
atoms). The multiplicity (heavy atoms per pseudo-atom) is recorded in a REMARK of the PDB and is
used as the atom weight when the density is computed, so maps have protein-like mass.

Near-twins (ring6/ring7, rod_short/rod_long, tetra/octa, dumbbell/dumbbell_asym, lobes3/lobes4)
give the affinity matrix structure. Every class knows its point group (``Shape.symmetry``) in the
frame it is built in; ``lobes3``, ``lobes4`` and ``hook`` have none (C1), so their orientation is
fully defined. Coordinates are in Angstrom, centred on the centre of mass.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from affinity_vae.errors import InputError

#: protein volume per heavy atom (A^3): 1.35 g/cm^3 and ~14.2 Da per heavy atom (with its H)
HEAVY_ATOM_VOLUME = 18.0
#: heavy-atom composition of an average protein
ELEMENTS = np.array(["C", "N", "O", "S"])
ELEMENT_FRACTIONS = np.array([0.63, 0.17, 0.19, 0.01])
#: PDB REMARK carrying the pseudo-atom multiplicity (read back by sources.read_model)
MULTIPLICITY_REMARK = "REMARK   3 AVAE PSEUDO-ATOMS: EACH ATOM STANDS FOR {:.3f} HEAVY ATOMS"

Inside = Callable[[np.ndarray], np.ndarray]  # (n, 3) points in A -> (n,) bool


def _sphere(c, r: float) -> Inside:
    c = np.asarray(c, float)
    return lambda p: np.sum((p - c) ** 2, axis=1) <= r * r


def _capsule(a, b, r: float) -> Inside:
    """Cylinder of radius r from a to b with hemispherical caps."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    ab = b - a

    def inside(p):
        t = np.clip((p - a) @ ab / (ab @ ab), 0.0, 1.0)
        return np.sum((p - a - t[:, None] * ab) ** 2, axis=1) <= r * r

    return inside


def _tube(r_out: float, r_in: float, height: float) -> Inside:
    """Hollow cylinder along z, open at both ends, centred on the origin."""
    def inside(p):
        rho2 = p[:, 0] ** 2 + p[:, 1] ** 2
        return (rho2 <= r_out**2) & (rho2 >= r_in**2) & (np.abs(p[:, 2]) <= height / 2)

    return inside


def _shell(r_out: float, r_in: float) -> Inside:
    def inside(p):
        d2 = np.sum(p**2, axis=1)
        return (d2 <= r_out**2) & (d2 >= r_in**2)

    return inside


def _disk(radius: float, height: float) -> Inside:
    def inside(p):
        return (p[:, 0] ** 2 + p[:, 1] ** 2 <= radius**2) & (np.abs(p[:, 2]) <= height / 2)

    return inside


def _ring(n: int, r_sub: float = 25.0, gap: float = 0.9) -> list[Inside]:
    """n spherical subunits of radius r_sub on a circle, neighbours overlapping slightly."""
    big = gap * r_sub / np.sin(np.pi / n)
    ang = 2 * np.pi * np.arange(n) / n
    return [_sphere((big * np.cos(t), big * np.sin(t), 0.0), r_sub) for t in ang]


def _tetra(d: float = 45.0, r: float = 30.0) -> list[Inside]:
    v = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], float) / np.sqrt(3)
    return [_sphere(d * x, r) for x in v]


def _octa(d: float = 45.0, r: float = 26.0) -> list[Inside]:
    v = np.vstack([np.eye(3), -np.eye(3)])
    return [_sphere(d * x, r) for x in v]


@dataclass(frozen=True)
class Shape:
    """A generated class: its family, its solids, its point group and a one-line description.

    ``symmetry`` is the point group of the solids in the frame they are built in (RELION
    conventions: Cn about z, Dn with a 2-fold about x, T/O with 2-/4-folds along x, y, z;
    Cinf/Dinf about z; K = spherical). tests/test_structures.py checks every claim on the map.
    """

    family: str
    parts: Callable[[], list[Inside] | Inside]
    extent: float  # half-size (A) of the bounding cube the lattice covers
    description: str
    symmetry: str


def _lobes(extra: bool) -> list[Inside]:
    """Three different globules (r 3.2, 2.7, 2.2 nm) on 2.2 nm stalks from the largest, 1.2 nm
    apart, at 100 degrees and off-plane: no symmetry axis. ``extra`` adds a fourth small globule
    (r 1.7 nm) on the largest one, below their plane (the near-twin)."""
    b = np.array([1.0, 0.0, 0.0]) * (32 + 27 + 12)
    c = np.array([np.cos(np.radians(100)), np.sin(np.radians(100)), 0.3])
    c = c / np.linalg.norm(c) * (32 + 22 + 12)
    parts = [_sphere((0, 0, 0), 32), _sphere(b, 27), _sphere(c, 22),
             _capsule((0, 0, 0), b, 11), _capsule((0, 0, 0), c, 11)]
    if extra:
        d = np.array([-0.3, -0.5, -0.8])
        parts.append(_sphere(d / np.linalg.norm(d) * (32 + 17 - 4), 17))
    return parts


def _hook() -> list[Inside]:
    """An L: a long arm along z bent into a short arm towards +x, a knob off their plane."""
    return [_capsule((0, 0, -55), (0, 0, 45), 18), _capsule((0, 0, 45), (50, 0, 55), 16),
            _sphere((10, 28, -50), 26)]


#: The catalogue, in the order ``structures.n_classes`` takes classes from it (the first 12 are
#: the default data).
CATALOGUE: dict[str, Shape] = {
    "ring6": Shape("ring", lambda: _ring(6), 80, "6 globules (r 2.5 nm) in a ring, ~14 nm", "D6"),
    "ring7": Shape("ring", lambda: _ring(7), 85, "7 globules in a ring, ~15 nm (twin of ring6)",
                   "D7"),
    "rod_short": Shape("rod", lambda: _capsule((0, 0, -45), (0, 0, 45), 28), 80,
                       "capsule, 5.6 nm wide, 15 nm long", "Dinf"),
    "rod_long": Shape("rod", lambda: _capsule((0, 0, -95), (0, 0, 95), 28), 135,
                      "capsule, 5.6 nm wide, 25 nm long (twin of rod_short)", "Dinf"),
    "tetra": Shape("cluster", _tetra, 80, "4 globules (r 3 nm) on a tetrahedron, ~15 nm", "T"),
    "octa": Shape("cluster", _octa, 80, "6 globules (r 2.6 nm) on an octahedron, ~14 nm", "O"),
    "dumbbell": Shape("dumbbell", lambda: [_sphere((0, 0, -65), 32), _sphere((0, 0, 65), 32),
                                           _capsule((0, 0, -65), (0, 0, 65), 12)], 105,
                      "two 6.4 nm globules joined by a 2.4 nm stalk, ~19.5 nm", "Dinf"),
    "dumbbell_asym": Shape("dumbbell", lambda: [_sphere((0, 0, -65), 38),
                                                _sphere((0, 0, 65), 24),
                                                _capsule((0, 0, -65), (0, 0, 65), 12)], 115,
                           "7.6 nm and 4.8 nm globules joined by a stalk, ~19 nm", "Cinf"),
    "globule": Shape("globule", lambda: [_sphere((0, 0, 0), 25)], 35,
                     "compact sphere, 5 nm (smallest class)", "K"),
    "lobes3": Shape("lobes", lambda: _lobes(False), 110,
                    "3 different globules (r 3.2, 2.7, 2.2 nm) on stalks, no symmetry, ~17 nm",
                    "C1"),
    "lobes4": Shape("lobes", lambda: _lobes(True), 110,
                    "lobes3 with a 4th small globule (r 1.7 nm) (twin of lobes3)", "C1"),
    "hook": Shape("hook", _hook, 110,
                  "L-shaped capsule (3.6 nm wide, 10 + 5 nm arms) with a 5.2 nm knob off its "
                  "plane, ~18 nm", "C1"),
    "barrel": Shape("barrel", lambda: [_tube(70, 45, 200)], 110,
                    "hollow open cylinder, 14 nm wide, 20 nm tall, 2.5 nm wall", "Dinf"),
    "cage": Shape("shell", lambda: [_shell(60, 45)], 70, "hollow spherical shell, 12 nm", "K"),
    "ring5": Shape("ring", lambda: _ring(5), 75, "5 globules in a ring, ~12 nm", "D5"),
    "disk": Shape("disk", lambda: [_disk(70, 40)], 80, "solid disk, 14 nm wide, 4 nm thick",
                  "Dinf"),
    "barrel_capped": Shape("barrel", lambda: [_tube(70, 45, 200), _disk(70, 25)], 110,
                           "barrel with a central plug (twin of barrel)", "Dinf"),
}


@dataclass
class Molecule:
    """Pseudo-atoms of one class: xyz (n, 3) Angstrom, elements (n,) str, centred on the COM."""

    name: str
    family: str
    xyz: np.ndarray
    elements: np.ndarray
    multiplicity: float  # heavy atoms each pseudo-atom stands for
    symmetry: str = "C1"  # point group in this frame (Shape.symmetry)


def class_names(n_classes: int, classes: list[str] | None = None) -> list[str]:
    """The generated classes to build: ``classes`` if given, else the first ``n_classes``."""
    if classes:
        unknown = [c for c in classes if c not in CATALOGUE]
        if unknown:
            raise InputError(f"config key 'structures.classes': unknown generated class "
                             f"'{unknown[0]}' -- choose from {', '.join(CATALOGUE)}")
        return list(dict.fromkeys(classes))
    if not 1 <= n_classes <= len(CATALOGUE):
        raise InputError(f"config key 'structures.n_classes': {n_classes} is out of range "
                         f"-- the generator has 1..{len(CATALOGUE)} classes")
    return list(CATALOGUE)[:n_classes]


def class_seed(seed: int, name: str) -> np.random.Generator:
    """A generator for one class, independent of which other classes are built."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def generate_molecule(name: str, seed: int, atom_volume: float) -> Molecule:
    """Fill the class's solids with pseudo-atoms on a jittered lattice (deterministic in seed).

    Returns a Molecule with xyz (n, 3) in Angstrom centred on its centre of mass.
    """
    if name not in CATALOGUE:
        raise InputError(f"config key 'structures.classes': unknown generated class '{name}' "
                         f"-- choose from {', '.join(CATALOGUE)}")
    if atom_volume < HEAVY_ATOM_VOLUME:
        raise InputError(f"config key 'structures.atom_volume': {atom_volume} A^3 is below one "
                         f"heavy atom ({HEAVY_ATOM_VOLUME} A^3) -- use a value >= 18")
    shape = CATALOGUE[name]
    rng = class_seed(seed, name)
    a = atom_volume ** (1 / 3)  # lattice spacing, A
    ax = np.arange(-shape.extent, shape.extent + a / 2, a)
    grid = np.stack(np.meshgrid(ax, ax, ax, indexing="ij"), axis=-1).reshape(-1, 3)
    grid = grid + rng.uniform(-0.35 * a, 0.35 * a, size=grid.shape)
    inside = np.zeros(len(grid), bool)
    parts = shape.parts()
    for part in parts if isinstance(parts, list) else [parts]:
        inside |= part(grid)
    xyz = grid[inside]
    if np.abs(xyz).max() > shape.extent - a:  # a solid would be cut by the lattice cube
        raise ValueError(f"class {name}: extent {shape.extent} A is too small for its solids")
    elements = rng.choice(ELEMENTS, size=len(xyz), p=ELEMENT_FRACTIONS)
    xyz = xyz - xyz.mean(axis=0)  # equal weights per pseudo-atom: centroid = centre of mass
    return Molecule(name, shape.family, xyz.astype(np.float64), elements,
                    atom_volume / HEAVY_ATOM_VOLUME, shape.symmetry)
