"""Particle placement: class mix, non-overlapping bounding spheres, rotated densities and masks.

Coordinates are voxels in (x, y, z) order as in SHREC ``particle_locations.txt``; volumes are
(z, y, x) arrays. A particle's position is the voxel its template's box centre lands on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from tqdm import tqdm

from affinity_vae.rotation import random_zxz, rotate_volume, zxz_to_matrix

COLUMNS = ["class", "x", "y", "z", "z1", "x_angle", "z2"]


def template_radius(template: np.ndarray, threshold: float) -> float:
    """Radius in voxels of the sphere about the box centre (voxel ``n // 2``) that holds every voxel
    denser than ``threshold`` x the template maximum (the particle's bounding sphere).

    Args:
        template: (d, h, w) density.
    """
    peak = float(template.max())
    if not peak > 0:
        raise ValueError("template has no positive density")
    idx = np.argwhere(template > threshold * peak).astype(float)
    centre = np.asarray(template.shape, dtype=float) // 2
    return float(np.sqrt(((idx - centre) ** 2).sum(axis=1)).max()) + 0.5


def crop_template(template: np.ndarray, radius: float) -> np.ndarray:
    """Crop the same number of voxels from both ends of each axis, keeping the box centre voxel
    ``n // 2`` and a
    cube of at least ``2 * radius + 5`` voxels (the rotated particle still fits)."""
    out = template
    for axis, n in enumerate(template.shape):
        keep = min(n, int(np.ceil(2 * radius)) + 5)
        cut = (n - keep) // 2
        if cut > 0:
            out = np.take(out, np.arange(cut, n - cut), axis=axis)
    return np.ascontiguousarray(out)


def class_counts(weights: Mapping[str, float], n: int) -> dict[str, int]:
    """Split ``n`` particles over classes in proportion to ``weights`` (largest remainder)."""
    names = list(weights)
    w = np.array([float(weights[k]) for k in names])
    exact = n * w / w.sum()
    counts = np.floor(exact).astype(int)
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[: n - counts.sum()]] += 1
    return dict(zip(names, counts.tolist()))


def n_for_volume_fraction(fraction: float, weights: Mapping[str, float],
                          radii: Mapping[str, float], shape_zyx: Sequence[int]) -> int:
    """Number of particles whose bounding spheres fill ``fraction`` of the volume on average."""
    w = np.array([float(weights[k]) for k in weights])
    vols = np.array([4 / 3 * np.pi * radii[k] ** 3 for k in weights])
    mean_vol = float((w * vols).sum() / w.sum())
    return max(1, int(round(fraction * float(np.prod(shape_zyx)) / mean_vol)))


def place_spheres(radii: np.ndarray, shape_zyx: Sequence[int], rng: np.random.Generator,
                  margin: float = 1.0, max_tries: int = 2000, border: float = 0.0) -> np.ndarray:
    """Random sequential placement of non-overlapping spheres inside a volume.

    Spheres are tried largest first; each gets up to ``max_tries`` uniformly random integer
    centres with ``c - r >= 0`` and ``c + r <= n - 1`` on every axis (and the centre at least
    ``border`` voxels from every face) and distance ``>= r_i + r_j + margin`` to every sphere
    already placed.

    Args:
        radii: (n,) radii in voxels.
        shape_zyx: (Z, Y, X) of the volume.
    Returns:
        (n, 3) float array of centres (x, y, z); rows of spheres that did not fit are NaN.
    """
    upper = np.asarray(shape_zyx[::-1], dtype=float) - 1  # (x, y, z) maxima
    centres = np.full((len(radii), 3), np.nan)
    placed_c = np.empty((0, 3))
    placed_r = np.empty(0)
    batch = 64
    for i in np.argsort(-np.asarray(radii), kind="stable"):
        r = float(radii[i])
        keep_out = max(r, float(border))
        lo = np.ceil(np.full(3, keep_out))
        hi = np.floor(upper - keep_out)
        if np.any(hi < lo):
            continue
        for _ in range(0, max_tries, batch):
            cand = rng.integers(lo, hi + 1, size=(batch, 3)).astype(float)
            if len(placed_r):
                d = np.sqrt(((cand[:, None, :] - placed_c[None]) ** 2).sum(-1))
                ok = np.all(d >= placed_r[None] + r + margin, axis=1)
            else:
                ok = np.ones(batch, dtype=bool)
            if ok.any():
                c = cand[np.argmax(ok)]
                centres[i] = c
                placed_c = np.vstack([placed_c, c])
                placed_r = np.append(placed_r, r)
                break
    return centres


def draw_particles(counts: Mapping[str, int], radii: Mapping[str, float],
                   shape_zyx: Sequence[int], rng: np.random.Generator,
                   margin: float = 1.0, border: float = 0.0) -> pd.DataFrame:
    """Classes, positions and uniformly random rotations of the particles of one tomogram.

    Returns:
        DataFrame with columns class, x, y, z (integer voxels), z1, x_angle, z2 (SHREC ZXZ
        degrees, rounded to 3 decimals as written), in random line order; particles that did
        not fit are dropped.
    """
    classes = np.array([c for c, k in counts.items() for _ in range(k)], dtype=object)
    classes = classes[rng.permutation(len(classes))]
    r = np.array([radii[c] for c in classes], dtype=float)
    centres = place_spheres(r, shape_zyx, rng, margin=margin, border=border)
    angles = np.round(random_zxz(len(classes), rng), 3)
    ok = ~np.isnan(centres[:, 0])
    table = pd.DataFrame({"class": classes[ok].astype(str)})
    for j, col in enumerate(["x", "y", "z"]):
        table[col] = centres[ok, j].astype(int)
    for j, col in enumerate(["z1", "x_angle", "z2"]):
        table[col] = angles[ok, j]
    return table[COLUMNS].reset_index(drop=True)


def render(particles: pd.DataFrame, templates: Mapping[str, np.ndarray],
           class_index: Mapping[str, int], shape_zyx: Sequence[int],
           mask_threshold: float = 0.1, order: int = 3,
           progress: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Paint rotated templates into a tomogram.

    Args:
        particles: table from :func:`draw_particles` (line i -> occupancy label i + 1).
        templates: class -> (d, d, d) density, centred in its box (e.g. from :func:`crop_template`).
        class_index: class -> label written into the class mask (1-based; 0 = background).
        shape_zyx: (Z, Y, X).
        mask_threshold: a voxel belongs to a particle where its rotated density exceeds this
            fraction of the rotated template's maximum.
        order: spline order of the rotation.
    Returns:
        grandmodel (float32, sum of rotated densities), class_mask and occupancy_mask
        (float32 holding integer labels), all (Z, Y, X).
    """
    shape = tuple(int(s) for s in shape_zyx)
    grand = np.zeros(shape, dtype=np.float32)
    cmask = np.zeros(shape, dtype=np.float32)
    omask = np.zeros(shape, dtype=np.float32)
    rows = particles.itertuples(index=False)
    for label, p in enumerate(tqdm(rows, total=len(particles), disable=not progress,
                                   desc="particles"), start=1):
        tpl = templates[p[0]]
        half = max(tpl.shape) // 2
        box = 2 * half + 1
        rot = rotate_volume(tpl, zxz_to_matrix([p[4], p[5], p[6]]), order=order,
                            output_shape=(box, box, box))
        np.maximum(rot, 0, out=rot)  # no negative spline overshoot
        centre = (int(p[3]), int(p[2]), int(p[1]))  # (z, y, x)
        dst, src = [], []
        for c, n in zip(centre, shape):
            a, b = c - half, c + half + 1
            dst.append(slice(max(a, 0), min(b, n)))
            src.append(slice(max(a, 0) - a, box - (b - min(b, n))))
        piece = rot[tuple(src)]
        grand[tuple(dst)] += piece
        inside = piece > mask_threshold * float(rot.max())
        cmask[tuple(dst)][inside] = class_index[p[0]]
        omask[tuple(dst)][inside] = label
    return grand, cmask, omask
