"""Imaging physics in Fourier space (numpy only): the CTF as a function of spatial frequency, and
the forward model (missing wedge x CTF) that the GMD decoder applies to its renders.

One CTF formula for every stage: the simulator's image CTF (affinity_vae.simulate.tilt.ctf_2d)
and the decoder's 3D forward model both come down to :func:`ctf_radial`. This module imports
numpy only, so the train and evaluate envs (no scipy) and the Snakefile can use it.

``CTF(k) = -(sqrt(1 - A^2) sin chi(k) + A cos chi(k))`` with
``chi(k) = pi lambda df k^2 - pi/2 Cs lambda^3 k^4`` (k in 1/Angstrom, df > 0 = underfocus).
The leading minus makes a positive density (protein) dark in the image at low resolution, as
in real data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from affinity_vae.errors import InputError
from affinity_vae.wedge import fourier_grid, wedge_mask

#: model.gmd_forward values: the imaging steps applied to the rendered mixture.
FORWARD_MODELS = ("none", "wedge", "ctf_wedge")
#: keys of the physics settings (model.gmd_physics, filled by the workflow from the dataset).
PHYSICS_KEYS = ("tilt_range", "voxel_size", "defocus_um", "voltage_kv", "cs_mm",
                "amplitude_contrast", "invert")
_CTF_KEYS = ("voxel_size", "defocus_um", "voltage_kv", "cs_mm", "amplitude_contrast")


def electron_wavelength(voltage_kv: float) -> float:
    """Relativistic electron wavelength in Angstrom for an acceleration voltage in kV."""
    v = voltage_kv * 1e3
    return 12.2643 / np.sqrt(v * (1 + 0.978466e-6 * v))


def ctf_radial(k: np.ndarray, defocus_um: float, voltage_kv: float, cs_mm: float,
               amplitude_contrast: float) -> np.ndarray:
    """CTF at spatial frequencies of magnitude ``k`` (1/Angstrom, any shape) -> float32 array
    of the same shape (formula in the module docstring)."""
    k2 = np.asarray(k, dtype=np.float64) ** 2
    lam = electron_wavelength(voltage_kv)
    df = defocus_um * 1e4
    cs = cs_mm * 1e7
    chi = np.pi * lam * df * k2 - 0.5 * np.pi * cs * lam ** 3 * k2 ** 2
    a = amplitude_contrast
    return (-(np.sqrt(1 - a * a) * np.sin(chi) + a * np.cos(chi))).astype(np.float32)


def check_forward(mode: str, physics: Mapping[str, Any] | None, ndim: int = 3) -> None:
    """Raise a one-line InputError when forward model ``mode`` (model.gmd_forward) cannot be
    built: unknown mode, not 3D, or a setting it needs is missing (None) from ``physics``."""
    if mode not in FORWARD_MODELS:
        raise InputError(f"config key 'model.gmd_forward': unknown value {mode!r} -- use "
                         f"{' | '.join(FORWARD_MODELS)}")
    if mode == "none":
        return
    if ndim != 3:
        raise InputError(f"config key 'model.gmd_forward': {mode} models tomograms and needs 3D "
                         f"boxes, got {ndim}D data -- set it to none")
    phys = dict(physics or {})
    need = ("tilt_range",) + (_CTF_KEYS if mode == "ctf_wedge" else ())
    missing = [k for k in need if phys.get(k) is None]
    if missing:
        raise InputError(f"config key 'model.gmd_forward': {mode} needs the data's "
                         f"{', '.join(missing)} (simulate section for simulated data; "
                         f"dataset.tilt_range / dataset.defocus_um for real data; none for "
                         f"extract.source grandmodel; the box voxel size is unknown for "
                         f"subtomo_folder with extract.bin_to) -- set them or use gmd_forward: "
                         f"none")


def forward_transfer(box: Sequence[int], mode: str, physics: Mapping[str, Any] | None
                     ) -> np.ndarray | None:
    """Fourier transfer function of the imaging forward model on the ``rfftn`` grid of a box.

    ``mode`` ``none``: None (no filter). ``wedge``: the microscope-frame missing wedge of
    ``physics["tilt_range"]`` (affinity_vae.wedge.wedge_mask). ``ctf_wedge``: the wedge times
    the CTF as a function of |k| (:func:`ctf_radial` at ``physics["voxel_size"]`` A/voxel),
    negated when the boxes were inverted at extraction (``physics["invert"]``). The 3D CTF of
    |k| is what a weighted back-projection of CTF-filtered tilt images gives (each tilt's
    central slice holds k with its own |k|) when the defocus is constant across each image,
    i.e. it ignores the defocus gradient of tilted images and CTF correction.

    Args:
        box: (Z, Y, X).
        mode: one of FORWARD_MODELS.
        physics: dict with the keys of PHYSICS_KEYS.
    Returns:
        float32 (Z, Y, X // 2 + 1) or None.
    Raises:
        InputError: see :func:`check_forward`.
    """
    box = tuple(int(b) for b in box)
    check_forward(mode, physics, len(box))
    if mode == "none":
        return None
    phys = dict(physics or {})
    transfer = wedge_mask(box, phys["tilt_range"], rfft=True)
    if mode == "ctf_wedge":
        kz, ky, kx = fourier_grid(box, rfft=True)
        k = np.sqrt(kz ** 2 + ky ** 2 + kx ** 2) / float(phys["voxel_size"])   # 1/A
        ctf = ctf_radial(k, float(phys["defocus_um"]), float(phys["voltage_kv"]),
                         float(phys["cs_mm"]), float(phys["amplitude_contrast"]))
        transfer = transfer * ctf * (-1.0 if phys.get("invert") else 1.0)
    return transfer.astype(np.float32)
