"""Benchmark of stage `simulate`: one default tomogram (100 x 200 x 200 voxels at 10 A, 200
particles of the 12 SHREC 2021 classes from ../shared, 41 tilts +-60 deg) on ONE core.

Figures: the whole tomogram (placement, rendering, tilt series with CTF and noise, weighted
back-projection, writing the six files), and the tilt-series part alone against a baseline that
projects by rotating the volume about y with scipy.ndimage.rotate (order 1) and summing along z,
and back-projects by smearing and rotating back (the straightforward way).
Goal (issue 2): well under a minute or two per tomogram on one core.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from affinity_vae.config import schema_defaults
from affinity_vae.io.mrc import read_volume
from affinity_vae.simulate import Settings, simulate_tomogram, tilt, write_tomogram
from benchmarks._common import record, timed

MAPS = Path(__file__).resolve().parents[2] / "shared" / "data" / "shrec2021-structures" / "maps_10A"
CLASSES = ["1bxn", "1qvr", "1s3x", "1u6g", "2cg9", "3cf3", "3d2f", "3gl1", "3h84", "3qm1", "4cr2",
           "5mrc"]


def baseline_tilt(volume: np.ndarray, angles: np.ndarray, ctf: np.ndarray,
                  rng: np.random.Generator, snr: float) -> np.ndarray:
    """Rotate-and-sum projection, CTF, noise, ramp filter, smear-and-rotate back-projection."""
    proj = np.stack([ndimage.rotate(volume, a, axes=(0, 2), reshape=False, order=1).sum(axis=0)
                     for a in angles])
    noisy, _ = tilt.add_noise(tilt.apply_ctf(proj, ctf), snr, rng)
    filt = tilt.ramp_filter(noisy)
    rec = np.zeros_like(volume)
    for a, p in zip(angles, filt):
        smear = np.broadcast_to(p, volume.shape)
        rec += ndimage.rotate(smear, -a, axes=(0, 2), reshape=False, order=1)
    return rec


def main() -> None:
    structures = {c: read_volume(MAPS / f"{c}.mrc")[0] for c in CLASSES}
    s = Settings.from_config(schema_defaults("simulate"))
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        def whole():
            tomo = simulate_tomogram(structures, s, 10.0, np.random.default_rng(0))
            write_tomogram(Path(tmp) / "model_0", tomo, 10.0,
                           {c: i + 1 for i, c in enumerate(CLASSES)})
            return tomo
        t_whole, tomo = timed(whole, repeat=2)
    shape = s.shape_zyx
    angles = tilt.tilt_angles(s.tilt_range, s.tilt_step)
    ctf = tilt.ctf_2d(shape[1:], 10.0, s.microscope)

    def ours():
        op = tilt.projector(shape, angles)
        clean = tilt.apply_ctf(tilt.project(tomo.grandmodel, op), ctf)
        noisy, _ = tilt.add_noise(clean, s.snr, rng)
        return tilt.weighted_backprojection(noisy, op, angles, shape)

    t_ours, _ = timed(ours, repeat=3)
    t0 = time.perf_counter()
    baseline_tilt(tomo.grandmodel, angles, ctf, rng, s.snr)
    t_base = time.perf_counter() - t0
    note = (f"{'x'.join(map(str, shape))} voxels, {len(tomo.particles)} particles of 12 SHREC "
            f"classes, {len(angles)} tilts, 1 core, median of the repeats")
    record("simulate_tomogram_time", t_whole, "s", target="< 60 s per tomogram on 1 core",
           note=note + "; placement + rendering + tilt series + WBP + writing 6 files")
    record("simulate_tilt_series_wbp_time", t_ours, "s", baseline=t_base,
           note=note + "; projection + CTF + noise + WBP with the sparse projector; baseline = "
                       "scipy.ndimage.rotate order 1 rotate-and-sum / smear-and-rotate-back")


if __name__ == "__main__":
    main()
