"""A 3D pose channel that is a rotation: a near-equivariant branch of the encoder.

The branch is a small CNN whose last layer gives three maps w_k on a coarse grid; each map turns
into a vector ``v_k = sum_p w_k(p) (p - c)`` of the grid positions p measured from the box
centre voxel c (``n // 2``, affinity_vae.rotation's convention). Rotating the input moves the
maps with it, so the three vectors - the columns of V (3 x 3) - turn with the particle; the pose
is the rotation of V's first two columns by Gram-Schmidt (for a V near a scaled rotation, the
same as the nearest rotation by SVD, :func:`project_to_so3`, but with stable gradients).
Before the CNN the box is low-pass
filtered (a fixed Gaussian) and multiplied by a soft spherical mask, so a rotated box and an
unrotated one look alike at the corners and noise does not drown the orientation signal.

The pose travels through the model as the continuous 6D representation of Zhou et al. (2019):
the first two columns of R, (N, 6) = (r11, r21, r31, r12, r22, r32); :func:`sixd_to_matrix`
turns any 6-vector back into a rotation by Gram-Schmidt. Matrices act on (x, y, z) columns.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn


def project_to_so3(v: torch.Tensor) -> torch.Tensor:
    """Nearest rotation (Frobenius) to each matrix of v (N, 3, 3), by SVD with the sign fixed so
    that det = +1. Returns (N, 3, 3)."""
    u, _, vh = torch.linalg.svd(v)
    d = torch.det(u @ vh)
    fix = torch.ones_like(v[:, 0])
    fix[:, 2] = d
    return (u * fix.unsqueeze(1)) @ vh


def matrix_to_sixd(rot: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (N, 3, 3) -> 6D representation (N, 6): the first two columns."""
    return rot[:, :, :2].transpose(1, 2).reshape(-1, 6)


def sixd_to_matrix(six: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """6D representation (N, 6) -> rotation matrices (N, 3, 3) by Gram-Schmidt (Zhou et al.)."""
    a, b = six[:, :3], six[:, 3:6]
    c1 = F.normalize(a, dim=1, eps=eps)
    c2 = F.normalize(b - (c1 * b).sum(1, keepdim=True) * c1, dim=1, eps=eps)
    c3 = torch.cross(c1, c2, dim=1)
    return torch.stack([c1, c2, c3], dim=2)


def gaussian_transfer(box: tuple[int, ...], sigma: float) -> torch.Tensor | None:
    """Fourier transfer function (D, H, W // 2 + 1) of a Gaussian blur of ``sigma`` voxels on
    the rfftn grid, or None for sigma 0: exp(-2 pi^2 sigma^2 |k|^2), k in cycles/voxel."""
    if sigma <= 0:
        return None
    kz = torch.fft.fftfreq(box[0]).view(-1, 1, 1)
    ky = torch.fft.fftfreq(box[1]).view(1, -1, 1)
    kx = torch.fft.rfftfreq(box[2]).view(1, 1, -1)
    return torch.exp(-2 * math.pi ** 2 * sigma ** 2 * (kz ** 2 + ky ** 2 + kx ** 2))


def soft_sphere(box: tuple[int, ...], margin: float = 2.0, edge: float = 2.0
                ) -> torch.Tensor:
    """A soft spherical mask (D, H, W) about voxel n // 2: 1 inside radius min(n)/2 - margin -
    edge, a cosine edge of ``edge`` voxels, 0 beyond."""
    axes = [torch.arange(n, dtype=torch.float32) - n // 2 for n in box]
    z, y, x = torch.meshgrid(*axes, indexing="ij")
    r = torch.sqrt(x * x + y * y + z * z)
    r1 = min(box) / 2 - margin
    r0 = r1 - edge
    t = ((r - r0) / edge).clamp(0, 1)
    return 0.5 * (1 + torch.cos(math.pi * t))


class RotationBranch(nn.Module):
    """Input (N, 1, D, H, W) -> V (N, 3, 3), columns = three vectors that turn with the input.

    Layers: fixed low-pass (Gaussian, ``lowpass_sigma`` voxels; 0 = none) and soft spherical
    mask, then conv 3^3 (1 -> c, stride 2), conv (c -> 2c, stride 2), conv (2c -> 2c),
    conv (2c -> 2c, dilation 2), each with batch-norm and ReLU, and a 1x1x1 conv to 3 maps on
    the grid of 1/4 the box. Box sides must be divisible by 4.
    """

    mask: torch.Tensor               # buffers (register_buffer), typed for mypy
    transfer: torch.Tensor | None

    def __init__(self, box: tuple[int, ...], channels: int, lowpass_sigma: float):
        super().__init__()
        if len(box) != 3 or any(s % 4 for s in box):
            raise ValueError(f"the rotation pose head needs a 3D box with sides divisible by 4, "
                             f"got {box}")
        c = channels
        self.net = nn.Sequential(
            nn.Conv3d(1, c, 3, stride=2, padding=1), nn.BatchNorm3d(c), nn.ReLU(inplace=True),
            nn.Conv3d(c, 2 * c, 3, stride=2, padding=1), nn.BatchNorm3d(2 * c),
            nn.ReLU(inplace=True),
            nn.Conv3d(2 * c, 2 * c, 3, padding=1), nn.BatchNorm3d(2 * c), nn.ReLU(inplace=True),
            nn.Conv3d(2 * c, 2 * c, 3, padding=2, dilation=2), nn.BatchNorm3d(2 * c),
            nn.ReLU(inplace=True),
            nn.Conv3d(2 * c, 3, 1))
        self.register_buffer("mask", soft_sphere(tuple(box))[None, None], persistent=False)
        self.register_buffer("transfer", gaussian_transfer(tuple(box), lowpass_sigma),
                             persistent=False)
        # grid positions (x, y, z) of the output cells in input voxels, from the centre n // 2;
        # output cell i of two stride-2 convs (kernel 3, padding 1) is centred on input 4 i
        grids = [torch.arange(s // 4, dtype=torch.float32) * 4 - s // 2 for s in box]
        z, y, x = torch.meshgrid(*grids, indexing="ij")
        pos = torch.stack([x, y, z], dim=-1).reshape(-1, 3) / (min(box) / 2)
        self.register_buffer("positions", pos, persistent=False)     # (G, 3), unit ~ box radius

    def lowpass(self, x: torch.Tensor) -> torch.Tensor:
        """Gaussian blur of (N, 1, D, H, W) in Fourier space (periodic; the mask that follows
        removes the box edges anyway)."""
        if self.transfer is None:
            return x
        spec = torch.fft.rfftn(x, dim=(-3, -2, -1)) * self.transfer
        return torch.fft.irfftn(spec, s=x.shape[-3:], dim=(-3, -2, -1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.lowpass(x) * self.mask
        w = self.net(h).flatten(2)                        # (N, 3, G)
        return (w @ self.positions).transpose(1, 2)       # (N, 3, 3): column k = v_k


def rotation_consistency_loss(v1: torch.Tensor, v2: torch.Tensor, g: torch.Tensor,
                              orthogonality: float = 0.1) -> torch.Tensor:
    """Equivariance of the branch output under a known rotation.

    v1, v2: (N, 3, 3) branch outputs of a box and of the same box rotated by g (N, 3, 3).
    Loss = mean_i |v2_i - g_i v1_i|^2 / mean_i (|v1_i|^2 + |v2_i|^2) / 2 (scale-free over the
    batch, not per box: an exactly equivariant output must vanish on a box with a point-group
    symmetry other than an axis, so such boxes may answer with a small V while asymmetric ones
    answer with a large one) + ``orthogonality`` times the deviation of each V from a scaled
    rotation (|V^T V / s - I|^2 with s = |V|^2 / 3).
    """
    scale = 0.5 * (v1.pow(2).sum((1, 2)) + v2.pow(2).sum((1, 2))).mean().clamp_min(1e-8)
    equi = (v2 - g @ v1).pow(2).sum((1, 2)).mean() / scale
    eye = torch.eye(3, dtype=v1.dtype, device=v1.device)
    orth = v1.new_zeros(())
    for v in (v1, v2):
        s = (v.pow(2).sum((1, 2)) / 3).clamp_min(1e-8).view(-1, 1, 1)
        orth = orth + ((v.transpose(1, 2) @ v) / s - eye).pow(2).sum((1, 2)).mean()
    return equi + orthogonality * orth / 2


@functools.lru_cache(maxsize=8)
def _moment_basis(shape: tuple[int, int, int], dtype: torch.dtype, device: torch.device
                  ) -> torch.Tensor:
    """Products of the voxel positions p - c (c = n // 2, (x, y, z) order) of a box ``shape``
    (D, H, W): (V, 9 + 27) = [p_i p_j (i, j), p_i p_j p_k (i, j, k)], V = D H W; cached, so a
    batch's second and third moments are one matmul. Built outside inference mode, so a
    tensor cached during inference can still be saved for a backward pass later."""
    with torch.inference_mode(False):
        return _products(shape, dtype, device)


def _products(shape: tuple[int, int, int], dtype: torch.dtype, device: torch.device
              ) -> torch.Tensor:
    axes = [torch.arange(s, dtype=dtype, device=device) - s // 2 for s in shape]
    z, y, xx = torch.meshgrid(*axes, indexing="ij")
    p = torch.stack([xx, y, z], dim=-1).reshape(-1, 3)                 # (V, 3) in (x, y, z)
    pp = (p[:, :, None] * p[:, None, :]).reshape(-1, 9)
    ppp = (pp[:, :, None] * p[:, None, :]).reshape(-1, 27)
    return torch.cat([pp, ppp], 1)


def moment_frame(x: torch.Tensor, mask: torch.Tensor, transfer: torch.Tensor | None,
                 eps: float = 1e-6) -> torch.Tensor:
    """Principal-axes frame of each box: a rotation (N, 3, 3) that turns with the particle.

    The box x (N, 1, D, H, W) is low-pass filtered (``transfer``, rfftn grid, or None) and
    masked (``mask``, (1, 1, D, H, W)); with weights w = h^2 (sign-free: reconstructions show
    protein dark, ground truth bright) the second-moment tensor T = sum w (p - c)(p - c)^T about
    the centre voxel c = n // 2 gives the axes (eigenvectors, largest moment first) and the sign
    of the third moment sum w ((p - c) . e)^3 along each axis fixes its direction; the third
    axis is the cross product (det +1). Exactly equivariant for an asymmetric object with
    distinct moments, up to resampling; no learned parameters. Columns act on (x, y, z).
    """
    h = x
    if transfer is not None:
        h = torch.fft.irfftn(torch.fft.rfftn(x, dim=(-3, -2, -1)) * transfer, s=x.shape[-3:],
                             dim=(-3, -2, -1))
    w = (h * mask).pow(2).flatten(1)                                   # (N, V)
    w = w / w.sum(1, keepdim=True).clamp_min(eps)
    # both moment tensors in one matmul: T_ij = sum w p_i p_j, M_ijk = sum w p_i p_j p_k
    m = w @ _moment_basis(tuple(x.shape[-3:]), x.dtype, x.device)     # (N, 9 + 27)
    t, m3 = m[:, :9].reshape(-1, 3, 3), m[:, 9:].reshape(-1, 3, 3, 3)
    _, vecs = torch.linalg.eigh(t)                                     # ascending
    e = vecs.flip(-1)                                                  # largest moment first
    third = torch.einsum("nabc,nak,nbk,nck->nk", m3, e, e, e)          # sum w ((p - c) . e_k)^3
    sign = torch.where(third < 0, -1.0, 1.0).to(x.dtype)
    e1, e2 = e[:, :, 0] * sign[:, :1], e[:, :, 1] * sign[:, 1:2]
    return torch.stack([e1, e2, torch.cross(e1, e2, dim=1)], dim=2)
