"""The paper's 2D alphanumeric data set (Famili et al. section 4.1, Fig. 2).

Glyphs of characters are rendered with a font that ships with matplotlib (no download), rotated
by a random integer angle theta with -max_angle < theta < max_angle, with optional scale jitter
and Gaussian noise; the true theta is kept per image. Images are (y, x) float32 arrays, the
glyph centred in the box, ink = 1, background = 0 (before noise).

The glyph affinity is the best normalised cross-correlation between two upright glyphs over
in-plane rotations of one of them (a shape similarity that ignores pose, as the paper's prior).
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
from matplotlib.font_manager import FontProperties
from matplotlib.path import Path
from matplotlib.textpath import TextPath
from matplotlib.transforms import Affine2D
from scipy import ndimage

FONT = "DejaVu Sans"  # bundled with matplotlib


@functools.lru_cache(maxsize=256)
def render_glyph(char: str, size: int, scale: float = 1.0, fill: float = 0.7,
                 supersample: int = 4) -> np.ndarray:
    """Rasterise one character, upright and centred.

    Args:
        char: a single printable character.
        size: box edge in pixels.
        scale: size of the glyph relative to the standard size.
        fill: the standard glyph's largest extent as a fraction of the box.
        supersample: sub-pixel samples per pixel edge (anti-aliasing).

    Returns:
        (size, size) float32 image, ink coverage in [0, 1]; row 0 is the top.
    """
    if len(char) != 1 or not char.isprintable() or char.isspace():
        raise ValueError(f"glyph must be one printable non-space character, got {char!r}")
    if size < 8:
        raise ValueError(f"size must be >= 8 pixels, got {size}")
    path = TextPath((0, 0), char, size=1, prop=FontProperties(family=FONT, weight="bold"))
    lo, hi = path.vertices.min(0), path.vertices.max(0)
    # Common scale for all glyphs: the font's em height, so relative sizes are kept.
    factor = scale * fill * size / 0.75
    centre = (lo + hi) / 2
    path = path.transformed(Affine2D().translate(*-centre).scale(factor)
                            .translate(size / 2, size / 2))
    n = size * supersample
    grid = (np.arange(n) + 0.5) / supersample
    xx, yy = np.meshgrid(grid, grid)
    points = np.column_stack([xx.ravel(), yy.ravel()])
    inside = np.zeros(len(points), dtype=bool)
    for polygon in path.to_polygons():  # even-odd rule: holes of 'a', 'e', 'b' stay empty
        inside ^= Path(polygon).contains_points(points)
    image = inside.reshape(size, supersample, size, supersample).mean(axis=(1, 3))
    out = np.ascontiguousarray(image[::-1], dtype=np.float32)  # y up -> row 0 at the top
    out.setflags(write=False)
    return out


def rotate(image: np.ndarray, angle_deg: float) -> np.ndarray:
    """Rotate a (y, x) image counter-clockwise (as displayed) about its centre."""
    return ndimage.rotate(image, angle_deg, reshape=False, order=1, mode="constant").astype(
        np.float32)


def make_dataset(chars: tuple[str, ...] | list[str], n_per_class: int, size: int,
                 max_angle: int, noise_std: float, scale_jitter: float, seed: int
                 ) -> tuple[np.ndarray, pd.DataFrame]:
    """Rotated glyph images with their true angle (the arguments are the keys of config
    section dataset.alphanumeric; their defaults live in workflow/schemas/dataset.schema.yaml).

    Args:
        chars: the classes.
        n_per_class: images per class.
        size: image edge in pixels.
        max_angle: theta is a uniform random integer with -max_angle < theta < max_angle.
        noise_std: std of added Gaussian noise (ink = 1).
        scale_jitter: glyph scale drawn uniformly from [1 - jitter, 1 + jitter].
        seed: random seed.

    Returns:
        images: (N, size, size) float32, N = len(chars) * n_per_class, classes interleaved.
        table: N rows with columns ``class``, ``angle`` (theta in degrees), ``scale``.
    """
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be >= 1, got {n_per_class}")
    if not 0 < max_angle <= 180:
        raise ValueError(f"max_angle must be in (0, 180], got {max_angle}")
    if not 0 <= scale_jitter < 1:
        raise ValueError(f"scale_jitter must be in [0, 1), got {scale_jitter}")
    rng = np.random.default_rng(seed)
    n = len(chars) * n_per_class
    labels = np.tile(np.asarray(chars), n_per_class)
    angles = rng.integers(-max_angle + 1, max_angle, size=n)
    scales = np.round(rng.uniform(1 - scale_jitter, 1 + scale_jitter, size=n), 2)
    images = np.empty((n, size, size), dtype=np.float32)
    for i, (char, angle, scale) in enumerate(zip(labels, angles, scales)):
        images[i] = rotate(render_glyph(char, size, float(scale)), float(angle))
    if noise_std > 0:
        images += rng.normal(0, noise_std, images.shape).astype(np.float32)
    table = pd.DataFrame({"class": labels, "angle": angles.astype(float), "scale": scales})
    return images, table


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else 0.0


def glyph_affinity(chars: tuple[str, ...] | list[str], size: int,
                   angle_step: float = 3.0, max_angle: float = 180.0) -> pd.DataFrame:
    """Shape affinity of upright glyphs: the best NCC over rotations of one of the pair.

    Args:
        chars: the classes.
        size: rendering size in pixels.
        angle_step: rotation search step in degrees.
        max_angle: search rotations in [-max_angle, max_angle].

    Returns:
        square DataFrame (classes on both axes), symmetric, diagonal 1, values in [0, 1]
        (negative correlations clipped to 0).
    """
    if len(set(chars)) != len(chars):
        raise ValueError(f"duplicate characters in {chars}")
    angles = np.arange(-max_angle, max_angle + 1e-9, angle_step)
    upright = {c: render_glyph(c, size) for c in chars}
    rotated = {c: [rotate(upright[c], a) for a in angles] for c in chars}
    k = len(chars)
    mat = np.eye(k)
    for i in range(k):
        for j in range(i + 1, k):
            best_ij = max(_ncc(upright[chars[i]], r) for r in rotated[chars[j]])
            best_ji = max(_ncc(upright[chars[j]], r) for r in rotated[chars[i]])
            mat[i, j] = mat[j, i] = max(0.0, (best_ij + best_ji) / 2)
    return pd.DataFrame(mat, index=list(chars), columns=list(chars))
