"""Decoders: transposed-conv CNN (CNN-aVAE) and Gaussian mixture (GMD-aVAE, paper section 3.3)."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from affinity_vae.imaging import forward_transfer
from affinity_vae.model import gmd
from affinity_vae.model.encoder import conv_layers, filters
from affinity_vae.model.pose_head import sixd_to_matrix
from affinity_vae.wedge import fourier_grid


class CNNDecoder(nn.Module):
    """concat(z, pose) -> linear -> depth x transposed conv (stride 2) back to the box.

    decode(z (N, latent), pose (N, pose_dims)) -> (N, 1, *box).
    """

    def __init__(self, box: tuple[int, ...], channels: int, depth: int, latent_dims: int,
                 pose_dims: int, batch_norm: bool = True):
        super().__init__()
        _, convt, bn = conv_layers(len(box))
        chans = filters(channels, depth)
        self.start = (chans[-1], *(s // 2 ** depth for s in box))
        self.fc = nn.Linear(latent_dims + pose_dims, math.prod(self.start))
        layers: list[nn.Module] = [nn.ReLU(inplace=True)]
        for i in reversed(range(depth)):
            c_out = chans[i - 1] if i > 0 else 1
            layers.append(convt(chans[i], c_out, kernel_size=3, stride=2, padding=1,
                                output_padding=1))
            if i > 0:
                if batch_norm:
                    layers.append(bn(c_out))
                layers.append(nn.ReLU(inplace=True))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
        h = self.fc(torch.cat([z, pose], dim=1)).view(-1, *self.start)
        return self.net(h)


def transfer_gain(transfer: np.ndarray, box: tuple[int, ...], sigma: float) -> float:
    """RMS gain of a Fourier transfer (rfftn grid of ``box``) on Gaussians of width ``sigma``
    voxels, zero frequency excluded: sqrt(sum T^2 |G|^2 / sum |G|^2), |G(k)|^2 =
    exp(-4 pi^2 sigma^2 k^2). Keeps the decoder's first output std (~0.05) the same with a
    forward model (the CTF damps the low frequencies a mixture lives in; measured 6x)."""
    kz, ky, kx = fourier_grid(box, rfft=True)
    g2 = np.exp(-4 * np.pi ** 2 * sigma ** 2 * (kz ** 2 + ky ** 2 + kx ** 2))
    g2 = np.broadcast_to(g2, transfer.shape).copy()
    g2.flat[0] = 0.0
    return float(np.sqrt((transfer.astype(np.float64) ** 2 * g2).sum() / g2.sum()))


class GMDDecoder(nn.Module):
    """Gaussian-mixture decoder: z -> M centroids in [-1, 1]^D, widths, binary weights phi
    (straight-through); the pose rotates the centroids; the mixture is rendered on the grid
    (separable renderer, gmd.render); optional learnable convs model the forward transform.

    Pose: 3D data uses pose (N, 4) = (theta, axis) -> quaternion -> rotation matrix (Eq. 3),
    or, with the rotation pose head, pose (N, 6) (6D representation, Gram-Schmidt);
    2D data uses pose (N, 1) = angle about z; pose_dims 0 means no rotation (beta-VAE baseline).
    The rotation centre is voxel n // 2 (gmd.grid_axis), as in extraction.
    Widths lie in [sigma_min, sigma_max] voxels. decode(z, pose) -> (N, 1, *box).

    Forward model (``forward``, config key model.gmd_forward): ``none``; ``wedge`` or
    ``ctf_wedge``: the render is multiplied in Fourier space by the data's missing wedge (and
    CTF) -- affinity_vae.imaging.forward_transfer with ``physics`` (model.gmd_physics) --
    before the learnable scale/offset and convs.
    """

    transfer: torch.Tensor | None    # a buffer (register_buffer), typed for mypy

    def __init__(self, box: tuple[int, ...], latent_dims: int, pose_dims: int,
                 n_gaussians: int = 256, hidden: int = 256, sigma_min: float = 0.5,
                 sigma_max: float = 3.0, n_convs: int = 0, conv_channels: int = 8,
                 forward: str = "none", physics: dict | None = None):
        super().__init__()
        self.box, self.ndim, self.m = tuple(box), len(box), n_gaussians
        self.pose_dims = pose_dims
        self.mlp = nn.Sequential(nn.Linear(latent_dims, hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, hidden), nn.ReLU(inplace=True))
        self.centroids = nn.Linear(hidden, n_gaussians * self.ndim)
        self.widths = nn.Linear(hidden, n_gaussians)
        self.logits = nn.Linear(hidden, n_gaussians)
        nn.init.constant_(self.logits.bias, 1.0)   # start with every Gaussian switched on
        # Start nearly flat, with the Gaussians spread over the inner box (tanh of the bias
        # uniform in [-0.7, 0.7]) and an output std of ~0.05: a large first render (M unit
        # Gaussians piled up at the centre peak at ~M) has an error whose gradient switches
        # every binary weight off at once, and sigmoid'(logit) ~ 0 keeps them off for good --
        # the decoder then outputs a constant (measured on the default data: MSE 1.0).
        with torch.no_grad():
            self.centroids.bias.uniform_(-0.7, 0.7).atanh_()
            self.centroids.weight.mul_(0.1)
        voxel = gmd.grid_unit(self.box)             # grid units per voxel
        self.sigma_range = (sigma_min * voxel, sigma_max * voxel)
        # M unit Gaussians of width s (voxels) scattered over V voxels: density std ~
        # sqrt(M * pi^(D/2) * s^D / V)
        s_mid = (sigma_min + sigma_max) / 2
        spread = math.prod(0.7 * n for n in box)
        render_std = math.sqrt(n_gaussians * math.pi ** (self.ndim / 2) * s_mid ** self.ndim
                               / spread)
        transfer = forward_transfer(self.box, forward, physics)
        gain = 1.0 if transfer is None else transfer_gain(transfer, self.box, s_mid)
        self.scale = nn.Parameter(torch.tensor(0.05 / (render_std * gain)))
        self.offset = nn.Parameter(torch.tensor(0.0))
        self.forward_model = forward
        self.register_buffer("transfer", None if transfer is None else
                             torch.from_numpy(transfer), persistent=False)
        conv = conv_layers(self.ndim)[0]
        post: list[nn.Module] = []
        c_in = 1
        for i in range(n_convs):
            c_out = 1 if i == n_convs - 1 else conv_channels
            post.append(conv(c_in, c_out, kernel_size=3, padding=1))
            if i < n_convs - 1:
                post.append(nn.ReLU(inplace=True))
            c_in = c_out
        self.post = nn.Sequential(*post)

    def rotation(self, pose: torch.Tensor) -> torch.Tensor | None:
        """Rotation matrices (N, D, D) from the pose, or None without a pose."""
        if self.pose_dims == 0:
            return None
        if self.ndim == 3 and self.pose_dims == 6:   # the rotation pose head's 6D pose
            return sixd_to_matrix(pose)
        if self.ndim == 3:
            return gmd.axis_angle_to_matrix(pose)
        return gmd.angle_to_matrix_2d(pose[:, 0])

    def mixture(self, z: torch.Tensor, pose: torch.Tensor):
        """Centroids (N, M, D) after rotation, widths (N, M), binary weights (N, M)."""
        h = self.mlp(z)
        c = torch.tanh(self.centroids(h)).view(-1, self.m, self.ndim)
        lo, hi = self.sigma_range
        sigma = lo + (hi - lo) * torch.sigmoid(self.widths(h))
        phi = gmd.binary_straight_through(self.logits(h))
        rot = self.rotation(pose)
        if rot is not None:
            c = gmd.rotate(c, rot)
        return c, sigma, phi

    def forward(self, z: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
        c, sigma, phi = self.mixture(z, pose)
        x = gmd.render(c, sigma, phi, self.box).unsqueeze(1)
        if self.transfer is not None:
            x = gmd.apply_transfer(x, self.transfer)
        x = self.scale * x + self.offset
        return self.post(x) if len(self.post) else x
