"""The Affinity-VAE: encoder -> (mu, logvar, pose) -> reparameterised z -> decoder."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from affinity_vae.errors import InputError
from affinity_vae.model.decoders import CNNDecoder, GMDDecoder
from affinity_vae.model.encoder import Encoder
from affinity_vae.model.pose_head import sixd_to_matrix


def check_architecture(cfg: dict[str, Any], box: tuple[int, ...]) -> dict[str, Any]:
    """Check the model config against the box; returns the config the model is built from.

    ``cfg`` is the full, validated config section ``model`` (defaults filled from
    workflow/schemas/model.schema.yaml; library callers: ``schema_defaults("model", {...})``),
    optionally with ``gmd_physics`` (the workflow's forward-model settings; absent = off).

    Raises:
        InputError: box side not divisible by 2**depth, 2D/3D box mismatch, GMD pose_dims wrong.
    """
    cfg = dict(cfg)
    box = tuple(int(s) for s in box)
    if len(box) not in (2, 3):
        raise InputError(f"subtomogram boxes must be 2D or 3D, got shape {box} -- check the "
                         f"extract outputs")
    if cfg["pose_head"] in ("rotation", "moments") and cfg["pose_dims"]:
        if len(box) != 3:
            raise InputError(f"config key 'model.pose_head': the {cfg['pose_head']} head needs "
                             f"3D boxes, got {box} -- use pose_head: linear for 2D data")
        if cfg["pose_head"] == "rotation" and any(s % 4 for s in box):
            raise InputError(f"config key 'model.pose_head': the rotation head needs box sides "
                             f"divisible by 4, got {box} -- change extract.box_size")
        cfg["pose_dims"] = 6   # the 6D representation of a rotation
    step = 2 ** cfg["depth"]
    if any(s % step for s in box):
        raise InputError(f"config key 'model.depth': box {box} is not divisible by 2**depth = "
                         f"{step} -- lower model.depth or change extract.box_size")
    if cfg["decoder"] == "gmd" and cfg["pose_head"] == "linear":
        need = 4 if len(box) == 3 else 1
        if cfg["pose_dims"] not in (0, need):
            raise InputError(f"config key 'model.pose_dims': the GMD decoder on {len(box)}D data "
                             f"needs pose_dims {need} ({'theta + axis' if need == 4 else 'angle'})"
                             f" (or 0 for no pose), got {cfg['pose_dims']} -- set it to {need}")
    return cfg


class AffinityVAE(nn.Module):
    """Affinity-VAE on (N, 1, D, H, W) or (N, 1, H, W) float tensors.

    ``encode(x) -> (mu, logvar, pose)`` with shapes (N, latent_dims), (N, latent_dims),
    (N, pose_dims); ``decode(z, pose) -> x`` of the input shape; ``forward(x)`` returns
    ``(x_hat, mu, logvar, pose)`` with z sampled in training mode and z = mu in eval mode.
    """

    def __init__(self, cfg: dict[str, Any], box: tuple[int, ...]):
        super().__init__()
        cfg = check_architecture(cfg, box)
        self.config, self.box = cfg, tuple(int(s) for s in box)
        self.latent_dims, self.pose_dims = cfg["latent_dims"], cfg["pose_dims"]
        self.encoder = Encoder(self.box, cfg["channels"], cfg["depth"], cfg["latent_dims"],
                               cfg["pose_dims"], cfg["batch_norm"], cfg["pose_head"],
                               cfg["pose_channels"], cfg["pose_lowpass"])
        self.decoder: CNNDecoder | GMDDecoder
        if cfg["decoder"] == "cnn":
            self.decoder = CNNDecoder(self.box, cfg["channels"], cfg["depth"],
                                      cfg["latent_dims"], cfg["pose_dims"], cfg["batch_norm"])
        elif cfg["decoder"] == "gmd":
            self.decoder = GMDDecoder(self.box, cfg["latent_dims"], cfg["pose_dims"],
                                      cfg["n_gaussians"], cfg["gmd_hidden"],
                                      cfg["gmd_sigma_min"], cfg["gmd_sigma_max"],
                                      cfg["gmd_convs"], forward=cfg["gmd_forward"],
                                      physics=cfg.get("gmd_physics"))
        else:
            raise InputError(f"config key 'model.decoder': unknown decoder {cfg['decoder']!r} "
                             f"-- use cnn or gmd")

    @property
    def inplane_pose_sense(self) -> float:
        """+1 or -1: the sense in which pose[:, 0] should follow an in-plane rotation that is
        counter-clockwise as displayed (row 0 at the top; affinity_vae.data.rotate_inplane).
        The GMD decoder's 2D pose turns its centroids counter-clockwise in (x, y = row) grid
        coordinates, i.e. clockwise as displayed: -1. The CNN decoder's pose has no built-in
        sense: +1, the sense of the alphanumeric STAR angle."""
        return -1.0 if self.config["decoder"] == "gmd" else 1.0

    @property
    def has_rotation_head(self) -> bool:
        """True when the pose channel is a rotation (the rotation or moments pose head)."""
        return self.encoder.rotation is not None or self.encoder.moments

    def pose_rotation(self, pose: torch.Tensor) -> torch.Tensor | None:
        """Rotation matrices (N, 3, 3) acting on (x, y, z) that the pose (N, P) stands for, or
        None when the pose is not a rotation (2D data, the CNN decoder's linear pose, no pose).
        Rotation/moments head: Gram-Schmidt of the 6D pose; GMD decoder: its axis-angle pose."""
        if len(self.box) != 3 or self.pose_dims == 0:
            return None
        if self.has_rotation_head:
            return sixd_to_matrix(pose)
        if isinstance(self.decoder, GMDDecoder):
            return self.decoder.rotation(pose)
        return None

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (N, 1, *box) -> mu (N, L), logvar (N, L), pose (N, P)."""
        return self.encoder(x)

    def decode(self, z: torch.Tensor, pose: torch.Tensor | None = None) -> torch.Tensor:
        """z (N, L), pose (N, P) (None = zeros) -> reconstruction (N, 1, *box)."""
        if pose is None:
            pose = z.new_zeros(z.shape[0], self.pose_dims)
        return self.decoder(z, pose)

    def forward(self, x: torch.Tensor):
        mu, logvar, pose = self.encode(x)
        if self.training:
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        else:
            z = mu
        return self.decode(z, pose), mu, logvar, pose
