"""Loss terms of the Affinity-VAE (paper Eq. 1-2): reconstruction, KL and affinity; and the
optional pose-consistency term (rotation equivariance of the pose channel, 2D data)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def reconstruction_loss(x_hat: torch.Tensor, x: torch.Tensor, reduction: str) -> torch.Tensor:
    """MSE; ``mean`` over every voxel, or ``sum`` over the voxels of a box averaged over the
    batch."""
    if reduction == "mean":
        return F.mse_loss(x_hat, x, reduction="mean")
    if reduction == "sum":
        return F.mse_loss(x_hat, x, reduction="sum") / x.shape[0]
    raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)), summed over latent dims, averaged over the batch.

    mu, logvar: (N, L). KL = -0.5 * sum(1 + logvar - mu^2 - exp(logvar)).
    """
    return (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)).mean()


def affinity_loss(mu: torch.Tensor, labels: torch.Tensor, affinity: torch.Tensor
                  ) -> torch.Tensor:
    """S = mean over pairs i != j of |A[f(i), f(j)] - cos(mu_i, mu_j)|.

    mu: (N, L) latent means; labels: (N,) long class indices into ``affinity`` (C, C).
    Returns 0 for a batch of fewer than two samples.
    """
    n = mu.shape[0]
    if n < 2:
        return mu.sum() * 0.0
    u = F.normalize(mu, dim=1, eps=1e-8)
    cos = u @ u.T
    target = affinity[labels][:, labels]
    off = ~torch.eye(n, dtype=torch.bool, device=mu.device)
    return (target - cos).abs()[off].mean()


def pose_consistency_loss(pose: torch.Tensor, pose_rotated: torch.Tensor,
                          angles: torch.Tensor, centre: float = 0.0) -> torch.Tensor:
    """Rotation equivariance of the first pose dimension, plus an optional centring term.

    pose, pose_rotated: (N, P) poses of a batch and of the same batch rotated in-plane by
    ``angles`` (N,) radians. Loss = mean((pose_rotated[:, 0] - pose[:, 0] - angles)^2)
    + centre * mean(pose[:, 0]^2). The first part makes pose[:, 0] move one-for-one with the
    rotation, with the same slope and sense for every class; the centring part puts each
    class's zero at its mean orientation (the only anchor an unlabelled rotation has).
    """
    if pose.shape[1] < 1 or pose.shape != pose_rotated.shape:
        raise ValueError(f"pose and pose_rotated must both be (N, P >= 1), got "
                         f"{tuple(pose.shape)} and {tuple(pose_rotated.shape)}")
    if angles.shape != (pose.shape[0],):
        raise ValueError(f"angles must have shape ({pose.shape[0]},), got {tuple(angles.shape)}")
    equi = (pose_rotated[:, 0] - pose[:, 0] - angles).pow(2).mean()
    return equi + centre * pose[:, 0].pow(2).mean()

