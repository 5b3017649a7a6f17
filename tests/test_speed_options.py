"""Facts about the speed work of issue 16: the faster code paths give the old results to float
rounding, and the GPU options (train.amp, train.compile) run on CPU with finite losses."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from affinity_vae.config import schema_defaults
from affinity_vae.data import TrainingData, impose_wedge
from affinity_vae.model.pose_head import gaussian_transfer, moment_frame, soft_sphere
from affinity_vae.model.vae import AffinityVAE
from affinity_vae.train import _make_optimizer, amp_dtype, fit, run_epoch
from affinity_vae.wedge import wedge_mask

BOX = 16


def _moment_frame_direct(x, mask, transfer, eps=1e-6):
    """The previous moment_frame: moments summed voxel by voxel (float32)."""
    h = torch.fft.irfftn(torch.fft.rfftn(x, dim=(-3, -2, -1)) * transfer, s=x.shape[-3:],
                         dim=(-3, -2, -1))
    w = (h * mask).pow(2).flatten(1)
    axes = [torch.arange(s, dtype=x.dtype) - s // 2 for s in x.shape[-3:]]
    z, y, xx = torch.meshgrid(*axes, indexing="ij")
    p = torch.stack([xx, y, z], dim=-1).reshape(-1, 3)
    w = w / w.sum(1, keepdim=True).clamp_min(eps)
    _, vecs = torch.linalg.eigh(torch.einsum("nv,vi,vj->nij", w, p, p))
    e = vecs.flip(-1)
    third = torch.einsum("nv,nvk->nk", w, (p @ e).pow(3))
    sign = torch.where(third < 0, -1.0, 1.0)
    e1, e2 = e[:, :, 0] * sign[:, :1], e[:, :, 1] * sign[:, 1:2]
    return torch.stack([e1, e2, torch.cross(e1, e2, dim=1)], dim=2)


def _blobs(n: int, box: tuple[int, int, int], seed: int = 0) -> torch.Tensor:
    """n boxes (n, 1, *box) of three anisotropic Gaussian blobs each (distinct moments)."""
    g = torch.Generator().manual_seed(seed)
    grids = torch.meshgrid(*[torch.arange(s, dtype=torch.float32) - s // 2 for s in box],
                           indexing="ij")
    out = torch.zeros(n, 1, *box)
    for i in range(n):
        for _ in range(3):
            c = (torch.rand(3, generator=g) - 0.5) * 8
            s = 1 + 2 * torch.rand(3, generator=g)
            out[i, 0] += torch.exp(-sum((gr - ci) ** 2 / (2 * si ** 2)
                                        for gr, ci, si in zip(grids, c, s)))
    return out + 0.05 * torch.randn(out.shape, generator=g)


def test_moment_frame_matches_the_voxel_sum():
    """One matmul against cached position products gives the voxel-by-voxel frame."""
    box = (BOX, BOX + 4, BOX)
    x = _blobs(24, box)
    mask, tr = soft_sphere(box)[None, None], gaussian_transfer(box, 1.5)
    got, ref = moment_frame(x, mask, tr), _moment_frame_direct(x, mask, tr)
    assert torch.allclose(got, ref, atol=1e-4)
    assert torch.allclose(got.transpose(1, 2) @ got, torch.eye(3).expand(24, 3, 3), atol=1e-5)


def test_moment_frame_cached_in_inference_mode_still_backpropagates():
    box = (12, 12, 12)
    mask, tr = soft_sphere(box)[None, None], gaussian_transfer(box, 1.0)
    with torch.inference_mode():
        moment_frame(_blobs(2, box), mask, tr)      # fills the cache inside inference mode
    x = _blobs(2, box, seed=1).requires_grad_()
    moment_frame(x, mask, tr)[:, :, 0].sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("box, tilts", [((16, 16, 16), (-60, 60)), ((12, 16, 10), (-45, 58)),
                                        ((15, 13, 17), (-50, 60))])
def test_impose_wedge_on_the_half_grid_equals_the_full_grid(box, tilts):
    """The missing wedge is centrosymmetric, so rfftn on half the grid gives the same volumes."""
    w = torch.from_numpy(wedge_mask(box, tilts))
    x = torch.randn(3, 1, *box, generator=torch.Generator().manual_seed(0))
    full = torch.fft.ifftn(torch.fft.fftn(x, dim=(-3, -2, -1)) * w, dim=(-3, -2, -1)).real
    got = impose_wedge(x, w)
    assert got.shape == x.shape and got.dtype == x.dtype
    assert torch.allclose(got, full, atol=1e-5)


def test_amp_dtype_cuda_only(caplog):
    assert amp_dtype("none", torch.device("cuda")) is None
    assert amp_dtype("bf16", torch.device("cuda")) is torch.bfloat16
    assert amp_dtype("fp16", torch.device("cuda")) is torch.float16
    with caplog.at_level(logging.INFO, logger="affinity_vae.train"):
        assert amp_dtype("bf16", torch.device("cpu")) is None
    assert sum("ignored on cpu" in r.getMessage() for r in caplog.records) == 1


def _tiny(n: int = 24, classes: int = 3) -> TrainingData:
    g = torch.Generator().manual_seed(0)
    aff = torch.tensor([[1.0, 0.2, 0.5], [0.2, 1.0, 0.1], [0.5, 0.1, 1.0]])[:classes, :classes]
    return TrainingData(torch.randn(n, 1, BOX, BOX, BOX, generator=g),
                        torch.arange(n) % classes, torch.randn(6, 1, BOX, BOX, BOX, generator=g),
                        torch.arange(6) % classes, [f"c{i}" for i in range(classes)], aff)


MODEL = {"channels": 4, "depth": 2, "latent_dims": 4, "pose_head": "moments"}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_run_epoch_under_autocast_gives_finite_losses(dtype):
    """The autocast path of run_epoch (CUDA's, exercised on CPU) steps and stays finite."""
    data = _tiny()
    cfg = schema_defaults("train", {"batch_size": 8})
    torch.manual_seed(0)
    model = AffinityVAE(schema_defaults("model", MODEL), data.box)
    opt = _make_optimizer(model, cfg)
    before = [p.detach().clone() for p in model.parameters()]
    scaler = torch.amp.GradScaler("cpu") if dtype == torch.float16 else None
    out = run_epoch(model, opt, data, cfg, 1e-3, 1.0, torch.Generator().manual_seed(0),
                    torch.device("cpu"), amp=dtype, scaler=scaler)
    assert all(np.isfinite(v) for v in out.values())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_fit_with_amp_on_cpu_is_the_float32_run():
    """train.amp is ignored on CPU: the same weights as amp none."""
    data = _tiny()
    runs = []
    for amp in ("none", "bf16"):
        model, hist = fit(data, schema_defaults("model", MODEL),
                          schema_defaults("train", {"epochs": 2, "batch_size": 8, "amp": amp}),
                          seed=0, progress=False)
        assert np.isfinite(hist["train_total"]).all()
        runs.append(model.state_dict())
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


@pytest.mark.slow
def test_fit_compiled_matches_eager():
    """train.compile (torch.compile, ~1 min on CPU) trains like eager mode and leaves the
    returned model uncompiled. Adam turns rounding-size gradient differences into steps of up
    to the learning rate (0.003), so after 3 steps the weights agree to ~1e-2, not 1e-5."""
    data = _tiny()
    out = {}
    for compiled in (False, True):
        model, hist = fit(data, schema_defaults("model", MODEL),
                          schema_defaults("train", {"epochs": 1, "batch_size": 8,
                                                    "compile": compiled}),
                          seed=0, progress=False)
        assert np.isfinite(hist["train_total"]).all()
        out[compiled] = (model, hist)
    (m0, h0), (m1, h1) = out[False], out[True]
    assert type(m1) is AffinityVAE and list(m1.state_dict()) == list(m0.state_dict())
    for k, v in m0.state_dict().items():
        assert torch.allclose(v.float(), m1.state_dict()[k].float(), atol=2e-2), k
    assert h1["train_total"].iloc[0] == pytest.approx(h0["train_total"].iloc[0], rel=1e-2)
