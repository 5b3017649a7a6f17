"""Template matching (rule template_match): wall time, accuracy and pose error vs angular step.

Data of the default run's size: the default generated classes (structures stage, 10 A voxels,
32^3 boxes), 11 of them as templates (the default's training classes) and ~21 test particles a
class (the default test tomogram holds ~230), each its class density rotated by a uniformly
random rotation (``rotation.rotate_volume``), filtered like the simulated tomograms (missing
wedge and CTF of the simulate defaults, ``evaluate.tm.data_transfer``) and given white noise at SNR
``--snr``. TM runs as the rule runs it (``evaluate.tm.match``, the schema's other defaults) on
``--threads`` threads (2: the profile's threads) at each ``--steps`` angular step.

    python -m benchmarks.bench_tm [--steps 30 20 15 10] [--threads 2] [--snr 0.5] [--quick]

Records ``tm_seconds_step<s>`` (one figure a step) and the table ``tm_vs_angular_step``
(step, rotations, seconds, macro-F1, median pose error).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from affinity_vae.config import schema_defaults
from affinity_vae.evaluate import tm
from affinity_vae.evaluate.averages import density_in_box
from affinity_vae.evaluate.tm_run import pose_errors, score
from affinity_vae.rotation import rotate_volume
from affinity_vae.simulate import read_structures
from affinity_vae.structures.build import build_structures
from benchmarks._common import record, record_table

QUICK_SUPPORTED = True
VOXEL, BOX = 10.0, 32
SIM = schema_defaults("simulate")
PHYSICS = {"tilt_range": SIM["tilt_range"], "dark": True, "invert": False,
           "microscope": {k: SIM[k] for k in ("defocus_um", "voltage_kv", "cs_mm",
                                              "amplitude_contrast")}}
TM = schema_defaults("evaluate")["tm"]


def data(per_class: int, snr: float, seed: int = 0):
    """(templates (C, n, n, n), class names, boxes (P, n, n, n), labels (P,), true (P, 3, 3),
    {class: point group})."""
    with tempfile.TemporaryDirectory() as tmp:
        manifest = build_structures(schema_defaults("structures", {"n_classes": 12}), VOXEL, seed,
                                    Path(tmp) / "structures")
        dens = read_structures(Path(tmp) / "structures", VOXEL)
    groups = dict(zip(manifest["class"].astype(str), manifest["symmetry"].astype(str)))
    names = [c for c in sorted(dens) if c != "ring7"]  # ring7: the default's unseen class
    temps = np.stack([density_in_box(dens[c], VOXEL, BOX, VOXEL) for c in names])
    rng = np.random.default_rng(seed)
    full = tm.working_grid(BOX, VOXEL, 2 * VOXEL, 0, None)  # the data's own grid (bin 1)
    transfer = tm.data_transfer(full, PHYSICS)
    boxes, labels, rots = [], [], []
    for i, c in enumerate(names):
        for r in Rotation.random(per_class, random_state=rng.integers(2**31)).as_matrix():
            boxes.append(rotate_volume(temps[i], r))
            labels.append(c)
            rots.append(r)
    x = torch.fft.irfftn(torch.fft.rfftn(torch.from_numpy(np.stack(boxes)), dim=(-3, -2, -1))
                         * transfer, s=(BOX,) * 3, dim=(-3, -2, -1)).numpy()
    x += rng.normal(0, np.sqrt(x.var() / snr), x.shape).astype(np.float32)
    return temps, names, x, np.array(labels, object), np.stack(rots), groups


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=float, nargs="+", default=[30.0, 20.0, 15.0, 10.0])
    ap.add_argument("--per-class", type=int, default=21)
    ap.add_argument("--snr", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="steps 30 and 20, 4 particles a class")
    a = ap.parse_args()
    if a.quick:
        a.steps, a.per_class = [30.0, 20.0], 4
    torch.set_num_threads(a.threads)
    temps, names, x, labels, true, groups = data(a.per_class, a.snr)
    rows = []
    for step in a.steps:
        rots = tm.rotation_grid(step)
        t0 = time.perf_counter()
        res = tm.match(x, temps, VOXEL, rots, TM["lowpass_A"], TM["max_shift_vox"],
                       TM["mask_radius_A"], PHYSICS, TM["rotation_batch"])
        sec = time.perf_counter() - t0
        pred = np.array(names, object)[res.scores.argmax(1)]
        f1 = score(labels, pred, names, None, schema_defaults("evaluate"))["macro_f1"]
        own = res.rotations[res.rot_index[np.arange(len(labels)),
                                          [names.index(c) for c in labels]]]
        pose, _ = pose_errors(own, true, labels, groups, np.random.default_rng(0))
        rows.append([step, len(rots), round(sec, 2), round(f1, 3),
                     round(pose["median_error_deg"], 2)])
        note = (f"{len(x)} particles x {len(names)} classes x {len(rots)} rotations, "
                f"{a.threads} threads, SNR {a.snr}: macro-F1 {f1:.3f}, median pose error "
                f"{pose['median_error_deg']:.1f} deg")
        record(f"tm_seconds_step{step:g}" + ("_quick" if a.quick else ""), sec, "s", note=note)
    record_table("tm_vs_angular_step", ["step_deg", "rotations", "seconds", "macro_f1",
                                        "median_pose_error_deg"], rows,
                 note=f"{len(x)} particles x {len(names)} classes, {a.threads} threads, "
                      f"SNR {a.snr}", quick=a.quick)


if __name__ == "__main__":
    main()
