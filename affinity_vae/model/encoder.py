"""Convolutional encoder with heads for mu, log sigma^2 and a pose vector (2D or 3D)."""

from __future__ import annotations

import math

import torch
from torch import nn

from affinity_vae.model.pose_head import (
    RotationBranch,
    gaussian_transfer,
    matrix_to_sixd,
    moment_frame,
    soft_sphere,
)


def conv_layers(ndim: int) -> tuple[type[nn.Module], type[nn.Module], type[nn.Module]]:
    """(Conv, ConvTranspose, BatchNorm) classes for 2D or 3D data."""
    if ndim == 3:
        return nn.Conv3d, nn.ConvTranspose3d, nn.BatchNorm3d
    if ndim == 2:
        return nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d
    raise ValueError(f"data must be 2D or 3D, got ndim={ndim}")


def filters(channels: int, depth: int) -> list[int]:
    """Channels of the conv levels: channels * 2**i for i < depth."""
    return [channels * 2 ** i for i in range(depth)]


class Encoder(nn.Module):
    """depth x [conv 3, stride 2 -> (batch-norm) -> ReLU], flatten, linear heads.

    Input (N, 1, *box) with every box side divisible by 2**depth; outputs
    mu (N, latent_dims), logvar (N, latent_dims), pose (N, pose_dims) (pose_dims may be 0).
    ``pose_head="linear"`` (the paper's): the pose is a linear head on the shared features.
    ``pose_head="rotation"`` (3D): the pose is a rotation from its own near-equivariant branch
    (affinity_vae.model.pose_head.RotationBranch): its first two vectors, the 6D
    representation (pose_dims 6) that sixd_to_matrix turns into a rotation.
    ``pose_head="moments"`` (3D): the pose is the box's principal-axes frame (second moments
    for the axes, third moments for their directions; affinity_vae.model.pose_head.moment_frame)
    after the same low-pass and spherical mask, as its 6D representation; no parameters.
    """

    pose_mask: torch.Tensor          # buffers of the moments head, typed for mypy
    pose_transfer: torch.Tensor | None


    def __init__(self, box: tuple[int, ...], channels: int, depth: int, latent_dims: int,
                 pose_dims: int, batch_norm: bool, pose_head: str, pose_channels: int,
                 pose_lowpass: float):
        super().__init__()
        conv, _, bn = conv_layers(len(box))
        layers: list[nn.Module] = []
        c_in = 1
        for c in filters(channels, depth):
            layers += [conv(c_in, c, kernel_size=3, stride=2, padding=1)]
            if batch_norm:
                layers.append(bn(c))
            layers.append(nn.ReLU(inplace=True))
            c_in = c
        self.features = nn.Sequential(*layers, nn.Flatten())
        flat = c_in * math.prod(s // 2 ** depth for s in box)
        self.mu = nn.Linear(flat, latent_dims)
        self.logvar = nn.Linear(flat, latent_dims)
        self.rotation = None
        self.pose = None
        self.moments = pose_dims > 0 and pose_head == "moments"
        if self.moments:
            if pose_dims != 6:
                raise ValueError(f"the moments pose head has pose_dims 6, got {pose_dims}")
            self.register_buffer("pose_mask", soft_sphere(tuple(box))[None, None],
                                 persistent=False)
            self.register_buffer("pose_transfer", gaussian_transfer(tuple(box), pose_lowpass),
                                 persistent=False)
        elif pose_dims > 0 and pose_head == "rotation":
            if pose_dims != 6:
                raise ValueError(f"the rotation pose head has pose_dims 6, got {pose_dims}")
            self.rotation = RotationBranch(tuple(box), pose_channels, pose_lowpass)
        elif pose_dims > 0:
            self.pose = nn.Linear(flat, pose_dims)
        self.pose_dims = pose_dims

    def pose_vectors(self, x: torch.Tensor) -> torch.Tensor:
        """The rotation branch's raw output V (N, 3, 3) (rotation pose head only)."""
        if self.rotation is None:
            raise ValueError("pose_vectors needs the rotation pose head")
        return self.rotation(x)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.features(x)
        if self.moments:
            with torch.no_grad():
                pose = matrix_to_sixd(moment_frame(x, self.pose_mask, self.pose_transfer))
        elif self.rotation is not None:
            # the first two vectors; the decoder's Gram-Schmidt (sixd_to_matrix) turns them into
            # a rotation. Gram-Schmidt is as equivariant as the SVD projection and, unlike the
            # SVD, has stable gradients when the singular values meet (V a scaled rotation).
            pose = matrix_to_sixd(self.rotation(x))
        elif self.pose is not None:
            pose = self.pose(h)
        else:
            pose = h.new_zeros(h.shape[0], 0)
        return self.mu(h), self.logvar(h), pose
