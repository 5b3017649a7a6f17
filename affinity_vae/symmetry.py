"""Point groups of particles (numpy/scipy only): names, rotation elements, axial/spherical kinds.

A template with point group G is unchanged by every element: ``template = g . template`` for g
in G (rotations act actively on (x, y, z), as everywhere in the pipeline; see
affinity_vae.rotation). A particle rotated by R is then also rotated by R @ g, so an orientation
is defined only up to right-multiplication by G.

POINT_GROUPS -- accepted names (case-insensitive) and canonical frames (those of RELION):

=========  =====================================================================================
name       group
=========  =====================================================================================
C1         no symmetry (identity only)
Cn, n>=2   n-fold rotation axis along z
Dn, n>=2   Cn plus a 2-fold axis along x (2n elements)
T          tetrahedral, 12 elements: 2-folds along x, y, z; 3-folds along (+-1, +-1, +-1)
O          octahedral, 24 elements: 4-folds along x, y, z
I (= I2)   icosahedral, 60 elements, RELION's default "Crowther 222" setting: 2-folds along
           x, y, z, and the 5-fold axes nearest +z in the xz plane, along (+-1, 0, phi)
           (phi = golden ratio)
I1         icosahedral, RELION's "no-Crowther 222" setting: I2 turned by 90 deg about z
           (5-fold axes nearest +z in the yz plane, along (0, +-1, phi))
Cinf       continuous rotation about z (a rod or ring: only the axis is defined);
           accepted spellings C∞, Cinf, C_inf
Dinf       Cinf plus a 2-fold about x (the axis is defined only up to sign)
K          spherical (a sphere, a hollow shell): no orientation defined at all
=========  =====================================================================================

For the continuous groups (Cinf, Dinf, K) :func:`group_rotations` returns only their discrete
part (identity; plus the 2-fold about x for Dinf). Scores must not sample them: compare axes
instead (see affinity_vae.evaluate.pose).
"""

from __future__ import annotations

import re
from functools import lru_cache

import numpy as np
from scipy.spatial.transform import Rotation

from affinity_vae.errors import InputError

POINT_GROUPS = ("C1", "Cn (n >= 2)", "Dn (n >= 2)", "T", "O", "I", "I1", "Cinf", "Dinf", "K")
ACCEPTED = ("C1, Cn and Dn (e.g. C6, D6), T, O, I (= I2), I1, Cinf (C∞), Dinf (D∞) or K "
            "(spherical)")
_PHI = (1.0 + 5.0 ** 0.5) / 2.0


def parse_point_group(name: str) -> str:
    """Normalise a point-group name: 'c1' -> 'C1', 'd6' -> 'D6', 'C∞'/'cinf' -> 'Cinf',
    'i2' -> 'I', 'k' -> 'K'. Raises InputError naming the value and the accepted forms."""
    raw = str(name)
    s = raw.strip().replace("∞", "inf").replace("_", "").replace(" ", "").lower()
    s = s.replace("infinity", "inf")
    fixed = {"t": "T", "o": "O", "i": "I", "i2": "I", "i1": "I1", "k": "K",
             "cinf": "Cinf", "dinf": "Dinf"}
    if s in fixed:
        return fixed[s]
    m = re.fullmatch(r"([cd])(\d+)", s)
    if m:
        n = int(m.group(2))
        if m.group(1) == "c" and n >= 1:
            return f"C{n}"
        if m.group(1) == "d" and n >= 2:
            return f"D{n}"
    raise InputError(f"point group {raw!r} is not understood -- use one of {ACCEPTED}")


def is_axial(name: str) -> bool:
    """True for Cinf and Dinf (continuous rotation about z: only the axis is defined)."""
    return parse_point_group(name) in ("Cinf", "Dinf")


def is_spherical(name: str) -> bool:
    """True for K (spherical: no orientation is defined)."""
    return parse_point_group(name) == "K"


def _axis_rotation(axis: np.ndarray, angle_deg: float) -> np.ndarray:
    axis = np.asarray(axis, float)
    return Rotation.from_rotvec(np.radians(angle_deg) * axis / np.linalg.norm(axis)).as_matrix()


def _closure(generators: list[np.ndarray], max_order: int = 60) -> np.ndarray:
    """All products of the generators (a finite group), identity first; (K, 3, 3)."""
    elems = [np.eye(3)]
    frontier = [np.eye(3)]
    while frontier:
        new = []
        for a in frontier:
            for g in generators:
                p = g @ a
                if not any(np.allclose(p, e, atol=1e-8) for e in elems):
                    elems.append(p)
                    new.append(p)
        if len(elems) > max_order:
            raise RuntimeError("group closure did not terminate")  # a bug, not a user error
        frontier = new
    out = np.stack(elems)
    out[np.abs(out) < 1e-12] = 0.0
    return out


@lru_cache(maxsize=None)
def _group_rotations(canonical: str) -> np.ndarray:
    z, x = np.array([0.0, 0, 1]), np.array([1.0, 0, 0])
    two_x = _axis_rotation(x, 180.0)
    if canonical in ("C1", "Cinf", "K"):
        return np.eye(3)[None]
    if canonical == "Dinf":
        return np.stack([np.eye(3), two_x])
    if canonical[0] in "CD":
        n = int(canonical[1:])
        cn = [_axis_rotation(z, 360.0 * k / n) for k in range(n)]
        if canonical[0] == "C":
            return np.stack(cn)
        return np.stack(cn + [c @ two_x for c in cn])
    two_z = _axis_rotation(z, 180.0)
    three = _axis_rotation([1.0, 1.0, 1.0], 120.0)
    if canonical == "T":
        return _closure([two_x, two_z, three])
    if canonical == "O":
        return _closure([_axis_rotation(z, 90.0), three])
    five = _axis_rotation([1.0, 0.0, _PHI], 72.0)  # I2: 5-fold in the xz plane
    ico = _closure([two_x, two_z, three, five])
    if canonical == "I1":
        turn = _axis_rotation(z, 90.0)
        ico = turn @ ico @ turn.T
    return ico


def group_rotations(name: str) -> np.ndarray:
    """Proper rotations of the point group acting on (x, y, z): (K, 3, 3) float64, identity
    first. K = 1 (C1), n (Cn), 2n (Dn), 12 (T), 24 (O), 60 (I, I1). For Cinf and K only the
    identity, for Dinf the identity and the 2-fold about x (the discrete part; see the module
    docstring)."""
    return _group_rotations(parse_point_group(name)).copy()


def group_order(name: str) -> float:
    """Number of elements; inf for the continuous groups Cinf, Dinf and K."""
    g = parse_point_group(name)
    return float("inf") if g in ("Cinf", "Dinf", "K") else float(len(_group_rotations(g)))
