"""Exact tiled inference of topaz's 3D denoising U-Net (``UDenoiseNet3D``) in bounded memory.

Why not plain overlapping tiles: the U-Net pools five times, so its receptive field spans about
±160 voxels. Cutting the *input* into tiles with a halo converges slowly (measured: a 64-voxel
halo still leaves ~1e-3 relative error, see docs/denoise.md), which makes topaz's own
96/48 tiling both slow and inexact.

What we do instead: split the network at its resolution levels. Everything at 1/4 resolution and
below (``enc3`` .. ``dec4``) is 64x smaller than the tomogram and runs untiled, exactly as in
the untiled network. Only the full- and half-resolution layers run in tiles, and those layers
have a tiny receptive field (a few voxels), so a halo of ``exact_halos(model).final`` voxels
(12 for the pretrained models) makes every tile's core *identical* to the untiled output:

    stage A (tiles):   x  -> enc1 -> enc2 -> p2                  (1/4 resolution, kept)
    stage B (untiled): p2 -> enc3..enc6 -> dec5 -> dec4 -> d4     (1/8 resolution, kept)
    stage C (tiles):   [up(d4), p2] -> dec3 -> d3                 (1/4 resolution, kept)
    stage D (tiles):   x -> enc1 -> p1; [up(d3), p1] -> dec2 -> d2; [up(d2), x] -> dec1 -> y

The volume is zero-padded (in normalised units, i.e. with its mean) to a multiple of 32 voxels so
that pooling and nearest-neighbour upsampling line up between tiles; tiles are clipped at that
padded border, where the network's own zero padding then acts exactly as in the untiled pass.

All arrays are (z, y, x); network tensors are (1, C, z, y, x) float32.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

log = logging.getLogger(__name__)

ALIGN = 32  # 2**5: the U-Net pools five times


@dataclass(frozen=True)
class Halos:
    """Smallest halos (voxels each side) that make each tiled stage exact."""

    enc: int    # stage A, full-resolution voxels
    dec3: int   # stage C, quarter-resolution voxels
    final: int  # stage D, full-resolution voxels


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _round_up(a: int, m: int) -> int:
    return _ceil_div(a, m) * m


def check_unet(model: nn.Module) -> None:
    """Raise ValueError unless ``model`` has the layer layout of topaz's UDenoiseNet3D."""
    names = [f"enc{i}" for i in range(1, 7)] + [f"dec{i}" for i in range(1, 6)]
    missing = [n for n in names if not isinstance(getattr(model, n, None), nn.Sequential)]
    if missing or not isinstance(model.enc1[0], nn.Conv3d):
        raise ValueError(f"not a topaz UDenoiseNet3D (missing layers {missing})")


def _radius(seq: nn.Sequential) -> int:
    """Total radius of the convolutions of a block (voxels at its own resolution)."""
    return sum(m.kernel_size[0] // 2 for m in seq if isinstance(m, nn.Conv3d))


def _margins(model: nn.Module) -> tuple[int, int]:
    """Voxels beyond a core that dec1 needs at full resolution, and dec2 at half resolution."""
    top = _radius(model.dec1)
    return top, _ceil_div(top, 2) + _radius(model.dec2)


def exact_halos(model: nn.Module) -> Halos:
    """Halos derived from the kernel sizes: the number of voxels at a tile's cut face that
    zero padding corrupts, propagated layer by layer (conv: +radius; 2x pool: ceil(n/2))."""
    p1_bad = _ceil_div(_radius(model.enc1), 2)                # enc1 conv + pool -> half res
    enc = 4 * _ceil_div(p1_bad + _radius(model.enc2), 2)      # enc2 conv + pool -> quarter
    dec3 = _round_up(_radius(model.dec3), 2)                  # even, so d4 (1/8) lines up
    final = _round_up(2 * (_margins(model)[1] + p1_bad), 4)   # p1 valid for dec2's margin
    return Halos(enc=enc, dec3=dec3, final=final)


def padded_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """``shape`` rounded up to multiples of 32 on every axis."""
    return tuple(_round_up(s, ALIGN) for s in shape)


def tiles(shape: tuple[int, ...], core: int, halo: int, limit: tuple[int, ...] | None = None
          ) -> Iterator[tuple[tuple[slice, ...], tuple[slice, ...], tuple[slice, ...]]]:
    """Cut ``shape`` into cores of edge ``core`` with ``halo`` voxels of real neighbouring data
    around them, clipped at the volume border.

    Args:
        limit: cores end at this shape (<= ``shape``) while their halos may reach beyond it, up
            to ``shape``: the decoder computes only what is kept, not the alignment padding.
    Yields:
        (core slices in the volume, tile slices in the volume, core slices inside the tile).
    """
    limit = shape if limit is None else limit
    starts = [range(0, s, core) for s in limit]
    for corner in np.ndindex(*[len(r) for r in starts]):
        c0 = [starts[a][i] for a, i in enumerate(corner)]
        c1 = [min(s, c + core) for s, c in zip(limit, c0)]
        t0 = [max(0, c - halo) for c in c0]
        t1 = [min(s, c + halo) for s, c in zip(shape, c1)]
        yield (tuple(slice(a, b) for a, b in zip(c0, c1)),
               tuple(slice(a, b) for a, b in zip(t0, t1)),
               tuple(slice(a - t, b - t) for a, b, t in zip(c0, c1, t0)))


def _scaled(sl: tuple[slice, ...], f: int) -> tuple[slice, ...]:
    return tuple(slice(s.start // f, s.stop // f) for s in sl)


def _up(h: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Nearest upsampling to ``like``'s size, as the network does (an exact 2x here)."""
    return F.interpolate(h, size=tuple(like.shape[2:]), mode="nearest")


class TiledUNet:
    """Run a UDenoiseNet3D on a normalised volume tile by tile, exactly.

    Args:
        model: topaz ``UDenoiseNet3D`` (eval mode, on ``device``).
        core: edge of a tile's core in voxels, a multiple of 32; memory grows with
            (core + 24)^3 (about 1.2 kB per voxel on CPU: 4 GB at core 128).
        halo: full-resolution halo of stage D; default (None) the exact one.
    """

    def __init__(self, model: nn.Module, core: int, device: str = "cpu",
                 halo: int | None = None, progress: bool = True):
        check_unet(model)
        if core <= 0 or core % ALIGN:
            raise ValueError(f"core must be a positive multiple of {ALIGN}, got {core}")
        self.core, self.device, self.progress = core, device, progress
        # channels-last 3D on CPU: oneDNN's convolutions 1.2x faster on the pretrained U-Net,
        # same output to float rounding (docs/denoise.md); a copy, the caller's model is untouched
        self.fmt = torch.channels_last_3d if device == "cpu" else torch.contiguous_format
        self.model = copy.deepcopy(model).eval().to(memory_format=self.fmt)
        exact = exact_halos(model)
        self.halos = exact if halo is None else Halos(
            enc=_round_up(halo, 4), dec3=max(2, _round_up(halo // 4, 2)), final=_round_up(halo, 4))

    def _x(self, vol: np.ndarray, sl: tuple[slice, ...], mean: float, std: float) -> torch.Tensor:
        """Normalised input tile (1, 1, z, y, x); zero beyond the real volume (padding)."""
        out = np.zeros([s.stop - s.start for s in sl], dtype=np.float32)
        real = tuple(slice(s.start, min(s.stop, n)) for s, n in zip(sl, vol.shape))
        block = np.asarray(vol[real], dtype=np.float32)
        out[tuple(slice(0, r.stop - r.start) for r in real)] = (block - mean) / std
        return torch.from_numpy(out)[None, None].to(self.device, memory_format=self.fmt)

    def _loop(self, shape, core, halo, desc, limit=None):
        items = list(tiles(shape, core, halo, limit))
        return tqdm(items, desc=desc, unit="tile", disable=not self.progress, mininterval=5)

    def _decode_tile(self, x: torch.Tensor, d3: torch.Tensor,
                     inner: tuple[slice, ...]) -> torch.Tensor:
        """Stage D on one tile: x (1, 1, *T) and its d3 (1, C, *T/4) -> y on ``inner`` (core).

        dec2 and dec1 (~90 % of the network's work) run only on the core plus the few voxels
        their own kernels need (``_margins``), not on the whole halo.
        """
        m = self.model
        top, mid = _margins(m)
        p1 = m.enc1(x)
        c2 = tuple(slice(max(0, s.start // 2 - mid), min(n, s.stop // 2 + mid))
                   for s, n in zip(inner, p1.shape[2:]))
        d2 = m.dec2(torch.cat([_up(d3, p1), p1], 1)[(slice(None), slice(None), *c2)])
        del p1
        c1 = tuple(slice(max(0, s.start - top), min(n, s.stop + top))
                   for s, n in zip(inner, x.shape[2:]))
        u = F.interpolate(d2, scale_factor=2, mode="nearest")
        del d2
        h = torch.cat([u[(slice(None), slice(None), *(slice(a.start - 2 * b.start,
                                                            a.stop - 2 * b.start)
                                                      for a, b in zip(c1, c2)))],
                       x[(slice(None), slice(None), *c1)]], 1)
        del u  # peak memory: only the concatenation stays alive through dec1
        y = m.dec1(h)
        return y[(0, 0, *(slice(s.start - c.start, s.stop - c.start) for s, c in zip(inner, c1)))]

    @torch.inference_mode()
    def __call__(self, vol: np.ndarray, mean: float, std: float,
                 out: np.ndarray | None = None) -> np.ndarray:
        """Denoise ``vol`` (z, y, x), normalised as ``(vol - mean) / std`` and un-normalised after.

        ``vol`` may be a read-only memory map; ``out`` (same shape, float32) receives the result.
        """
        m, h, t_start = self.model, self.halos, time.perf_counter()
        if out is None:
            out = np.empty(vol.shape, dtype=np.float32)
        full = padded_shape(vol.shape)
        q = tuple(s // 4 for s in full)

        # stage A: x -> p2 (quarter resolution), tiled
        p2 = torch.empty((1, m.enc2[0].out_channels, *q), device=self.device,
                         memory_format=self.fmt)
        for core_sl, tile_sl, inner in self._loop(full, self.core, h.enc, "denoise A (encoder)"):
            p2[(0, slice(None), *_scaled(core_sl, 4))] = m.enc2(m.enc1(
                self._x(vol, tile_sl, mean, std)))[(0, slice(None), *_scaled(inner, 4))]

        log.info("stage A (encoder, %d tiles) done after %.1f s", len(list(tiles(
            full, self.core, h.enc))), time.perf_counter() - t_start)
        # stage B: everything at 1/8 resolution and below, untiled (64x smaller than the volume)
        p3 = m.enc3(p2)
        p4 = m.enc4(p3)
        hh = m.enc6(m.enc5(p4))
        hh = m.dec5(torch.cat([_up(hh, p4), p4], 1))
        del p4
        d4 = m.dec4(torch.cat([_up(hh, p3), p3], 1))
        del p3, hh

        # stage C: [up(d4), p2] -> dec3 -> d3 (quarter resolution), tiled
        d3 = torch.empty((1, m.dec3[-2].out_channels, *q), device=self.device,
                         memory_format=self.fmt)
        for core_sl, tile_sl, inner in self._loop(q, self.core // 4, h.dec3, "denoise C"):
            p2_t = p2[(slice(None), slice(None), *tile_sl)]
            d4_t = d4[(slice(None), slice(None), *_scaled(tile_sl, 2))]
            d3[(0, slice(None), *core_sl)] = m.dec3(torch.cat([_up(d4_t, p2_t), p2_t], 1))[
                (0, slice(None), *inner)]
        del p2, d4
        log.info("stages B, C (coarse levels) done after %.1f s", time.perf_counter() - t_start)

        # stage D: full and half resolution, tiled; the core goes straight into ``out``. Cores
        # stop at the volume (rounded up to 4 so d3 lines up), not at the padded shape: the
        # decoder (~90 % of the work) never computes the alignment padding (100 x 200 x 200:
        # 4.0 M voxels instead of 6.4 M).
        shape = vol.shape
        real = tuple(min(f, _round_up(n, 4)) for f, n in zip(full, shape))
        for core_sl, tile_sl, inner in self._loop(full, self.core, h.final, "denoise D (decoder)",
                                                  limit=real):
            y = self._decode_tile(self._x(vol, tile_sl, mean, std),
                                  d3[(slice(None), slice(None), *_scaled(tile_sl, 4))], inner)
            keep = tuple(slice(0, min(c.stop, n) - c.start) for c, n in zip(core_sl, shape))
            dst = tuple(slice(c.start, min(c.stop, n)) for c, n in zip(core_sl, shape))
            out[dst] = y[keep].cpu().numpy() * std + mean
        log.info("tiled U-Net: %s voxels, core %d, halos %s, %.1f s", "x".join(map(str, shape)),
                 self.core, h, time.perf_counter() - t_start)
        return out


@torch.inference_mode()
def untiled(model: nn.Module, vol: np.ndarray, mean: float, std: float,
            device: str = "cpu") -> np.ndarray:
    """The reference: the whole (padded) volume through the network in one pass, (z, y, x).

    For shapes that are multiples of 32 this is exactly topaz's untiled ``Denoise3D.denoise``.
    Memory grows with the whole volume (about 1.2 kB per voxel): for small volumes and tests.
    """
    full = padded_shape(vol.shape)
    x = np.zeros(full, dtype=np.float32)
    x[tuple(slice(0, n) for n in vol.shape)] = (np.asarray(vol, dtype=np.float32) - mean) / std
    y = model.eval()(torch.from_numpy(x)[None, None].to(device))[0, 0].cpu().numpy()
    return y[tuple(slice(0, n) for n in vol.shape)] * std + mean


def tile_memory_mb(core: int, halo: int = 12) -> float:
    """Rough peak memory of one stage-D tile on CPU, in MB (measured ~1.2 kB per voxel)."""
    return 1.2 * (core + 2 * halo) ** 3 / 1024
