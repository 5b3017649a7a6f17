"""The contrast transfer function as a function of spatial frequency (numpy only).

One formula for every stage: the simulator's image CTF (affinity_vae.simulate.tilt.ctf_2d) and
the GMD decoder's 3D forward model (affinity_vae.model.gmd.forward_transfer) both evaluate
:func:`ctf_radial`. This module imports numpy only, so the train and evaluate envs (no scipy)
can use it.

``CTF(k) = -(sqrt(1 - A^2) sin chi(k) + A cos chi(k))`` with
``chi(k) = pi lambda df k^2 - pi/2 Cs lambda^3 k^4`` (k in 1/Angstrom, df > 0 = underfocus).
The leading minus makes a positive density (protein) dark in the image at low resolution, as
in real data.
"""

from __future__ import annotations

import numpy as np


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
