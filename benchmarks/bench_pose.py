"""3D pose on isolated particles: does the rotation pose head recover orientation?

Data: the default generated classes (structures stage, 10 A voxels), each class density rotated
by uniformly random rotations into a 32^3 box (``rotation.rotate_volume``, trilinear; the box
centre is voxel n // 2), optionally with white noise at a given SNR, z-scored per box. One
data set of ``--per-class`` training and ``--test`` held-out particles per class. The full
Affinity-VAE (CNN decoder, ``--head`` moments (default) or rotation, the latter with the 3D
pose-consistency term) is trained by ``affinity_vae.train.fit`` as the pipeline trains it, and
scored like the evaluate stage:
the symmetry-aware pose error after one fitted frame per class (fitted on training particles,
scored on the held-out ones; spherical classes skipped), next to uniformly random rotations
under the same scoring.

    python -m benchmarks.bench_pose [--snr 0.1] [--epochs 5] [--threads 2] [--head moments]

Records ``pose_isolated[_snr<snr>][_<head>]_median_error_deg`` (goal: < 10 degrees noise-free;
the moments head's figure has no suffix).
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.spatial.transform import Rotation

from affinity_vae.config import schema_defaults
from affinity_vae.data import TrainingData
from affinity_vae.evaluate.averages import density_in_box
from affinity_vae.evaluate.encode import encode
from affinity_vae.evaluate.pose import pose_scores
from affinity_vae.rotation import rotate_volume
from affinity_vae.simulate import read_structures
from affinity_vae.structures.build import build_structures
from affinity_vae.train import fit
from benchmarks._common import record

VOXEL = 10.0
BOX = 32


def templates(seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The default generated classes' densities (z, y, x) and point groups."""
    with tempfile.TemporaryDirectory() as tmp:
        manifest = build_structures(schema_defaults("structures", {"source": "generated",
                                                                   "n_classes": 12}), VOXEL, seed,
                                    Path(tmp) / "structures")
        dens = read_structures(Path(tmp) / "structures", VOXEL)
    groups = dict(zip(manifest["class"].astype(str), manifest["symmetry"].astype(str)))
    return dens, groups


def particles(dens: dict[str, np.ndarray], per_class: int, snr: float | None, seed: int
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes (N, n, n, n) float32 z-scored, labels (N,), true rotations (N, 3, 3)."""
    rng = np.random.default_rng(seed)
    boxes, labels, rots = [], [], []
    for c, vol in dens.items():
        base = density_in_box(vol, VOXEL, BOX, VOXEL)
        rs = Rotation.random(per_class, random_state=rng.integers(2**31)).as_matrix()
        for r in rs:
            b = rotate_volume(base, r)
            if snr:
                b = b + rng.normal(0, np.sqrt(b.var() / snr), b.shape).astype(np.float32)
            boxes.append((b - b.mean()) / b.std())
            labels.append(c)
            rots.append(r)
    return np.stack(boxes).astype(np.float32), np.array(labels, object), np.stack(rots)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--snr", type=float, default=None)
    ap.add_argument("--per-class", type=int, default=150)
    ap.add_argument("--test", type=int, default=50)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--head", choices=["moments", "rotation"], default="moments")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--weight", type=float, default=1.0)
    ap.add_argument("--lowpass", type=float, default=1.5)
    ap.add_argument("--decoder", default="cnn")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    dens, groups = templates(args.seed)
    classes = sorted(dens)
    xtr, ltr, rtr = particles(dens, args.per_class, args.snr, args.seed + 1)
    xte, lte, rte = particles(dens, args.test, args.snr, args.seed + 2)
    index = {c: i for i, c in enumerate(classes)}
    lab = torch.tensor([index[c] for c in ltr])
    nval = len(xtr) // 10
    data = TrainingData(torch.from_numpy(xtr[nval:, None]), lab[nval:],
                        torch.from_numpy(xtr[:nval, None]), lab[:nval], classes,
                        torch.eye(len(classes)) * 0.5 + 0.5)
    model_cfg = schema_defaults("model", {"pose_head": args.head, "decoder": args.decoder,
                                          "latent_dims": 16, "channels": 8, "depth": 3,
                                          "pose_lowpass": args.lowpass})
    train_cfg = schema_defaults("train", {
        "epochs": args.epochs, "batch_size": 32, "learning_rate": 1e-3, "augment": "none",
        "pose_consistency": {"weight": args.weight if args.head == "rotation" else 0}})
    t0 = time.perf_counter()
    model, hist = fit(data, model_cfg, train_cfg, args.seed, None, "cpu", progress=False)
    print(hist[["epoch", "train_recon", "train_pose", "val_pose"]].to_string(), flush=True)
    seconds = time.perf_counter() - t0
    x_all = np.concatenate([xtr, xte])
    _, _, pose = encode(model, x_all, 128, "cpu")
    pred = model.pose_rotation(torch.as_tensor(pose)).double().numpy()
    true = np.concatenate([rtr, rte])
    labels = np.concatenate([ltr, lte])
    fit_mask = np.r_[np.ones(len(xtr), bool), np.zeros(len(xte), bool)]
    res = pose_scores(pred, true, labels, groups, fit_mask, ~fit_mask,
                      np.random.default_rng(args.seed))
    per = pd.DataFrame(res["per_class"]).T[["group", "median_error_deg",
                                            "random_median_error_deg", "n"]]
    print(per.to_string())
    print(json.dumps({k: res[k] for k in ("median_error_deg", "random_median_error_deg",
                                          "frac_under_15", "asymmetric")}, default=str))
    tag = ("pose_isolated" + (f"_snr{args.snr:g}" if args.snr else "")
           + ("" if args.head == "moments" else f"_{args.head}"))
    note = (f"{args.per_class} train / {args.test} test particles per class, 12 default "
            f"classes, {args.epochs} epochs ({seconds:.0f} s, {args.threads} threads), "
            f"{args.decoder} decoder, {args.head} pose head; random rotations score "
            f"{res['random_median_error_deg']:.1f} deg; asymmetric classes "
            f"{res['asymmetric']['median_error_deg']:.1f} deg")
    record(f"{tag}_median_error_deg", res["median_error_deg"], "deg",
           target="< 10 deg" if not args.snr else None, note=note)


if __name__ == "__main__":
    main()
