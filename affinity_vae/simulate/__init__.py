"""Stage `simulate`: SHREC 2021-layout tomograms made from the class densities.

One job per tomogram ``model_<i>``: random non-overlapping particles (uniformly random
rotations) -> ``grandmodel.mrc`` (sum of rotated densities), ``class_mask.mrc``,
``occupancy_mask.mrc`` and ``particle_locations.txt``; a tilt series of the grandmodel (CTF,
Gaussian noise at ``snr``) -> weighted back-projection -> ``reconstruction.mrc``. The class label
in ``class_mask.mrc`` is 1 + the index of the class in the sorted list of all classes of the
structures stage (written to ``class_conversion_table.txt``); 0 is background.

SNR = var(noiseless CTF-filtered tilt series) / var(noise), over all pixels of all tilts.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from affinity_vae.errors import InputError
from affinity_vae.io.mrc import read_volume, write_volume
from affinity_vae.io.shrec import write_class_table, write_particle_locations
from affinity_vae.simulate import placement, tilt

log = logging.getLogger(__name__)
VOXEL_RTOL = 1e-3


@dataclass(frozen=True)
class Settings:
    """The `simulate` config section. No defaults here: they live in
    workflow/schemas/simulate.schema.yaml (library callers: ``Settings.from_config(
    schema_defaults("simulate", {...}))``)."""

    n_tomograms: int
    shape_zyx: tuple[int, int, int]
    n_particles: int
    volume_fraction: float | None
    class_weights: dict[str, float]
    margin: float
    border: float
    extent_threshold: float
    mask_threshold: float
    tilt_range: tuple[float, float]
    tilt_step: float
    defocus_um: float
    voltage_kv: float
    cs_mm: float
    amplitude_contrast: float
    snr: float

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> Settings:
        """From the full, validated config section ``simulate``."""
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in dict(cfg).items() if k in known}
        for key in ("shape_zyx", "tilt_range"):
            if key in kw:
                kw[key] = tuple(kw[key])
        if "class_weights" in kw:
            kw["class_weights"] = dict(kw["class_weights"] or {})
        return cls(**kw)

    @property
    def microscope(self) -> tilt.Microscope:
        return tilt.Microscope(self.defocus_um, self.voltage_kv, self.cs_mm,
                               self.amplitude_contrast)

    def check(self) -> None:
        """Raise InputError for values the schema cannot catch."""
        if not self.tilt_range[1] > self.tilt_range[0]:
            raise InputError(f"config key 'simulate.tilt_range': {list(self.tilt_range)} must be "
                             f"[min, max] with min < max -- e.g. [-60, 60]")
        if 2 * self.border >= min(self.shape_zyx) - 1:
            raise InputError(f"config key 'simulate.border': {self.border:g} voxels leaves no room "
                             f"in simulate.shape_zyx {list(self.shape_zyx)} -- lower it")
        if any(w < 0 for w in self.class_weights.values()) or (
                self.class_weights and not any(w > 0 for w in self.class_weights.values())):
            raise InputError("config key 'simulate.class_weights': weights must be >= 0 with at "
                             "least one > 0 -- e.g. {1bxn: 1, ring5: 2}")


@dataclass
class Tomogram:
    """A simulated tomogram: (Z, Y, X) float32 volumes and the particle table."""

    reconstruction: np.ndarray
    grandmodel: np.ndarray
    class_mask: np.ndarray
    occupancy_mask: np.ndarray
    particles: pd.DataFrame
    angles: np.ndarray
    noise_sigma: float


def read_structures(folder: str | Path, voxel_size: float) -> dict[str, np.ndarray]:
    """Class densities ``<class>.mrc`` listed in ``manifest.csv`` of the structures stage.

    Returns:
        class -> (d, d, d) float32 density, in sorted class order.
    """
    folder = Path(folder)
    manifest = folder / "manifest.csv"
    if not manifest.is_file():
        raise InputError(f"{manifest}: not found -- run the structures stage first "
                         f"(snakemake structures)")
    names = sorted(pd.read_csv(manifest, dtype={"class": str})["class"].astype(str))
    if not names:
        raise InputError(f"{manifest}: lists no classes -- check the structures config")
    out = {}
    for name in names:
        vol, vs = read_volume(folder / f"{name}.mrc")
        if abs(vs - voxel_size) > VOXEL_RTOL * voxel_size:
            raise InputError(f"{folder / f'{name}.mrc'}: voxel size {vs:g} A differs from "
                             f"dataset.voxel_size {voxel_size:g} A -- rebuild the structures")
        if vol.ndim != 3 or not vol.max() > 0:
            raise InputError(f"{folder / f'{name}.mrc'}: not a 3D density with positive values "
                             f"-- rebuild the structures")
        out[name] = vol
    return out


def class_weights(settings: Settings, classes: Sequence[str]) -> dict[str, float]:
    """Relative abundance of each class to simulate (all classes, equal, unless configured)."""
    if not settings.class_weights:
        return {c: 1.0 for c in classes}
    unknown = sorted(set(settings.class_weights) - set(classes))
    if unknown:
        raise InputError(f"config key 'simulate.class_weights': unknown class(es) "
                         f"{', '.join(unknown)} (known: {', '.join(classes)}) -- fix the names")
    return {c: float(w) for c, w in settings.class_weights.items() if w > 0}


def prepare_templates(structures: Mapping[str, np.ndarray], settings: Settings,
                      ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Cropped templates and bounding-sphere radii (voxels); InputError if one cannot fit."""
    templates, radii = {}, {}
    for name, vol in structures.items():
        r = placement.template_radius(vol, settings.extent_threshold)
        if 2 * r + 1 > min(settings.shape_zyx):
            raise InputError(f"class '{name}' ({2 * r:.0f} voxels across) does not fit in "
                             f"simulate.shape_zyx {list(settings.shape_zyx)} -- enlarge the "
                             f"tomogram or give the class weight 0 in simulate.class_weights")
        templates[name] = placement.crop_template(vol, r)
        radii[name] = r
    return templates, radii


def simulate_tomogram(structures: Mapping[str, np.ndarray], settings: Settings,
                      voxel_size: float, rng: np.random.Generator,
                      class_index: Mapping[str, int] | None = None) -> Tomogram:
    """Simulate one tomogram.

    Args:
        structures: class -> (d, d, d) density at ``voxel_size``, centred on voxel d // 2.
        settings: the simulate config.
        voxel_size: Angstrom.
        rng: the random generator (the one source of randomness).
        class_index: class -> class-mask label; default 1 + index in sorted class names.
    """
    settings.check()
    classes = sorted(structures)
    class_index = dict(class_index or {c: i + 1 for i, c in enumerate(classes)})
    weights = class_weights(settings, classes)
    templates, radii = prepare_templates({c: structures[c] for c in weights}, settings)
    shape = tuple(int(s) for s in settings.shape_zyx)
    n = settings.n_particles
    if settings.volume_fraction is not None:
        n = placement.n_for_volume_fraction(settings.volume_fraction, weights, radii, shape)
    counts = placement.class_counts(weights, n)
    particles = placement.draw_particles(counts, radii, shape, rng, margin=settings.margin,
                                         border=settings.border)
    if len(particles) < n:
        log.warning("only %d of %d particles fit without overlap; lower simulate.n_particles / "
                    "volume_fraction or enlarge simulate.shape_zyx", len(particles), n)
    frac = sum(4 / 3 * np.pi * radii[c] ** 3 for c in particles["class"]) / np.prod(shape)
    log.info("%d particles placed (bounding spheres fill %.1f %% of the volume)",
             len(particles), 100 * frac)
    grand, cmask, omask = placement.render(particles, templates, class_index, shape,
                                           mask_threshold=settings.mask_threshold,
                                           progress=True)
    angles = tilt.tilt_angles(settings.tilt_range, settings.tilt_step)
    op = tilt.projector(shape, angles)
    clean = tilt.apply_ctf(tilt.project(grand, op),
                           tilt.ctf_2d((shape[1], shape[2]), voxel_size, settings.microscope))
    noisy, sigma = tilt.add_noise(clean, settings.snr, rng)
    log.info("tilt series: %d tilts %g..%g deg, SNR %g (noise sigma %.4g)", len(angles),
             angles[0], angles[-1], settings.snr, sigma)
    recon = tilt.weighted_backprojection(noisy, op, angles, shape)
    return Tomogram(recon, grand, cmask, omask, particles, angles, sigma)


def tomogram_seed(seed: int, name: str) -> np.random.Generator:
    """The random generator of tomogram ``model_<i>``: depends on the config seed and i only."""
    index = int(name.rsplit("_", 1)[-1]) if name.rsplit("_", 1)[-1].isdigit() else 0
    return np.random.default_rng([int(seed), index, 0x51])


def write_tomogram(folder: str | Path, tomo: Tomogram, voxel_size: float,
                   class_index: Mapping[str, int]) -> None:
    """Write the SHREC 2021 files of one tomogram (each atomically), reconstruction last."""
    folder = Path(folder)
    write_particle_locations(folder / "particle_locations.txt", tomo.particles)
    write_class_table(folder / "class_conversion_table.txt", dict(class_index))
    write_volume(folder / "grandmodel.mrc", tomo.grandmodel, voxel_size)
    write_volume(folder / "class_mask.mrc", tomo.class_mask, voxel_size)
    write_volume(folder / "occupancy_mask.mrc", tomo.occupancy_mask, voxel_size)
    write_volume(folder / "reconstruction.mrc", tomo.reconstruction, voxel_size)


def main(smk: Any) -> None:
    """Snakemake entry: smk.input.structures (folder), smk.output.reconstruction etc.,
    smk.params.simulate / voxel_size / seed, smk.wildcards.tomo."""
    settings = Settings.from_config(smk.params.simulate)
    settings.check()
    voxel_size = float(smk.params.voxel_size)
    structures = read_structures(smk.input.structures, voxel_size)
    folder = Path(smk.output.reconstruction).parent
    name = folder.name
    classes = sorted(structures)
    class_index = {c: i + 1 for i, c in enumerate(classes)}
    class_weights(settings, classes)  # fail on unknown classes before any work
    log.info("%s: %s voxels at %g A, classes: %s", name, "x".join(map(str, settings.shape_zyx)),
             voxel_size, ", ".join(classes))
    tomo = simulate_tomogram(structures, settings, voxel_size, tomogram_seed(smk.params.seed, name),
                             class_index)
    write_tomogram(folder, tomo, voxel_size, class_index)
    log.info("%s: wrote %d particles to %s", name, len(tomo.particles), folder)
