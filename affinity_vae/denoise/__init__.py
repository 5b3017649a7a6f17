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
import pickle
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
    """The ``denoise:`` config section. No defaults here: they live in
    workflow/schemas/denoise.schema.yaml (library callers: ``Settings.from_config(
    schema_defaults("denoise", {...}), device)``)."""

    enabled: bool
    model: str
    patch_size: int
    padding: int | None
    device: str

    @classmethod
    def from_config(cls, section: dict[str, Any], device: str) -> Settings:
        """From the full, validated config section; ``device: null`` there means the top-level
        ``device`` (given as ``device``)."""
        return cls(enabled=section["enabled"], model=section["model"],
                   patch_size=section["patch_size"], padding=section["padding"],
                   device=section["device"] or device)


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


PRETRAINED_FILES = {"unet-3d-10a": "unet-3d-10a-v0.2.4.sav",
                    "unet-3d-20a": "unet-3d-20a-v0.2.4.sav"}  # inside topaz/pretrained/denoise


def _state_dict(obj: Any, where: str) -> dict:
    """The tensor dict of a weights-only load: a state dict, or one under 'state_dict'."""
    import torch

    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(
            isinstance(v, torch.Tensor) for v in obj.values()):
        raise InputError(f"config key 'denoise.model': {where} holds no state dict of tensors "
                         f"-- save the network with torch.save(model.state_dict(), path)")
    return obj


def unet_from_state(state: dict, where: str):
    """topaz's ``UDenoiseNet3D`` built by this code with the widths the state dict implies
    (first conv weight (nf, 1, w, w, w)), its weights loaded strictly, in eval mode."""
    from topaz.denoising.models import UDenoiseNet3D

    first = state.get("enc1.0.weight")
    if first is None or first.ndim != 5:
        raise InputError(f"config key 'denoise.model': {where} is not a topaz 3D U-Net "
                         f"(no 5D enc1.0.weight) -- use a 3D model trained with topaz")
    model = UDenoiseNet3D(nf=int(first.shape[0]), base_width=int(first.shape[-1]))
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first_line = str(exc).splitlines()[0]
        raise InputError(f"config key 'denoise.model': {where} does not fit topaz's 3D U-Net "
                         f"({first_line}) -- use a 3D model trained with topaz") from None
    return model.eval()


def load_model(name: str, device: str = "cpu"):
    """topaz's 3D U-Net (``UDenoiseNet3D``, eval mode) by pretrained name or model-file path.

    No file is unpickled: the pretrained weights (topaz's package data) and a user's file are
    read with ``torch.load(weights_only=True)`` as a state dict into a network this code builds.
    A full pickled model (topaz's own ``torch.save(model)``; loading it can run arbitrary code)
    is refused with one line that shows how to convert a trusted one to a weights file.
    """
    import importlib.resources

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pkg_resources deprecation inside topaz
        if name in PRETRAINED:
            res = importlib.resources.files("topaz").joinpath(
                f"pretrained/denoise/{PRETRAINED_FILES[name]}")
            with res.open("rb") as f:
                state = torch.load(f, map_location="cpu", weights_only=True)
            model = unet_from_state(_state_dict(state, name), name)
        else:
            path = Path(name)
            try:
                obj = torch.load(path, map_location="cpu", weights_only=True)
            except pickle.UnpicklingError:
                raise InputError(
                    f"config key 'denoise.model': {path} is not a weights-only model file (a "
                    f"full pickle, or not a torch file), and unpickling it could run code -- "
                    f"if you trust it, convert it once yourself (load it in Python with "
                    f"torch's weights-only mode off, then torch.save(m.state_dict(), "
                    f"'model.pt')) and set denoise.model to model.pt") from None
            except (RuntimeError, EOFError, OSError, ValueError) as exc:
                msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise InputError(f"config key 'denoise.model': cannot load '{path}' as a topaz "
                                 f"3D denoising model ({msg}) -- use one of "
                                 f"{', '.join(PRETRAINED)} or a model file saved by topaz"
                                 ) from None
            model = unet_from_state(_state_dict(obj, str(path)), str(path))
    return model.to(device).eval()


def denoise_volume(vol: np.ndarray, model, patch_size: int, padding: int | None,
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
