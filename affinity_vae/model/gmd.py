"""Gaussian-mixture rendering (paper section 3.3, Eq. 3-4) without an all-pairs tensor.

An isotropic Gaussian is a product of 1D Gaussians, so the mixture density on a grid,
``rho(z, y, x) = sum_m w_m exp(-|p - c_m|^2 / (2 s_m^2))``, factorises per component into
``Gz[m, z] * Gy[m, y] * Gx[m, x]`` and the sum over m is a batched matrix product. Peak memory is
O(N * M * Z * Y) instead of the O(N * voxels * M * 3) of evaluating every Gaussian at every voxel.

Coordinates: voxel i of an axis of length n sits at ``(i - n // 2) * unit`` with one
``unit = 1 / (max(shape) // 2)`` for every axis (:func:`grid_unit`), so the origin is the box
centre voxel ``n // 2`` -- the centre about which extraction and
affinity_vae.rotation.rotate_volume rotate -- and a rotation of the centroids renders the
rotated volume. The largest axis spans [-1, 1] (odd n) or [-1, 1 - unit] (even n); centroids
are (x, y, z) triples in that frame; volumes come out in (z, y, x) order.
"""

from __future__ import annotations

import torch


def grid_unit(shape: tuple[int, ...]) -> float:
    """Grid units per voxel of a box: ``1 / (max(shape) // 2)`` (one unit for every axis)."""
    return 1.0 / max(1, max(int(s) for s in shape) // 2)


def grid_axis(n: int, unit: float, device=None, dtype=torch.float32) -> torch.Tensor:
    """Voxel-centre coordinates ``(i - n // 2) * unit`` of one axis of length ``n``: (n,)."""
    return (torch.arange(n, device=device, dtype=dtype) - n // 2) * unit


def _axis_factor(coord: torch.Tensor, sigma: torch.Tensor, n: int, unit: float
                 ) -> torch.Tensor:
    """exp(-(g - c)^2 / (2 s^2)) for centroids coord (N, M), widths sigma (N, M) -> (N, M, n)."""
    g = grid_axis(n, unit, coord.device, coord.dtype)
    d = g.view(1, 1, n) - coord.unsqueeze(-1)
    return torch.exp(-0.5 * (d / sigma.unsqueeze(-1)) ** 2)


def render(centroids: torch.Tensor, sigma: torch.Tensor, weights: torch.Tensor,
           shape: tuple[int, ...], unit: float | None = None) -> torch.Tensor:
    """Render a mixture of isotropic Gaussians on a 2D or 3D grid.

    Args:
        centroids: (N, M, 3) as (x, y, z) for 3D, or (N, M, 2) as (x, y) for 2D, in grid
            units (origin at voxel n // 2, see the module docstring).
        sigma: (N, M) widths in the same units (> 0).
        weights: (N, M) amplitudes (e.g. binary phi).
        shape: (Z, Y, X) or (Y, X).
        unit: grid units per voxel; default :func:`grid_unit` of ``shape``.
    Returns:
        (N, Z, Y, X) or (N, Y, X) densities.
    """
    u = grid_unit(shape) if unit is None else float(unit)
    if len(shape) == 3:
        z, y, x = shape
        gx = _axis_factor(centroids[..., 0], sigma, x, u)          # (N, M, X)
        gy = _axis_factor(centroids[..., 1], sigma, y, u)          # (N, M, Y)
        gz = _axis_factor(centroids[..., 2], sigma, z, u) * weights.unsqueeze(-1)  # (N, M, Z)
        n, m = weights.shape
        zy = (gz.unsqueeze(-1) * gy.unsqueeze(-2)).reshape(n, m, z * y)  # (N, M, Z*Y)
        return torch.bmm(zy.transpose(1, 2), gx).view(n, z, y, x)
    if len(shape) == 2:
        y, x = shape
        gx = _axis_factor(centroids[..., 0], sigma, x, u)
        gy = _axis_factor(centroids[..., 1], sigma, y, u) * weights.unsqueeze(-1)
        return torch.bmm(gy.transpose(1, 2), gx)
    raise ValueError(f"shape must be (Z, Y, X) or (Y, X), got {shape}")


def render_all_pairs(centroids: torch.Tensor, sigma: torch.Tensor, weights: torch.Tensor,
                     shape: tuple[int, ...], unit: float | None = None) -> torch.Tensor:
    """Reference renderer: every Gaussian at every voxel, (N, voxels, M, D) in memory.

    Same arguments and result as :func:`render`; used by tests and benchmarks only.
    """
    u = grid_unit(shape) if unit is None else float(unit)
    axes = [grid_axis(n, u, centroids.device, centroids.dtype) for n in shape]
    mesh = torch.meshgrid(*axes, indexing="ij")              # (z, y, x) or (y, x)
    pts = torch.stack(list(reversed(mesh)), dim=-1).reshape(-1, len(shape))  # (V, D) as (x, y[, z])
    diff = pts.view(1, -1, 1, len(shape)) - centroids.unsqueeze(1)          # (N, V, M, D)
    d2 = (diff ** 2).sum(-1)
    dens = (weights.unsqueeze(1) * torch.exp(-0.5 * d2 / sigma.unsqueeze(1) ** 2)).sum(-1)
    return dens.view(centroids.shape[0], *shape)


class _BinaryST(torch.autograd.Function):
    """Forward: 1 where logits > 0 else 0 (exactly); backward: d sigmoid(logits) / d logits."""

    @staticmethod
    def forward(ctx, logits):
        ctx.save_for_backward(logits)
        return (logits > 0).to(logits.dtype)

    @staticmethod
    def backward(ctx, grad):
        (logits,) = ctx.saved_tensors
        s = torch.sigmoid(logits)
        return grad * s * (1 - s)


def binary_straight_through(logits: torch.Tensor) -> torch.Tensor:
    """Binary weights phi in {0, 1} (forward: sigmoid(logits) > 0.5) with the straight-through
    estimator: the backward pass uses the gradient of sigmoid(logits). Shape preserved."""
    return _BinaryST.apply(logits)


def axis_angle_to_quaternion(pose: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Pose (N, 4) = (theta, e_x, e_y, e_z), theta in radians, e any non-zero axis, -> unit
    quaternion (N, 4) = (w, x, y, z) = (cos(theta/2), sin(theta/2) * e / |e|)."""
    theta = pose[:, 0]
    axis = pose[:, 1:4]
    axis = axis / axis.norm(dim=1, keepdim=True).clamp_min(eps)
    half = 0.5 * theta
    return torch.cat([torch.cos(half).unsqueeze(1), torch.sin(half).unsqueeze(1) * axis], dim=1)


def quaternion_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """Unit quaternion (N, 4) as (w, x, y, z) -> rotation matrix (N, 3, 3) (paper Eq. 3)."""
    q = q / q.norm(dim=1, keepdim=True)
    w, x, y, z = q.unbind(1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
        2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
        2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
    ], dim=1).view(-1, 3, 3)


def axis_angle_to_matrix(pose: torch.Tensor) -> torch.Tensor:
    """Pose (N, 4) = (theta, axis) -> rotation matrix (N, 3, 3) acting on (x, y, z) columns."""
    return quaternion_to_matrix(axis_angle_to_quaternion(pose))


def angle_to_matrix_2d(theta: torch.Tensor) -> torch.Tensor:
    """Angle (N,) or (N, 1) in radians -> rotation about z (N, 2, 2) acting on (x, y) columns."""
    theta = theta.reshape(-1)
    c, s = torch.cos(theta), torch.sin(theta)
    return torch.stack([c, -s, s, c], dim=1).view(-1, 2, 2)


def rotate(centroids: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
    """Apply rotation matrices rot (N, D, D) to centroids (N, M, D): c' = R c."""
    return centroids @ rot.transpose(1, 2)


# --- physics forward model (the transfer itself: affinity_vae.imaging.forward_transfer) ---------

def apply_transfer(x: torch.Tensor, transfer: torch.Tensor) -> torch.Tensor:
    """Multiply volumes x (..., Z, Y, X) by a transfer function (Z, Y, X // 2 + 1) in Fourier
    space (rfftn layout); differentiable, same shape and dtype."""
    spec = torch.fft.rfftn(x, dim=(-3, -2, -1)) * transfer
    return torch.fft.irfftn(spec, s=x.shape[-3:], dim=(-3, -2, -1)).to(x.dtype)
