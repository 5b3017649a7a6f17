"""Subtomogram stacks for training and evaluation: loading, splits, labels, augmentation.

The whole training set is one float32 tensor in memory; batches are index slices, and
augmentation works on whole batches (no per-sample Python work in the training loop).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from affinity_vae.classnames import align_names
from affinity_vae.errors import InputError
from affinity_vae.io.affinity_csv import read_affinity
from affinity_vae.io.mrc import read_volume
from affinity_vae.io.star import read_star
from affinity_vae.model.gmd import quaternion_to_matrix
from affinity_vae.rotation import cube_rotations, square_rotations
from affinity_vae.wedge import wedge_mask

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test", "unseen")


def load_subtomos(stacks: Sequence[str | os.PathLike], stars: Sequence[str | os.PathLike]
                  ) -> tuple[np.ndarray, pd.DataFrame]:
    """Read the extract stage's stacks and STAR tables (same order, one pair per tomogram).

    Returns:
        X: float32 (N, D, H, W) for volume stacks or (N, H, W) for image stacks, rows in the
            order of the concatenated STAR tables.
        table: the STAR rows (columns per the extract contract: avaeClass, avaeSplit,
            rlnTomoName, rlnCoordinateX/Y/Z, ...), with a fresh 0..N-1 index.
    Raises:
        InputError: a stack/STAR pair of different lengths or box shapes, a missing column
            (affinity_vae.io.star.read_star), or no particles at all.
    """
    if len(stacks) != len(stars):
        raise ValueError(f"{len(stacks)} stacks but {len(stars)} STAR files")
    arrays, tables, box = [], [], None
    for stack, star in zip(stacks, stars):
        data, _ = read_volume(stack)
        table = read_star(star)
        if len(table) == 0:
            continue
        if len(table) == 1 and (data.ndim == 2 or data.shape[0] != 1):
            data = data[None]  # MRC stores a stack of one box as a plain volume/image
        if data.shape[0] != len(table):
            raise InputError(f"{stack}: {data.shape[0]} boxes but {star} has {len(table)} rows "
                             f"-- re-run `snakemake extract`")
        if box is not None and data.shape[1:] != box:
            raise InputError(f"{stack}: box {data.shape[1:]} differs from {box} of the other "
                             f"stacks -- extract all tomograms with the same box_size")
        box = data.shape[1:]
        arrays.append(data)
        tables.append(table)
    if not arrays:
        raise InputError(f"no particles in {', '.join(map(str, stars))} -- check extract's "
                         f"class filter and the particle lists")
    return (np.ascontiguousarray(np.concatenate(arrays), dtype=np.float32),
            pd.concat(tables, ignore_index=True))


def read_affinity_matrix(path: str | os.PathLike, classes: Sequence[str]) -> pd.DataFrame:
    """The affinity matrix (square DataFrame, class names on both axes, the file's order) after
    checking that every one of ``classes`` is present; names match case-insensitively
    (affinity_vae.classnames) and the matched rows take the spelling of ``classes``.

    Reads with the one affinity CSV reader (affinity_vae.io.affinity_csv.read_affinity).
    Raises InputError when a class is missing or the matrix is malformed.
    """
    df = read_affinity(path)  # validated, in the file's class order
    found, missing = align_names(classes, list(df.index), str(path))
    if missing:
        raise InputError(f"{path}: affinity matrix lacks training class(es) {missing} -- "
                         f"give each a row and column in your affinity CSV (config key "
                         f"affinity.path, affinity.method file) or a structure (structures.*), "
                         f"or list them in dataset.unseen_classes or extract.exclude_classes")
    rename = {v: k for k, v in found.items()}  # the data's spelling of each class
    return df.rename(index=rename, columns=rename).astype(np.float64)


@dataclass
class TrainingData:
    """Training and validation tensors.

    x: (N, 1, *box) float32; labels: (N,) long index into ``classes``; val_x, val_labels
    likewise (may be empty); classes: training class names in affinity-matrix order;
    affinity: (C, C) float32 tensor in that order.
    """
    x: torch.Tensor
    labels: torch.Tensor
    val_x: torch.Tensor
    val_labels: torch.Tensor
    classes: list[str]
    affinity: torch.Tensor

    @property
    def box(self) -> tuple[int, ...]:
        return tuple(self.x.shape[2:])


def training_data(X: np.ndarray, table: pd.DataFrame, affinity_path: str | os.PathLike,
                  validation_fraction: float = 0.1, seed: int = 0) -> TrainingData:
    """Select the train and validation particles (split column avaeSplit; test and unseen are
    excluded), label them in affinity-matrix order and make tensors.

    When no particle has split ``validation``, a ``validation_fraction`` of the training
    particles (stratified by nothing, seeded) is held out instead.
    """
    split = table["avaeSplit"].astype(str).to_numpy()
    bad = sorted(set(split) - set(SPLITS))
    if bad:
        raise InputError(f"STAR column avaeSplit has unknown value(s) {bad} -- expected "
                         f"{'|'.join(SPLITS)}; re-run `snakemake extract`")
    names = table["avaeClass"].astype(str).to_numpy()
    tr, va = split == "train", split == "validation"
    if not tr.any():
        raise InputError("no training particles after filtering (every particle is test, "
                         "validation or unseen) -- check dataset.splits and "
                         "dataset.unseen_classes")
    present = set(names[tr])
    df = read_affinity_matrix(affinity_path, sorted(present))
    classes = [c for c in df.index if c in present]
    index = {c: i for i, c in enumerate(classes)}
    va &= np.isin(names, classes)  # a validation class never seen in training can't be scored
    tr_idx, va_idx = np.flatnonzero(tr), np.flatnonzero(va)
    if len(va_idx) == 0 and validation_fraction > 0 and len(tr_idx) > 1:
        rng = np.random.default_rng(seed)
        n_val = max(1, round(validation_fraction * len(tr_idx)))
        perm = rng.permutation(tr_idx)
        va_idx, tr_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    X = X[:, None]

    def lab(idx: np.ndarray) -> torch.Tensor:
        return torch.as_tensor([index[c] for c in names[idx]], dtype=torch.long)

    aff = torch.tensor(df.loc[classes, classes].to_numpy(dtype=np.float32))
    return TrainingData(torch.from_numpy(np.ascontiguousarray(X[tr_idx])), lab(tr_idx),
                        torch.from_numpy(np.ascontiguousarray(X[va_idx])), lab(va_idx),
                        classes, aff)


def _axis_rotations(group_xyz: np.ndarray) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Rotation matrices (k, n, n) acting on (x, y[, z]) (affinity_vae.rotation's cube or
    square group) as (axis permutation, reflected axes) of the array axes ((z, y, x) or (y, x));
    reflections are about voxel n // 2 (:func:`reflect_about_centre`). Ordered by (permutation,
    reflected axes). Element (perm, flips) maps x to y with ``y[q] = x[p]``,
    ``p[perm[i]] = -q[i] if i in flips else q[i]`` (centred indices), i.e. ``p = R_zyx.T q``."""
    out = []
    for r in group_xyz:
        m = np.asarray(r)[::-1, ::-1].T             # R_zyx.T (affinity_vae.rotation.zyx_matrix)
        perm = tuple(int(np.argmax(np.abs(m[:, i]))) for i in range(len(m)))
        flips = tuple(i for i in range(len(m)) if m[perm[i], i] < 0)
        out.append((perm, flips))
    return sorted(out, key=lambda e: (e[0], tuple(i in e[1] for i in range(len(e[0])))))


CUBE_ROTATIONS = _axis_rotations(cube_rotations())
SQUARE_ROTATIONS = _axis_rotations(square_rotations())


def reflect_about_centre(x: torch.Tensor, dims: Sequence[int]) -> torch.Tensor:
    """Reflect x about voxel ``n // 2`` along each of ``dims``: index i -> n - i. For odd n that
    is a plain flip (i -> n - 1 - i); for even n a flip shifted by one voxel, the slice that
    leaves the box is dropped and the vacated slice 0 is zero. Returns a new tensor."""
    out = x.flip(list(dims)) if len(dims) else x.clone()
    for d in dims:
        if x.shape[d] % 2 == 0:
            out = out.roll(1, d)
            out.select(d, 0).zero_()
    return out


def random_rotation_matrices(n: int, generator: torch.Generator) -> torch.Tensor:
    """n rotations (n, 3, 3) acting on (x, y, z), uniform over SO(3) (normalised Gaussian
    quaternions through affinity_vae.model.gmd.quaternion_to_matrix)."""
    q = torch.randn(n, 4, generator=generator, dtype=torch.float64)
    return quaternion_to_matrix(q / q.norm(dim=1, keepdim=True)).float()


def training_wedge(box: Sequence[int], tilt_range: Sequence[float] | None,
                   enabled: bool = True) -> torch.Tensor | None:
    """The microscope-frame missing wedge (full ``fftn`` grid (D, H, W) float32 0/1 mask,
    affinity_vae.wedge.wedge_mask) to re-impose on augmented 3D training boxes, or None (and
    why, logged) when disabled (train.augment_wedge), for 2D data, or when the tilt range is
    unknown (dataset.tilt_range null)."""
    box = tuple(int(b) for b in box)
    if not enabled or len(box) != 3:
        return None
    if tilt_range is None:
        log.info("missing wedge not re-imposed after augmentation: the tilt range of the data is "
                 "unknown (set dataset.tilt_range for real data)")
        return None
    log.info("re-imposing the microscope-frame missing wedge of tilts %s after augmentation",
             list(tilt_range))
    return torch.from_numpy(wedge_mask(box, tilt_range))


def impose_wedge(x: torch.Tensor, wedge: torch.Tensor) -> torch.Tensor:
    """Multiply volumes x (N, 1, D, H, W) by a full-grid Fourier mask wedge (D, H, W)
    (training_wedge); real result of x's shape and dtype.

    A missing wedge is centrosymmetric (mask(k) = mask(-k)), so the real-input FFT on its
    half grid gives the real part of the full-grid product to float rounding, at half the cost.
    """
    half = wedge[..., : x.shape[-1] // 2 + 1].to(x.device)
    spec = torch.fft.rfftn(x, dim=(-3, -2, -1)) * half
    return torch.fft.irfftn(spec, s=x.shape[-3:], dim=(-3, -2, -1)).to(x.dtype)


def _permute_reflect(x: torch.Tensor, perm: tuple[int, ...], flips: tuple[int, ...]
                     ) -> torch.Tensor:
    """Apply one element (perm, flips) of CUBE_ROTATIONS / SQUARE_ROTATIONS to x (N, 1, *box)."""
    y = x.permute(0, 1, *(2 + p for p in perm))
    return reflect_about_centre(y, [2 + f for f in flips])


def augment(x: torch.Tensor, mode: str, generator: torch.Generator,
            wedge: torch.Tensor | None = None) -> torch.Tensor:
    """Randomly rotate every box of a batch x (N, 1, *box) about its centre voxel n // 2.

    mode ``none``; ``wedge``: identity or a 180-degree turn about z, y or x (the rotations
    that keep the tilt axis and beam direction, hence a symmetric missing wedge, where they
    are); ``rot90``: a uniformly chosen element of the 90-degree rotation group
    (24 in 3D, 4 in 2D; one op per group element present, not per sample; needs a cubic box);
    ``any``: uniform random rotations by trilinear resampling (3D: rotate_volumes; 2D:
    rotate_inplane, whose centre is the glyph generator's (n - 1) / 2).
    ``wedge`` (a full-grid Fourier mask (D, H, W) from :func:`training_wedge`, or None): after
    rotating (any mode but none), the boxes are multiplied by it in Fourier space, so they
    carry the microscope-frame missing wedge where the test boxes carry it.
    """
    if mode == "none":
        return x
    nd = x.dim() - 2
    out = _rotate_batch(x, mode, generator, nd)
    if wedge is not None and nd == 3:
        out = impose_wedge(out, wedge)
    return out


def _rotate_batch(x: torch.Tensor, mode: str, generator: torch.Generator, nd: int
                  ) -> torch.Tensor:
    """The rotation part of :func:`augment` (mode wedge, rot90 or any)."""
    n = x.shape[0]
    if mode in ("wedge", "rot90"):
        if mode == "wedge":   # identity and 180-degree turns about z, y, x: axes stay axes
            group = [(tuple(range(nd)), ())] + (
                [(tuple(range(nd)), tuple(a for a in range(3) if a != k)) for k in range(3)]
                if nd == 3 else [(tuple(range(nd)), (0, 1))])
        else:
            if len(set(x.shape[2:])) != 1:
                raise ValueError(f"rot90 augmentation needs a cubic/square box, got "
                                 f"{tuple(x.shape[2:])}")
            group = CUBE_ROTATIONS if nd == 3 else SQUARE_ROTATIONS
        pick = torch.randint(len(group), (n,), generator=generator)
        out = torch.empty_like(x)
        for g in torch.unique(pick).tolist():
            idx = (pick == g).nonzero().squeeze(1)
            out[idx] = _permute_reflect(x[idx], *group[g])
        return out
    if mode == "any":
        if nd == 2:
            return rotate_inplane(x, torch.rand(n, generator=generator) * 2 * np.pi)
        return rotate_volumes(x, random_rotation_matrices(n, generator).to(x.device))
    raise ValueError(f"augmentation mode must be none, wedge, rot90 or any, got {mode!r}")


def rotate_volumes(x: torch.Tensor, rot_xyz: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """Rotate every volume of x (N, 1, D, H, W) actively by its matrix rot_xyz (N, 3, 3) (acting
    on (x, y, z), as affinity_vae.rotation) about the box centre voxel ``n // 2`` of each axis,
    zeros outside: ``out(p) = x(R.T (p - c) + c)``, the torch twin of
    :func:`affinity_vae.rotation.rotate_volume` (trilinear). Differentiable in x.
    """
    if x.dim() != 5:
        raise ValueError(f"rotate_volumes needs volumes (N, 1, D, H, W), got {tuple(x.shape)}")
    if rot_xyz.shape != (x.shape[0], 3, 3):
        raise ValueError(f"rot_xyz must have shape ({x.shape[0]}, 3, 3), got "
                         f"{tuple(rot_xyz.shape)}")
    sizes = torch.tensor([x.shape[4], x.shape[3], x.shape[2]], dtype=torch.float64)  # x, y, z
    half = (sizes - 1) / 2                      # voxels per normalised unit (align_corners)
    centre = torch.div(sizes, 2, rounding_mode="floor") / half - 1   # voxel n // 2, normalised
    inv = rot_xyz.to(torch.float64).transpose(1, 2)                  # output -> input
    a = inv * half.view(1, 1, 3) / half.view(1, 3, 1)                # S^-1 R^T S
    t = centre.view(1, 3) - (a @ centre.view(3, 1)).squeeze(-1)
    theta = torch.cat([a, t.unsqueeze(-1)], dim=2).to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=True)
    return F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=True)


def rotate_inplane(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate every image of x (N, 1, H, W) by its angle (N,) in radians, bilinear, zeros
    outside; counter-clockwise as displayed (row 0 at the top), the sense of
    affinity_vae.glyphs.rotate and of the alphanumeric STAR angle.
    """
    if x.dim() != 4:
        raise ValueError(f"rotate_inplane needs 2D images (N, 1, H, W), got shape {tuple(x.shape)}")
    if angles.shape != (x.shape[0],):
        raise ValueError(f"angles must have shape ({x.shape[0]},), got {tuple(angles.shape)}")
    c, s = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    zero = torch.zeros_like(c)
    theta = torch.stack([c, -s, zero, s, c, zero], 1).view(-1, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

