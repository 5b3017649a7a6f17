"""One measurement each, run in a fresh process by the scaling and GPU benchmarks:

    python -m benchmarks._cases <kind> '<json params>'   ->  prints one JSON object

so that a case's peak resident memory (VmHWM) is its own. Kinds: extract, denoise, train, gmd,
affinity. Every case takes ``repeat`` and reports the MEDIAN wall time of the repeats
(``benchmarks._common.timed``); the threads are set by the caller (the pipeline profile's
per-rule threads for the CPU tables).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._common import REPO, peak_rss_mb, timed

SHARED = REPO.parent / "shared" / "data" / "shrec2021-structures"


def _threads(n: int) -> None:
    import torch

    torch.set_num_threads(max(1, int(n)))


def extract(size: int, particles: int, box: int = 32, repeat: int = 1) -> dict[str, Any]:
    """``extract_tomogram`` end to end on a ``size``^3 float32 memory-mapped noise tomogram with
    ``particles`` random positions (warm page cache: one untimed call first)."""
    from affinity_vae.config import schema_defaults
    from affinity_vae.extract import Settings, extract_tomogram
    from benchmarks.bench_extract import make_dataset

    with tempfile.TemporaryDirectory(prefix="bench_scaling_extract_") as tmp:
        d = Path(tmp)
        tomo, locs = make_dataset(d, size=size, n_boxes=particles, box=box)
        base = peak_rss_mb()
        s = Settings.from_config(schema_defaults("extract", {"box_size": box,
                                                             "exclude_classes": []}))

        def run() -> int:
            return len(extract_tomogram(tomo, locs, d / "out.mrcs", d / "out.star", "model_0",
                                        s, 10.0, ["1bxn", "1qvr", "3cf3", "5mrc"], "train"))

        run()
        seconds, n = timed(run, repeat)
    return {"seconds": seconds, "peak_rss_mb": peak_rss_mb(), "base_rss_mb": base, "n": n}


def denoise(size: int, patch: int, threads: int = 2, repeat: int = 1, device: str = "cpu",
            model: str = "unet-3d-10a") -> dict[str, Any]:
    """``denoise_volume`` (this project's exact tiling, ``patch`` cores) on a ``size``^3 float32
    noise volume; the run time does not depend on the content."""
    from affinity_vae.config import schema_defaults
    from affinity_vae.denoise import denoise_volume, load_model

    _threads(threads)
    vol = np.random.default_rng(0).standard_normal((size,) * 3, dtype=np.float32)
    net = load_model(model, device=device)
    base = peak_rss_mb()
    padding = schema_defaults("denoise")["padding"]   # the stage's default (exact halo)
    seconds, _ = timed(lambda: denoise_volume(vol, net, patch_size=patch, padding=padding,
                                              device=device,
                                              progress=False), repeat)
    return {"seconds": seconds, "peak_rss_mb": peak_rss_mb(), "base_rss_mb": base,
            **_gpu_peak(device)}


def train(decoder: str, box: int, batch: int, steps: int = 5, threads: int = 1,
          repeat: int = 1, device: str = "cpu", amp: str = "fp32") -> dict[str, Any]:
    """Training samples/s of the default architecture (config ``model`` defaults; GMD with
    pose_dims 4): ``steps`` optimiser steps of ``batch`` random ``box``^3 samples (forward,
    backward, Adam, rot90 augmentation) per timed epoch, after one untimed warm-up epoch.
    ``amp``: fp32 or bf16 (``torch.autocast``)."""
    import contextlib

    import torch

    from affinity_vae.config import schema_defaults
    from affinity_vae.data import TrainingData
    from affinity_vae.model.vae import AffinityVAE
    from affinity_vae.train import _make_optimizer, run_epoch

    _threads(threads)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    classes = 10
    aff = torch.rand(classes, classes, generator=g)
    aff = (aff + aff.T) / 2
    aff.fill_diagonal_(1.0)
    n = batch * steps
    data = TrainingData(torch.randn(n, 1, box, box, box, generator=g),
                        torch.randint(classes, (n,), generator=g),
                        torch.empty(0, 1, box, box, box), torch.empty(0, dtype=torch.long),
                        [str(i) for i in range(classes)], aff)
    model_cfg = schema_defaults("model", {"decoder": decoder,
                                          **({"pose_dims": 4} if decoder == "gmd" else {})})
    cfg = schema_defaults("train", {"batch_size": batch})
    dev = torch.device(device)
    model = AffinityVAE(model_cfg, data.box).to(dev)
    opt = _make_optimizer(model, cfg)

    def epoch() -> None:
        ctx = (torch.autocast(dev.type, dtype=torch.bfloat16) if amp == "bf16"
               else contextlib.nullcontext())
        with ctx:
            run_epoch(model, opt, data, cfg, 1e-3, 1.0, g, dev)
        if dev.type == "cuda":
            torch.cuda.synchronize()

    epoch()
    seconds, _ = timed(epoch, repeat)
    return {"samples_per_s": n / seconds, "seconds": seconds, "n": n,
            "peak_rss_mb": peak_rss_mb(), **_gpu_peak(device)}


def gmd(m: int, grid: int, batch: int = 8, threads: int = 1, repeat: int = 1,
        device: str = "cpu") -> dict[str, Any]:
    """The separable GMD renderer (``affinity_vae.model.gmd.render``), forward + backward,
    ``batch`` x ``m`` Gaussians on a ``grid``^3 grid."""
    import torch

    from affinity_vae.model import gmd as gmd_mod

    _threads(threads)
    g = torch.Generator().manual_seed(0)
    dev = torch.device(device)
    c = (torch.rand(batch, m, 3, generator=g) * 1.6 - 0.8).to(dev).requires_grad_()
    s = (torch.rand(batch, m, generator=g) * 0.1 + 0.03).to(dev).requires_grad_()
    w = torch.rand(batch, m, generator=g).to(dev).requires_grad_()
    base = peak_rss_mb()

    def run() -> None:
        gmd_mod.render(c, s, w, (grid,) * 3).square().mean().backward()
        if dev.type == "cuda":
            torch.cuda.synchronize()

    run()
    seconds, _ = timed(run, repeat)
    return {"seconds": seconds, "peak_rss_mb": peak_rss_mb(), "base_rss_mb": base,
            **_gpu_peak(device)}


def affinity(method: str, n_classes: int, threads: int = 2, repeat: int = 1) -> dict[str, Any]:
    """``compute_affinity`` (default config of the stage) on the first ``n_classes`` SHREC 2021
    classes (sorted names; PDB where there is one, else the 10 A map)."""
    from affinity_vae.affinity import compute_affinity, from_paths
    from affinity_vae.config import schema_defaults

    maps = {p.stem: p for p in sorted((SHARED / "maps_10A").glob("*.mrc"))}
    pdbs = {p.stem: p for p in sorted((SHARED / "pdb").glob("*.pdb"))}
    names = sorted(set(maps) | set(pdbs))[:n_classes]
    classes = from_paths({k: pdbs[k] for k in names if k in pdbs},
                         {k: maps[k] for k in names if k in maps})
    cfg = schema_defaults("affinity")
    seconds, _ = timed(lambda: compute_affinity(classes, method, cfg, threads=threads), repeat)
    return {"seconds": seconds, "peak_rss_mb": peak_rss_mb(), "n": len(names)}


def _gpu_peak(device: str) -> dict[str, float]:
    if not str(device).startswith("cuda"):
        return {}
    import torch

    return {"gpu_peak_mb": torch.cuda.max_memory_allocated() / 2**20}


KINDS = {"extract": extract, "denoise": denoise, "train": train, "gmd": gmd,
         "affinity": affinity}


if __name__ == "__main__":
    print(json.dumps(KINDS[sys.argv[1]](**json.loads(sys.argv[2]))))
