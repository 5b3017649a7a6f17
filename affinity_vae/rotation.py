"""Euler-angle conventions of the pipeline (numpy/scipy only; used by simulate, extract, evaluate).

Axes
----
Volumes are numpy arrays indexed ``vol[z, y, x]``. Physical axes are right-handed x, y, z with
x = last array axis, y = middle axis, z = first axis. Coordinates and rotation matrices below are
always written in (x, y, z) order; :func:`zyx_matrix` turns an (x, y, z) matrix into the one that
acts on array indices (z, y, x).

SHREC Euler angles (``particle_locations.txt``: ``CLASS x y z Z1 X Z2``, degrees)
--------------------------------------------------------------------------------
The rotation of a particle is ``R = Rz(Z2) @ Rx(X) @ Rz(Z1)``: rotate by Z1 about z, then by X
about the (fixed) x axis, then by Z2 about the (fixed) z axis -- *extrinsic* z-x-z, which is
``scipy.spatial.transform.Rotation.from_euler("zxz", [Z1, X, Z2], degrees=True)`` (lowercase =
extrinsic; this is the "szxz" static-frame order of the voltools ``transform`` used by the
SHREC generator). ``Rz(a)`` = [[cos a, -sin a, 0], [sin a, cos a, 0], [0, 0, 1]] in (x, y, z)
(counter-clockwise, right-handed). ``R`` is *active*: the particle in the tomogram is the class
template rotated by ``R`` about its box centre c (voxel ``n // 2`` on every axis), i.e.
``particle(p) = template(R.T @ (p - c) + c)`` for physical points p = (x, y, z); a template
feature at offset d from the centre sits at ``R @ d`` from the particle's coordinate.
(Whether the SHREC 2021 files follow exactly this reading of their angles cannot be checked
without the original generator; our simulated data do, and the tests enforce it.)

RELION (STAR ``rlnAngleRot, rlnAngleTilt, rlnAnglePsi``, degrees)
-----------------------------------------------------------------
RELION's matrix ``A = Euler_angles2matrix(rot, tilt, psi)`` is
``Rotation.from_euler("ZYZ", [rot, tilt, psi]).inv()`` (intrinsic Z-Y'-Z'' then inverted), and
the particle is the reference rotated actively by ``A``. So a SHREC rotation ``R`` has RELION
angles ``Rotation.from_matrix(R).inv().as_euler("ZYZ", degrees=True)`` (:func:`zxz_to_relion`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.ndimage import affine_transform
from scipy.spatial.transform import Rotation

SHREC_ORDER = "zxz"  # scipy: lowercase = extrinsic (fixed axes)
RELION_ORDER = "ZYZ"  # scipy: uppercase = intrinsic


def zxz_to_matrix(angles: Sequence[float] | np.ndarray) -> np.ndarray:
    """SHREC Euler angles (Z1, X, Z2) in degrees -> active rotation matrix in (x, y, z).

    Args:
        angles: (3,) or (n, 3) degrees.
    Returns:
        (3, 3) or (n, 3, 3) float64 matrices ``Rz(Z2) @ Rx(X) @ Rz(Z1)``.
    """
    rot = Rotation.from_euler(SHREC_ORDER, np.asarray(angles, dtype=float), degrees=True)
    return rot.as_matrix()


def matrix_to_zxz(matrix: np.ndarray) -> np.ndarray:
    """Inverse of :func:`zxz_to_matrix`: (3, 3) or (n, 3, 3) -> (3,) or (n, 3) degrees."""
    return Rotation.from_matrix(matrix).as_euler(SHREC_ORDER, degrees=True)


def random_zxz(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` rotations drawn uniformly from SO(3) (Haar measure), as SHREC angles (n, 3) degrees."""
    return matrix_to_zxz(Rotation.random(n, random_state=rng).as_matrix()).reshape(n, 3)


def zxz_to_relion(angles: Sequence[float] | np.ndarray) -> np.ndarray:
    """SHREC (Z1, X, Z2) -> RELION (rot, tilt, psi), degrees; (3,) or (n, 3)."""
    rot = Rotation.from_euler(SHREC_ORDER, np.asarray(angles, dtype=float), degrees=True)
    return rot.inv().as_euler(RELION_ORDER, degrees=True)


def relion_to_matrix(angles: Sequence[float] | np.ndarray) -> np.ndarray:
    """RELION (rot, tilt, psi) degrees -> the active (x, y, z) matrix that turns the reference
    into the particle (the same matrix :func:`zxz_to_matrix` gives for the SHREC angles)."""
    rot = Rotation.from_euler(RELION_ORDER, np.asarray(angles, dtype=float), degrees=True)
    return rot.inv().as_matrix()


def relion_to_zxz(angles: Sequence[float] | np.ndarray) -> np.ndarray:
    """RELION (rot, tilt, psi) -> SHREC (Z1, X, Z2), degrees; (3,) or (n, 3). Inverse of
    :func:`zxz_to_relion` (same rotation matrix, :func:`relion_to_matrix`)."""
    return matrix_to_zxz(relion_to_matrix(angles))


def matrix_to_relion(matrix: np.ndarray) -> np.ndarray:
    """Active (x, y, z) matrix (3, 3) or (n, 3, 3) -> RELION (rot, tilt, psi) degrees, (3,) or
    (n, 3). Inverse of :func:`relion_to_matrix`."""
    return Rotation.from_matrix(matrix).inv().as_euler(RELION_ORDER, degrees=True)


def _group_order(mats: np.ndarray) -> np.ndarray:
    """Exact signed permutation matrices (k, n, n) (rounded, no -0) in a fixed order: identity
    first, then descending trace; ties by the row permutation, then by the rows' signs (+ first)."""
    mats = np.rint(mats) + 0.0
    perm = np.abs(mats).argmax(axis=2)                          # (k, n): m[i, perm[i]] = +-1
    sign = np.take_along_axis(mats, perm[..., None], 2)[..., 0]
    key = sorted(range(len(mats)), key=lambda g: (-np.trace(mats[g]), tuple(perm[g]),
                                                  tuple(sign[g] < 0)))
    return mats[key]


def cube_rotations() -> np.ndarray:
    """The 24 proper rotations of a cube: the octahedral group O,
    ``Rotation.create_group("O")``, as exact signed permutation matrices (24, 3, 3) float64
    acting on (x, y, z); identity first (order: :func:`_group_order`)."""
    return _group_order(Rotation.create_group("O").as_matrix())


def square_rotations() -> np.ndarray:
    """The 4 quarter turns of a square about z (``Rotation.create_group("C4")``) as exact
    (4, 2, 2) float64 matrices acting on (x, y); identity first."""
    return _group_order(Rotation.create_group("C4", axis="Z").as_matrix()[:, :2, :2])


def zyx_matrix(matrix_xyz: np.ndarray) -> np.ndarray:
    """Re-express a (3, 3) matrix acting on (x, y, z) as one acting on array indices (z, y, x)."""
    return np.asarray(matrix_xyz)[::-1, ::-1]


def angular_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Geodesic angle in degrees between rotation matrices ``a`` and ``b`` ((3, 3) or (n, 3, 3))."""
    rel = Rotation.from_matrix(np.swapaxes(a, -1, -2) @ b)
    return np.degrees(rel.magnitude())


def rotate_volume(volume: np.ndarray, matrix_xyz: np.ndarray, order: int = 1,
                  output_shape: Sequence[int] | None = None) -> np.ndarray:
    """Rotate a volume actively by ``matrix_xyz`` about its box centre.

    The box centre is voxel ``n // 2`` on every axis (the cryo-EM/FFT convention used by the
    structures and extract stages; for odd n it is the middle voxel). The input centre lands on
    the output centre ``m // 2``. Outside values are 0.

    Args:
        volume: (z, y, x) array.
        matrix_xyz: (3, 3) active rotation in (x, y, z), e.g. from :func:`zxz_to_matrix`.
        order: spline order of scipy.ndimage.affine_transform (1 = trilinear).
        output_shape: (z, y, x) of the result; default the input shape.
    Returns:
        (z, y, x) float32 array ``out(p) = volume(R.T (p - c_out) + c_in)``.
    """
    volume = np.asarray(volume, dtype=np.float32)
    shape_out = tuple(volume.shape) if output_shape is None else tuple(int(s) for s in output_shape)
    inverse = zyx_matrix(np.asarray(matrix_xyz, dtype=float).T)  # out index -> in index
    c_in = np.asarray(volume.shape, dtype=float) // 2
    c_out = np.asarray(shape_out, dtype=float) // 2
    offset = c_in - inverse @ c_out
    return affine_transform(volume, inverse, offset=offset, output_shape=shape_out, order=order,
                            mode="constant", cval=0.0, prefilter=order > 1).astype(np.float32)


def rotate_volume_zxz(volume: np.ndarray, angles: Sequence[float], order: int = 1,
                      output_shape: Sequence[int] | None = None) -> np.ndarray:
    """:func:`rotate_volume` with SHREC Euler angles (Z1, X, Z2) in degrees."""
    return rotate_volume(volume, zxz_to_matrix(angles), order=order, output_shape=output_shape)
