"""Convolutional encoder with heads for mu, log sigma^2 and a pose vector (2D or 3D)."""

from __future__ import annotations

import math

import torch
from torch import nn


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
    """

    def __init__(self, box: tuple[int, ...], channels: int, depth: int, latent_dims: int,
                 pose_dims: int, batch_norm: bool = True):
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
        self.pose = nn.Linear(flat, pose_dims) if pose_dims > 0 else None
        self.pose_dims = pose_dims

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.features(x)
        pose = self.pose(h) if self.pose is not None else h.new_zeros(h.shape[0], 0)
        return self.mu(h), self.logvar(h), pose
