"""Subtomogram averages from pose priors: are the predicted rotations good enough to average?

For every class the particle boxes are un-rotated by a set of rotations and averaged, with the
missing wedge compensated in Fourier space; the average is compared with the class's density by
Fourier shell correlation (FSC) and its resolution read at FSC 0.5. Three sets of rotations are
compared side by side: the predicted ones (already brought into the structure's frame), the true
ones (upper bound) and uniformly random ones (lower bound: the average of randomly oriented
copies is a spherical blob).

Conventions (affinity_vae.rotation): boxes and densities are (z, y, x) float32 cubes centred on
voxel n // 2; a particle box is its class template rotated actively by R about that voxel
(``rotate_volume(template, R)``), so ``rotate_volume(box, R.T)`` brings it back. A box cut from
a tomogram carries the microscope-frame missing wedge (affinity_vae.wedge); un-rotating the box by
R.T rotates its wedge by R.T as well (the Fourier transform commutes with rotations).

Contrast: the simulator's CTF makes protein dark (negative) at low resolution, and boxes are
extracted without inversion by default, so an average can be the negative of the density. The
sign is decided once per class from the true-pose average (the sign of its masked real-space
correlation with the density) and applied to all three averages of that class; ``sign`` in the
result says which. The CTF is not corrected: beyond its first zero the averages' shells flip
sign again, so the FSC of even the true-pose average cannot stay above 0.5 past that zero.

FSC: both maps are multiplied by the same soft spherical mask first (:func:`soft_mask`: 1 inside
radius n/2 - 1 - n/8 voxels, a raised-cosine edge n/8 voxels wide, 0 from n/2 - 1 outwards).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from scipy.ndimage import affine_transform
from scipy.spatial.transform import Rotation

from affinity_vae.rotation import rotate_volume

KINDS = ("predicted", "true", "random")


def _check_cube(shape: Sequence[int]) -> int:
    if len(shape) != 3 or len(set(shape)) != 1:
        raise ValueError(f"averages need cubic (n, n, n) boxes, got {tuple(shape)}")
    return int(shape[0])


def rotated_wedge(wedge: np.ndarray, rotation: np.ndarray, order: int = 1) -> np.ndarray:
    """The wedge of a box after ``rotate_volume(box, rotation)``.

    Args:
        wedge: (n, n, n) fftn-layout mask (zero frequency at index 0), e.g.
            ``affinity_vae.wedge.wedge_mask``.
        rotation: (3, 3) active rotation in (x, y, z), the one applied to the box.
    Returns:
        (n, n, n) float32 fftn-layout weights in [0, 1] (trilinear, so edges are fractional).
    """
    return _rotate_centred(_centre_wedge(wedge), rotation, order)


def _centre_wedge(wedge: np.ndarray) -> np.ndarray:
    """(n, n, n) fftn layout -> (n + 2,) * 3: zero frequency at voxel n // 2 + 1 (the centre of
    the padded box), one wrapped voxel on every side because the DFT grid is periodic (for even
    n, frequency +n/2 is the stored -n/2)."""
    _check_cube(np.shape(wedge))
    return np.pad(np.fft.fftshift(np.asarray(wedge, np.float32)), 1, mode="wrap")


def _rotate_centred(centred: np.ndarray, rotation: np.ndarray, order: int) -> np.ndarray:
    n = centred.shape[0] - 2
    return np.fft.ifftshift(rotate_volume(centred, rotation, order=order, output_shape=(n,) * 3))


def unrotate(boxes: np.ndarray, rotations: np.ndarray, order: int = 1) -> np.ndarray:
    """Bring every box back to the template frame: ``rotate_volume(box_i, R_i.T)``.

    Args:
        boxes: (N, n, n, n); rotations: (N, 3, 3) active (x, y, z) rotations of the particles.
    Returns:
        (N, n, n, n) float32.
    """
    return np.stack([rotate_volume(b, np.asarray(r).T, order=order)
                     for b, r in zip(boxes, rotations)])


def average(boxes: np.ndarray, rotations: np.ndarray, wedge: np.ndarray | None,
            eps: float = 0.02, order: int = 1) -> np.ndarray:
    """Wedge-compensated average of particle boxes in the template frame.

    With a wedge: ``ifftn(sum_i FFT(u_i) / (sum_i W_i + eps * N))``, where u_i is box i
    un-rotated by R_i.T and W_i the wedge rotated the same way (:func:`rotated_wedge`); the
    Wiener constant ``eps * N`` (a fraction of the particle count, so it does not depend on N)
    keeps rarely measured frequencies from being amplified. Without a wedge (None): the plain
    mean of the un-rotated boxes.

    Args:
        boxes: (N, n, n, n) float; rotations: (N, 3, 3); wedge: (n, n, n) fftn-layout mask of
            the microscope frame, shared by every box, or None.
        eps: Wiener constant as a fraction of N.
        order: spline order of the rotations (1 = trilinear).
    Returns:
        (n, n, n) float32 average.
    """
    boxes = np.asarray(boxes, np.float32)
    _check_cube(boxes.shape[1:])
    if len(boxes) == 0 or len(boxes) != len(rotations):
        raise ValueError(f"need as many rotations as boxes (>0), got {len(boxes)} boxes and "
                         f"{len(rotations)} rotations")
    if wedge is None:
        return unrotate(boxes, rotations, order).mean(0).astype(np.float32)
    centred = _centre_wedge(wedge)
    num = np.zeros(boxes.shape[1:], np.complex128)
    den = np.zeros(boxes.shape[1:], np.float64)
    for b, r in zip(boxes, rotations):
        rt = np.asarray(r, float).T
        num += np.fft.fftn(rotate_volume(b, rt, order=order))
        den += _rotate_centred(centred, rt, 1)
    return np.fft.ifftn(num / (den + eps * len(boxes))).real.astype(np.float32)


def soft_mask(n: int) -> np.ndarray:
    """Soft spherical mask of an (n, n, n) box about voxel n // 2.

    1 up to radius ``n/2 - 1 - n/8``, a raised-cosine edge ``n/8`` voxels wide, 0 from radius
    ``n/2 - 1`` outwards. Returns (n, n, n) float32.
    """
    outer, width = n / 2 - 1, max(n / 8, 1.0)
    idx = np.indices((n, n, n), dtype=np.float64) - n // 2
    r = np.sqrt((idx ** 2).sum(0))
    t = np.clip((outer - r) / width, 0.0, 1.0)
    return (0.5 - 0.5 * np.cos(np.pi * t)).astype(np.float32)


def fsc(a: np.ndarray, b: np.ndarray, mask: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Fourier shell correlation of two (n, n, n) maps.

    Both maps are multiplied by :func:`soft_mask` first (unless ``mask=False``). Shells are one
    Fourier voxel wide: shell s holds the frequencies with ``rint(|k| n) = s``, s = 1 .. n // 2
    (the zero-frequency shell is left out). A shell where either map has no power scores 0.

    Returns:
        freq (K,) in cycles/voxel (s / n; 0.5 at Nyquist for even n) and fsc (K,), K = n // 2.
    """
    n = _check_cube(np.shape(a))
    if np.shape(b) != np.shape(a):
        raise ValueError(f"FSC of maps of different shapes {np.shape(a)} and {np.shape(b)}")
    m = soft_mask(n) if mask else np.float32(1.0)
    fa = np.fft.fftn(np.asarray(a, np.float64) * m)
    fb = np.fft.fftn(np.asarray(b, np.float64) * m)
    k = np.fft.fftfreq(n) * n
    shell = np.rint(np.sqrt(k[:, None, None] ** 2 + k[None, :, None] ** 2
                            + k[None, None, :] ** 2)).astype(np.int64).ravel()
    kmax = n // 2
    keep = shell <= kmax

    def shell_sum(x: np.ndarray) -> np.ndarray:
        return np.bincount(shell[keep], weights=x.ravel()[keep], minlength=kmax + 1)[1:]

    num = shell_sum((fa * fb.conj()).real)
    den = np.sqrt(shell_sum(np.abs(fa) ** 2) * shell_sum(np.abs(fb) ** 2))
    out = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    return np.arange(1, kmax + 1) / n, out


def resolution(freq: np.ndarray, curve: np.ndarray, voxel_size_A: float,
               threshold: float = 0.5) -> float:
    """Resolution in Angstrom where an FSC curve first falls below ``threshold``.

    The crossing is linearly interpolated in frequency between the last shell at or above the
    threshold and the first shell below it; the result is ``voxel_size_A / f_cross``.
    Returns ``voxel_size_A / freq[-1]`` (Nyquist, 2 voxels for even boxes) when the curve never
    falls below the threshold, and ``inf`` when it is already below at the first shell.

    Args:
        freq: (K,) ascending cycles/voxel; curve: (K,) FSC values.
    """
    freq = np.asarray(freq, float)
    curve = np.nan_to_num(np.asarray(curve, float), nan=0.0)
    below = np.flatnonzero(curve < threshold)
    if below.size == 0:
        return float(voxel_size_A / freq[-1])
    i = int(below[0])
    if i == 0:
        return float("inf")
    f0, f1, c0, c1 = freq[i - 1], freq[i], curve[i - 1], curve[i]
    f = f0 + (c0 - threshold) / (c0 - c1) * (f1 - f0)
    return float(voxel_size_A / f)


def density_in_box(density: np.ndarray, density_voxel_A: float, n: int,
                   voxel_A: float) -> np.ndarray:
    """A class density resampled (trilinear) into the particle box.

    Centre voxel ``d // 2`` of the density lands on voxel ``n // 2``; with equal voxel sizes this
    is an exact crop or zero-pad about the centre. Returns (n, n, n) float32.
    """
    scale = float(voxel_A) / float(density_voxel_A)  # box voxel -> density voxels
    vol = np.asarray(density, np.float32)
    c_in = np.asarray(vol.shape, float) // 2
    c_out = np.full(3, n // 2, float)
    return affine_transform(vol, np.eye(3) * scale, offset=c_in - scale * c_out,
                            output_shape=(n, n, n), order=1, mode="constant",
                            cval=0.0).astype(np.float32)


def _masked_corr(a: np.ndarray, b: np.ndarray, m: np.ndarray) -> float:
    x = (a * m).ravel().astype(np.float64)
    y = (b * m).ravel().astype(np.float64)
    x, y = x - x.mean(), y - y.mean()
    d = np.sqrt((x @ x) * (y @ y))
    return float(x @ y / d) if d > 0 else 0.0


def class_averages(boxes: np.ndarray, labels: Sequence[str], pred: np.ndarray, true: np.ndarray,
                   densities: Mapping[str, np.ndarray], voxel_size: float,
                   wedge: np.ndarray | None, rng: np.random.Generator,
                   min_particles: int = 10, eps: float = 0.02) -> dict:
    """Averages of each class from predicted, true and random rotations, scored against its
    density.

    Args:
        boxes: (N, n, n, n) particle boxes at ``voxel_size`` Angstrom.
        labels: (N,) class names.
        pred: (N, 3, 3) predicted active rotations, already in the structure's frame (i.e. after
            the per-class frame offset: ``R_pred @ Q``).
        true: (N, 3, 3) true active rotations (``affinity_vae.rotation.zxz_to_matrix``).
        densities: class -> (n, n, n) density in the particle box at ``voxel_size``
            (see :func:`density_in_box`). Classes without one are skipped.
        wedge: (n, n, n) fftn-layout microscope-frame wedge mask, or None (no missing wedge).
        rng: source of the random rotations.
        min_particles: classes with fewer particles are skipped.
        eps: Wiener constant of :func:`average`.
    Returns:
        ``{"metrics": {class: {resolution_A_predicted, resolution_A_true, resolution_A_random,
        n, sign}}, "curves": {class: {"freq": (K,), "predicted"|"true"|"random": (K,)}},
        "maps": {class: {"density"|"predicted"|"true"|"random": (n, n, n)}},
        "voxel_size": float}``. ``sign`` (+1 / -1) multiplies the three averages so that the
        true-pose average correlates positively with the density. Resolutions follow
        :func:`resolution` (``inf`` when the FSC starts below 0.5).
    """
    boxes = np.asarray(boxes, np.float32)
    n = _check_cube(boxes.shape[1:])
    labels = np.asarray(labels, dtype=object)
    pred, true = np.asarray(pred, float), np.asarray(true, float)
    if not len(boxes) == len(labels) == len(pred) == len(true):
        raise ValueError("boxes, labels, pred and true must have the same length")
    mask = soft_mask(n)
    out: dict = {"metrics": {}, "curves": {}, "maps": {}, "voxel_size": float(voxel_size)}
    for c in sorted(set(labels.tolist())):
        idx = np.flatnonzero(labels == c)
        if c not in densities or len(idx) < min_particles:
            continue
        dens = np.asarray(densities[c], np.float32)
        if dens.shape != (n, n, n):
            raise ValueError(f"density of class '{c}' is {dens.shape}, boxes are {(n, n, n)}: "
                             f"put it in the box with density_in_box")
        rand = Rotation.random(len(idx), random_state=rng).as_matrix()
        rots = {"predicted": pred[idx], "true": true[idx], "random": rand}
        avgs = {k: average(boxes[idx], rots[k], wedge, eps) for k in KINDS}
        sign = 1.0 if _masked_corr(avgs["true"], dens, mask) >= 0 else -1.0
        avgs = {k: v * np.float32(sign) for k, v in avgs.items()}
        curves: dict[str, np.ndarray] = {}
        metrics: dict[str, float | int] = {}
        for k in KINDS:
            freq, curves[k] = fsc(avgs[k], dens)
            metrics[f"resolution_A_{k}"] = resolution(freq, curves[k], voxel_size)
        curves["freq"] = freq
        metrics["n"], metrics["sign"] = int(len(idx)), int(sign)
        out["metrics"][c], out["curves"][c] = metrics, curves
        out["maps"][c] = {"density": dens, **avgs}
    return out


def averages_figure(result: Mapping, path: str | Path, dpi: int = 150) -> None:
    """One row per class: central z slices of the density and of the true-, predicted- and
    random-pose averages, and the three FSC curves with the 0.5 line (resolutions in the
    legend). Writes ``path`` atomically."""
    import matplotlib.pyplot as plt

    from affinity_vae.evaluate.plots import save

    classes = list(result["metrics"])
    rows = max(len(classes), 1)
    fig, axes = plt.subplots(rows, 5, figsize=(13, 2.6 * rows), squeeze=False)
    titles = {"density": "density", "true": "true poses", "predicted": "predicted poses",
              "random": "random poses"}
    colors = {"true": "tab:green", "predicted": "tab:blue", "random": "tab:gray"}
    if not classes:
        axes[0, 0].text(0.5, 0.5, "no class with a density and enough particles", ha="center")
    for row, c in zip(axes, classes):
        maps, curves, met = result["maps"][c], result["curves"][c], result["metrics"][c]
        for ax, key in zip(row[:4], titles):
            vol = maps[key]
            ax.imshow(vol[vol.shape[0] // 2], cmap="gray", origin="lower")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{c}: {titles[key]}" if key == "density" else titles[key], fontsize=8)
        ax = row[4]
        freq_inv_a = curves["freq"] / result["voxel_size"]
        for k in ("true", "predicted", "random"):
            res = met[f"resolution_A_{k}"]
            ax.plot(freq_inv_a, curves[k], color=colors[k], label=f"{k}: {res:.0f} Å")
        ax.axhline(0.5, color="k", lw=0.8, ls="--")
        ax.set_ylim(-0.2, 1.05)
        ax.set_xlabel("spatial frequency (1/Å)", fontsize=8)
        ax.set_ylabel("FSC vs density", fontsize=8)
        ax.legend(fontsize=7, loc="upper right", title_fontsize=7,
                  title=f"n = {met['n']}, sign {met['sign']:+d}")
    fig.tight_layout()
    save(fig, path, dpi=dpi)
