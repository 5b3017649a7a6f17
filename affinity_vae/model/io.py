"""Saving and loading trained models and training checkpoints (tensors and plain data only,
so ``torch.load(path, weights_only=True)`` works)."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from affinity_vae.errors import InputError
from affinity_vae.io.atomic import atomic_path
from affinity_vae.model.vae import AffinityVAE

FORMAT = "affinity_vae.model/1"


def save_trained(path: str | os.PathLike, model: AffinityVAE, meta: dict[str, Any]) -> None:
    """Write ``{format, state_dict, meta}`` atomically; meta must be plain data."""
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, "state_dict": model.state_dict(), "meta": meta}, tmp)


def _torch_load(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise InputError(f"{path}: model file not found -- run `snakemake train` first")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 (corrupt/foreign file: one line for the user)
        raise InputError(f"{path}: not a readable model file ({type(exc).__name__}) -- "
                         f"retrain or point at a model.pt written by this pipeline") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise InputError(f"{path}: not a model file of this pipeline (format "
                         f"{obj.get('format') if isinstance(obj, dict) else '?'}) -- retrain")
    return obj


def load_state(model: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Load a state dict, turning an architecture mismatch into a one-line InputError."""
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = first[1].strip() if len(first) > 1 else first[0]
        raise InputError(f"{path}: saved weights are from a different architecture ({detail}) "
                         f"-- delete it or use the model config it was trained with") from None


def load_trained(path: str | os.PathLike, device: str = "cpu"
                 ) -> tuple[AffinityVAE, dict[str, Any]]:
    """Load ``model.pt`` -> (model in eval mode on ``device``, meta).

    meta (plain dict): ``classes`` (training class names in the order of the affinity matrix,
    i.e. the label index used in training), ``variant`` (avae | bvae), ``box`` (list, e.g.
    [32, 32, 32]), ``ndim``, ``latent_dims``, ``pose_dims``, ``model`` (full model config),
    ``train`` (train config), ``affinity`` (C x C list of lists, the matrix used), ``seed``,
    ``epochs``, ``voxel_size``.
    """
    path = Path(path)
    obj = _torch_load(path)
    meta = obj["meta"]
    model = AffinityVAE(meta["model"], tuple(meta["box"]))
    load_state(model, obj["state_dict"], path)
    return model.to(device).eval(), meta


# --- training checkpoints -------------------------------------------------------------------

def rng_state() -> dict[str, Any]:
    """RNG states of torch, numpy and python as tensors and plain lists."""
    np_state = cast(tuple[Any, ...], np.random.get_state(legacy=True))
    py_version, py_state, py_gauss = random.getstate()
    return {"torch": torch.get_rng_state(),
            "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)),
                      "pos": int(np_state[2]), "has_gauss": int(np_state[3]),
                      "cached": float(np_state[4])},
            "python": {"version": py_version, "state": list(py_state), "gauss": py_gauss}}


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """Write a checkpoint atomically (a kill leaves either the old set or a complete file)."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``."""
    return torch.load(path, map_location="cpu", weights_only=True)
