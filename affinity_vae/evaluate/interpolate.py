"""Decoded sweeps through latent space: a pose sweep per class (paper Fig. 3c/4) and a linear
interpolation between two class means (Fig. 5), as MRC stacks and PNG montages.

Pose sweep: z = the class mean of mu (training particles); the pose moves along its first
dimension from mean - k*std to mean + k*std (CNN decoder, or GMD on 2D data), or, for the GMD
decoder on 3D data, the rotation angle theta runs over a full turn about the mean axis. A last
row decodes the mean of all training latents. Torch is imported only by :func:`decode`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from affinity_vae.evaluate.plots import plt, save


def pose_sweep_inputs(z_rows: np.ndarray, pose_mean: np.ndarray, pose_std: np.ndarray,
                      steps: int, sigma: float = 2.0, full_turn: bool = False
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Latents and poses of a sweep: z_rows (R, L), pose_mean/std (P,) -> z (R*S, L), pose (R*S, P).

    ``full_turn`` (GMD 3D): pose = (theta, axis) with theta over [-pi, pi) and the mean axis.
    """
    P = len(pose_mean)
    if P == 0:
        raise ValueError("no pose dimensions to sweep")
    base = np.repeat(np.asarray(pose_mean, float)[None], steps, axis=0)
    if full_turn:
        base[:, 0] = np.linspace(-np.pi, np.pi, steps, endpoint=False)
    else:
        base[:, 0] += np.linspace(-sigma, sigma, steps) * max(float(pose_std[0]), 1e-3)
    z = np.repeat(np.asarray(z_rows, float), steps, axis=0)
    pose = np.tile(base, (len(z_rows), 1))
    return z, pose


def linear_inputs(z_a: np.ndarray, z_b: np.ndarray, steps: int) -> np.ndarray:
    """z_t = (1 - t) z_a + t z_b for t in linspace(0, 1, steps) -> (S, L)."""
    t = np.linspace(0.0, 1.0, steps)[:, None]
    return (1 - t) * np.asarray(z_a, float)[None] + t * np.asarray(z_b, float)[None]


def decode(model, z: np.ndarray, pose: np.ndarray | None, device: str = "cpu",
           batch: int = 64) -> np.ndarray:
    """Decode z (N, L) with pose (N, P) (None = the decoder's zero pose) -> (N, *box) float32."""
    import torch

    out = []
    with torch.no_grad():
        for s in range(0, len(z), batch):
            zt = torch.as_tensor(z[s:s + batch], dtype=torch.float32, device=device)
            pt = None if pose is None else torch.as_tensor(pose[s:s + batch],
                                                           dtype=torch.float32, device=device)
            out.append(model.decode(zt, pt)[:, 0].cpu().numpy().astype(np.float32))
    return np.concatenate(out)


def write_stack(path: str | Path, stack: np.ndarray, voxel_size: float) -> None:
    """Write decoded boxes (S, D, H, W) or (S, H, W) as an MRC stack, atomically.

    (mrcfile marks 4D data as a volume stack by itself; io.mrc.write_volume calls
    set_volume() on it, which mrcfile 1.5 rejects for 4D data.)
    """
    import mrcfile

    from affinity_vae.io.atomic import atomic_path

    data = np.ascontiguousarray(stack, dtype=np.float32)
    with atomic_path(path) as tmp:
        with mrcfile.new(tmp, overwrite=True) as mrc:
            mrc.set_data(data)
            if data.ndim == 3:
                mrc.set_image_stack()
            mrc.voxel_size = voxel_size
            mrc.update_header_stats()


def view(volume: np.ndarray, mode: str) -> np.ndarray:
    """A 2D view of a box: the image itself (2D), the central z slice or the z projection (3D)."""
    if volume.ndim == 2:
        return volume
    if mode == "slice":
        return volume[volume.shape[0] // 2]
    if mode == "projection":
        return volume.sum(axis=0)
    raise ValueError(f"mode must be slice or projection, got {mode!r}")


def montage(grid: np.ndarray, row_labels: Sequence[str], path: str | Path, title: str,
            mode: str = "projection", col_labels: Sequence[str] | None = None,
            dpi: int = 150) -> None:
    """PNG montage of decoded boxes grid (R, S, *box): one row a class, one column a step.

    Each panel is contrast-normalised on its own row, so rows of weak and strong density compare.
    """
    R, S = grid.shape[:2]
    fig, axes = plt.subplots(R, S, figsize=(0.9 * S + 1.2, 0.9 * R + 0.4), squeeze=False)
    for r in range(R):
        views = [view(grid[r, s], mode) for s in range(S)]
        lo, hi = float(np.min(views)), float(np.max(views))
        for s in range(S):
            ax = axes[r, s]
            ax.imshow(views[s], cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1)
            ax.set_xticks([])
            ax.set_yticks([])
            if s == 0:
                ax.set_ylabel(row_labels[r], fontsize=7, rotation=0, ha="right", va="center")
            if r == 0 and col_labels is not None:
                ax.set_title(col_labels[s], fontsize=6)
    what = "central z slices" if mode == "slice" else "z projections"
    kind = "" if grid.ndim == 4 else f" ({what})"
    fig.suptitle(title + kind, fontsize=9)
    save(fig, path, dpi)
