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
instead, as :func:`symmetric_error` does.

Also here: :func:`symmetric_error` (angle modulo the group), :func:`symmetric_representative`
(the mean of rotations modulo the group), :func:`chordal_mean`, :func:`rotation_to_axis`, and
:func:`class_point_groups` (each class's group from structures/manifest.csv).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from functools import cache
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

from affinity_vae.errors import InputError
from affinity_vae.rotation import cube_rotations

log = logging.getLogger(__name__)

POINT_GROUPS = ("C1", "Cn (n >= 2)", "Dn (n >= 2)", "T", "O", "I", "I1", "Cinf", "Dinf", "K")
ACCEPTED = ("C1, Cn and Dn (e.g. C6, D6), T, O, I (= I2), I1, Cinf (C∞), Dinf (D∞) or K "
            "(spherical)")
E_Z = np.array([0.0, 0.0, 1.0])


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


@cache
def _group_rotations(canonical: str) -> np.ndarray:
    """The elements of a canonical group name: scipy's ``Rotation.create_group`` (its Cn, Dn
    have the n-fold axis along z and Dn a 2-fold along x; its T, O have 2-/4-folds along x, y, z;
    its I is RELION's I1), O from affinity_vae.rotation.cube_rotations, I (= I2) as I1 turned
    by 90 degrees about z; identity first, entries below 1e-12 set to 0."""
    if canonical in ("C1", "Cinf", "K"):
        return np.eye(3)[None]
    if canonical == "Dinf":
        return np.stack([np.eye(3), np.diag([1.0, -1.0, -1.0])])
    if canonical == "O":
        return cube_rotations()
    out = Rotation.create_group("I" if canonical == "I1" else canonical).as_matrix()
    if canonical == "I":  # RELION's I2 ("Crowther 222"): 5-folds in the xz plane
        turn = Rotation.from_euler("z", 90.0, degrees=True).as_matrix()
        out = turn @ out @ turn.T
    first = int(np.argmin(np.abs(out - np.eye(3)).max(axis=(1, 2))))
    out = np.concatenate([out[first:first + 1], np.delete(out, first, axis=0)])
    out[np.abs(out) < 1e-12] = 0.0
    return out


def group_rotations(name: str) -> np.ndarray:
    """Proper rotations of the point group acting on (x, y, z): (K, 3, 3) float64, identity
    first. K = 1 (C1), n (Cn), 2n (Dn), 12 (T), 24 (O), 60 (I, I1). For Cinf and K only the
    identity, for Dinf the identity and the 2-fold about x (the discrete part; see the module
    docstring)."""
    return _group_rotations(parse_point_group(name)).copy()


def class_point_groups(manifest: Any, classes: Sequence[str],
                       source: str = "structures/manifest.csv") -> dict[str, str]:
    """{class: point group} from a manifest table (pandas DataFrame with columns ``class`` and
    ``symmetry``, e.g. structures/manifest.csv); a missing table, column or class counts as C1
    (logged). Raises InputError naming ``source`` for a value that is not a point group."""
    if manifest is None or not {"class", "symmetry"} <= set(manifest.columns):
        log.info("%s has no 'symmetry' column: every class counts as C1", source)
        return {str(c): "C1" for c in classes}
    table = dict(zip(manifest["class"].astype(str).str.lower(),
                     manifest["symmetry"].astype(str)))
    groups = {}
    for c in classes:  # class names match case-insensitively (affinity_vae.classnames)
        value = table.get(str(c).lower(), "").strip()
        if not value:
            log.info("no point group for class %s in %s: it counts as C1", c, source)
            value = "C1"
        try:
            groups[str(c)] = parse_point_group(value)
        except InputError as err:
            raise InputError(f"{source}: column 'symmetry' of class {c}: {err}") from None
    return groups


def _axis_angle_deg(a: np.ndarray, b: np.ndarray, signless: bool) -> np.ndarray:
    """Angle in degrees between unit vectors a, b (N, 3); up to sign when ``signless``."""
    cos = np.clip(np.einsum("ni,ni->n", a, b), -1.0, 1.0)
    ang = np.degrees(np.arctan2(np.linalg.norm(np.cross(a, b), axis=1), cos))
    return np.minimum(ang, 180.0 - ang) if signless else ang


def best_elements(pred: np.ndarray, true: np.ndarray, group: str) -> np.ndarray:
    """Index into group_rotations(group) of the g nearest to each pair: argmin_g
    angle(pred_i, true_i @ g). pred, true (N, 3, 3) -> (N,) int."""
    G = group_rotations(group)
    rel = np.swapaxes(pred, -1, -2) @ true  # (N, 3, 3); angle(pred, true g) <-> trace(rel g)
    return np.argmax(np.einsum("nij,kji->nk", rel, G), axis=1)


def symmetric_error(pred: np.ndarray, true: np.ndarray, group: str,
                    precise: bool = True) -> np.ndarray:
    """Symmetry-aware angular error in degrees, (N,).

    Args:
        pred, true: (N, 3, 3) active rotation matrices acting on (x, y, z).
        group: point group of the class (affinity_vae.symmetry names).
        precise: False reads the angle from the trace (arccos: ~1e-6 deg off near 0; faster).
    Returns:
        min over g in G of the geodesic angle between pred and true @ g; Cinf: angle between
        pred e_z and true e_z; Dinf: that angle up to sign (<= 90); K: NaN.
    """
    pred = np.asarray(pred, float).reshape(-1, 3, 3)
    true = np.asarray(true, float).reshape(-1, 3, 3)
    g = parse_point_group(group)
    if is_spherical(g):
        return np.full(len(pred), np.nan)
    if is_axial(g):
        return _axis_angle_deg(pred @ E_Z, true @ E_Z, signless=g == "Dinf")
    G = group_rotations(g)
    rel = np.swapaxes(pred, -1, -2) @ true
    if not precise:
        trace = np.einsum("nij,kji->nk", rel, G).max(axis=1)
        return np.degrees(np.arccos(np.clip((trace - 1.0) / 2.0, -1.0, 1.0)))
    best = G[best_elements(pred, true, g)]
    return np.degrees(Rotation.from_matrix(rel @ best).magnitude())


def chordal_mean(mats: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """(Weighted) chordal L2 mean of rotations (N, 3, 3): the SVD projection of their mean."""
    w = np.ones(len(mats)) if weights is None else np.asarray(weights, float)
    u, _, vt = np.linalg.svd(np.einsum("n,nij->ij", w, mats))
    return u @ np.diag([1.0, 1.0, np.linalg.det(u @ vt)]) @ vt


def rotation_to_axis(axis: np.ndarray) -> np.ndarray:
    """A rotation (N, 3, 3) taking e_z to each unit vector of ``axis`` (N, 3) (shortest arc)."""
    axis = np.asarray(axis, float).reshape(-1, 3)
    axis = axis / np.linalg.norm(axis, axis=1, keepdims=True)
    cross = np.cross(E_Z, axis)
    s = np.linalg.norm(cross, axis=1)
    angle = np.arctan2(s, axis[:, 2])
    rotvec = np.zeros_like(axis)
    ok = s > 1e-12
    rotvec[ok] = cross[ok] / s[ok, None] * angle[ok, None]
    rotvec[~ok & (axis[:, 2] < 0)] = [np.pi, 0.0, 0.0]  # e_z -> -e_z: half turn about x
    return Rotation.from_rotvec(rotvec).as_matrix().reshape(-1, 3, 3)


def symmetric_representative(mats: np.ndarray, group: str) -> np.ndarray:
    """A common representative of rotations (K, 3, 3) of one class: each is brought to the
    first by its best g, then averaged (chordal mean; axial groups: the mean axis, the
    returned rotation takes e_z to it). Returns (3, 3)."""
    g = parse_point_group(group)
    ref = mats[0]
    if is_axial(g):
        axes = mats @ E_Z
        if g == "Dinf":
            axes = axes * np.sign(axes @ (ref @ E_Z) + 1e-300)[:, None]
        return rotation_to_axis(axes.sum(0))[0]
    G = group_rotations(g)
    aligned = mats @ G[best_elements(np.broadcast_to(ref, mats.shape), mats, g)]
    return chordal_mean(aligned)
