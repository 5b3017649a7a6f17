"""RELION 5 tomogram geometry: the STAR column names, one tomogram's size / pixel size /
binning (:class:`TomogramInfo`), and the conversions between RELION's particle coordinates and
angles and the voxels and rotations of the reconstructed tomogram (the conventions are
explained in affinity_vae/io/relion.py, which reads and writes the STAR files).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

CENTRED = ("rlnCenteredCoordinateXAngst", "rlnCenteredCoordinateYAngst",
           "rlnCenteredCoordinateZAngst")
PIXELS = ("rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ")
ANGLES = ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi")
SUBTOMO_ANGLES = ("rlnTomoSubtomogramRot", "rlnTomoSubtomogramTilt", "rlnTomoSubtomogramPsi")
PRIORS = ("rlnAngleRotPrior", "rlnAngleTiltPrior", "rlnAnglePsiPrior")
SIZE = ("rlnTomoSizeX", "rlnTomoSizeY", "rlnTomoSizeZ")
VOXEL_RTOL = 1e-3


@dataclass(frozen=True)
class TomogramInfo:
    """One tomogram of a RELION 5 project.

    pixel_size: rlnTomoTiltSeriesPixelSize (A, unbinned); binning: rlnTomoTomogramBinning;
    size: rlnTomoSizeX/Y/Z (x, y, z) in unbinned pixels; path: the reconstructed MRC or None.
    """

    name: str
    pixel_size: float
    binning: float
    size: tuple[int, int, int]
    path: Path | None = None

    @property
    def voxel_size(self) -> float:
        return self.pixel_size * self.binning

    @property
    def centre(self) -> np.ndarray:
        """(3,) x, y, z centre in unbinned pixels: rlnTomoSize // 2 (RELION's integer division)."""
        return np.asarray([int(s) // 2 for s in self.size], dtype=float)

    @property
    def shape_zyx(self) -> tuple[int, int, int]:
        """(z, y, x) voxels of the reconstructed (binned) tomogram."""
        x, y, z = (round(s / self.binning) for s in self.size)
        return z, y, x


# ---------------------------------------------------------------- conversions
def centred_angst_to_voxels(xyz_angst: np.ndarray, tomo: TomogramInfo) -> np.ndarray:
    """RELION 5 ``rlnCenteredCoordinate{X,Y,Z}Angst`` (n, 3) -> voxel x, y, z (n, 3) of the
    reconstructed tomogram: ``(xyz / pixel_size + size // 2) / binning`` (module docstring)."""
    unbinned = np.asarray(xyz_angst, float).reshape(-1, 3) / tomo.pixel_size + tomo.centre
    return unbinned / tomo.binning


def voxels_to_centred_angst(xyz_voxels: np.ndarray, tomo: TomogramInfo) -> np.ndarray:
    """Inverse of :func:`centred_angst_to_voxels`: voxel x, y, z (n, 3) -> centred A (n, 3)."""
    unbinned = np.asarray(xyz_voxels, float).reshape(-1, 3) * tomo.binning
    return (unbinned - tomo.centre) * tomo.pixel_size


def unbinned_pixels_to_voxels(xyz_pixels: np.ndarray, tomo: TomogramInfo) -> np.ndarray:
    """RELION 4 ``rlnCoordinate{X,Y,Z}`` (unbinned pixels, (n, 3)) -> voxels (n, 3)."""
    return np.asarray(xyz_pixels, float).reshape(-1, 3) / tomo.binning


def particle_matrices(particles: pd.DataFrame) -> np.ndarray | None:
    """Active (x, y, z) rotations (n, 3, 3) of the particles, or None without rlnAngle columns:
    RELION's ``A_subtomogram @ A_particle`` (each A = Euler_angles2matrix =
    affinity_vae.rotation.relion_to_matrix, the active reference -> particle rotation)."""
    from affinity_vae.rotation import relion_to_matrix

    if not all(c in particles.columns for c in ANGLES):
        return None
    rot = relion_to_matrix(particles[list(ANGLES)].to_numpy(float)).reshape(-1, 3, 3)
    if all(c in particles.columns for c in SUBTOMO_ANGLES):
        sub = relion_to_matrix(particles[list(SUBTOMO_ANGLES)].to_numpy(float)).reshape(-1, 3, 3)
        rot = sub @ rot  # A_subtomogram @ A_particle
    return rot
