"""Stage `denoise`: topaz's pretrained 3D U-Net on each tomogram, tiled exactly and cheaply.

``main(smk)`` reads ``reconstruction.mrc`` (memory-mapped) and writes ``denoised/<tomo>.mrc``
with the same shape and voxel size. The tiling (``affinity_vae.denoise.unet``) gives the same
result as running the whole volume through the network at once (relative L2 error ~1e-6,
float rounding), in memory bounded by ``patch_size``.

Nothing here imports topaz or torch until a network is actually needed, so
``denoise.enabled: false`` (a plain copy) and bad-input checks stay light.
"""

from __future__ import annotations

import logging
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from affinity_vae.errors import InputError
from affinity_vae.io.atomic import atomic_path
from affinity_vae.io.mrc import read_volume, write_volume

log = logging.getLogger(__name__)

PRETRAINED = ("unet-3d-10a", "unet-3d-20a")  # topaz-em's 3D models (10 A and 20 A voxels)
ALIGN = 32  # patch sizes are multiples of 2**5 (the U-Net pools five times)


@dataclass(frozen=True)
class Settings:
    """The ``denoise:`` config section (defaults in workflow/schemas/denoise.schema.yaml)."""

    enabled: bool = True
    model: str = "unet-3d-10a"
    patch_size: int = 128
    padding: int | None = None
    device: str = "auto"

    @classmethod
    def from_config(cls, section: dict[str, Any], device: str = "auto") -> Settings:
        """From the config section; ``device: null`` there means the top-level ``device``."""
        known = {k: section[k] for k in ("enabled", "model", "patch_size", "padding")
                 if k in section}
        return cls(**known, device=section.get("device") or device)


def check_settings(s: Settings) -> None:
    """Raise InputError (one line) for a bad model name, patch size or device."""
    if s.model not in PRETRAINED and not Path(s.model).is_file():
        raise InputError(f"config key 'denoise.model': unknown topaz model '{s.model}' -- use "
                         f"one of {', '.join(PRETRAINED)}, or the path of a model file "
                         f"trained with topaz")
    if s.patch_size < ALIGN or s.patch_size % ALIGN:
        raise InputError(f"config key 'denoise.patch_size': {s.patch_size} is not a positive "
                         f"multiple of {ALIGN} -- use e.g. 64, 96 or 128")
    if s.padding is not None and s.padding < 0:
        raise InputError(f"config key 'denoise.padding': {s.padding} is negative -- use null "
                         f"(the exact halo) or a non-negative number of voxels")
    if s.device not in ("auto", "cpu", "cuda"):
        raise InputError(f"config key 'denoise.device': '{s.device}' -- use auto, cpu or cuda")


def volume_stats(vol: np.ndarray, path: str | Path, slab: int = 16) -> tuple[float, float]:
    """Mean and std of a (z, y, x) volume, read slab by slab (works on a memory map).

    Raises:
        InputError: the volume holds NaN/Inf, or is constant.
    """
    n, total, total2 = 0, 0.0, 0.0
    for z in range(0, vol.shape[0], slab):
        block = np.asarray(vol[z:z + slab], dtype=np.float64)
        if not np.isfinite(block).all():
            bad = int(np.count_nonzero(~np.isfinite(block)))
            raise InputError(f"{path}: the tomogram contains NaN/Inf values ({bad} in slices "
                             f"z={z}..{z + len(block) - 1}) -- replace them (e.g. with the "
                             f"mean) or re-run the reconstruction")
        n += block.size
        total += float(block.sum())
        total2 += float(np.square(block).sum())
    mean = total / n
    var = max(total2 / n - mean * mean, 0.0)
    if var <= 1e-12 * max(1.0, mean * mean):
        raise InputError(f"{path}: the tomogram is constant -- nothing to denoise; check the file")
    return mean, float(np.sqrt(var))


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when a GPU is present, else 'cpu'."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("config key 'denoise.device' (or 'device'): cuda requested but no GPU "
                         "is visible -- use auto or cpu")
    return device


def load_model(name: str, device: str = "cpu"):
    """topaz's 3D U-Net (``UDenoiseNet3D``, eval mode) by pretrained name or model-file path."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pkg_resources deprecation inside topaz
        from topaz.denoise import Denoise3D

        from affinity_vae.denoise.unet import check_unet

        try:
            model = Denoise3D(name, use_cuda=(device == "cuda"), dims=3).model
            check_unet(model)
        except (ValueError, TypeError, AttributeError) as exc:
            raise InputError(f"config key 'denoise.model': cannot load '{name}' as a topaz 3D "
                             f"denoising model ({exc}) -- use one of {', '.join(PRETRAINED)} "
                             f"or a model file saved by topaz") from None
    return model.eval()


def denoise_volume(vol: np.ndarray, model, patch_size: int = 128, padding: int | None = None,
                   device: str = "cpu", mean_std: tuple[float, float] | None = None,
                   out: np.ndarray | None = None, progress: bool = True) -> np.ndarray:
    """Denoise a (z, y, x) volume with exact tiling; returns float32 (z, y, x).

    Normalisation is global, as topaz's untiled path does: (vol - mean) / std, network, undo.
    """
    from affinity_vae.denoise.unet import TiledUNet

    mean, std = mean_std if mean_std is not None else volume_stats(vol, "<array>")
    tiled = TiledUNet(model, patch_size, device=device, halo=padding, progress=progress)
    return tiled(vol, mean, std, out=out)


def denoise_file(src: str | Path, dst: str | Path, settings: Settings, threads: int = 1) -> None:
    """Denoise the tomogram ``src`` into ``dst`` (same shape and voxel size), or copy it when
    ``settings.enabled`` is false. Every input check runs before the network is loaded."""
    src, dst = Path(src), Path(dst)
    if not settings.enabled:
        log.info("denoise.enabled is false: copying %s unchanged", src)
        with atomic_path(dst) as tmp:
            shutil.copyfile(src, tmp)
        return
    check_settings(settings)
    vol, voxel = read_volume(src, mmap=True)
    if vol.ndim != 3:
        raise InputError(f"{src}: expected a 3D tomogram (z, y, x), got shape {vol.shape} "
                         f"-- point the dataset at reconstruction volumes")
    if voxel <= 0:
        raise InputError(f"{src}: the MRC header has no voxel size -- set it, e.g. "
                         f"`python -c \"import mrcfile; m=mrcfile.open('{src}', 'r+'); "
                         f"m.voxel_size=10.0\"`")
    mean, std = volume_stats(vol, src)
    import torch

    torch.set_num_threads(max(1, threads))
    device = resolve_device(settings.device)
    model = load_model(settings.model, device)
    from affinity_vae.denoise.unet import exact_halos

    need = exact_halos(model).final
    if settings.padding is not None and settings.padding < need:
        raise InputError(f"config key 'denoise.padding': {settings.padding} voxels is less than "
                         f"the {need} this network needs for exact tiling -- use null (auto)")
    log.info("%s: %s voxels of %.2f A, mean %.4g, std %.4g; model %s on %s, patch %d, "
             "%d thread(s)", src, "x".join(map(str, vol.shape)), voxel, mean, std,
             settings.model, device, settings.patch_size, threads)
    t0 = time.perf_counter()
    out = denoise_volume(vol, model, settings.patch_size, settings.padding, device,
                         mean_std=(mean, std))
    log.info("denoised in %.1f s; output mean %.4g, std %.4g", time.perf_counter() - t0,
             float(out.mean()), float(out.std()))
    write_volume(dst, out, voxel)


def main(smk: Any) -> None:
    """Snakemake entry (rule ``denoise_tomogram``): input reconstruction -> output denoised."""
    settings = Settings.from_config(dict(smk.params.denoise), smk.params.device)
    denoise_file(smk.input[0], smk.output[0], settings, threads=int(smk.threads))
