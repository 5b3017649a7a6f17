"""Training throughput (samples/s, forward + backward + Adam step + rot90 augmentation) of
 - the reference-size CNN-aVAE (channels 3 * 2^i, depth 4, latent 8, pose 3, batch 25, 32^3),
   against the reference implementation's ~11 samples/s on a 2-core CPU;
 - the default architecture and batch size (config model/train defaults), CNN and GMD decoders.
Synthetic data: 200 random 32^3 boxes in 10 classes (speed does not depend on the content).
"""

from __future__ import annotations

import os
import sys
import time

import torch

REFERENCE_SAMPLES_PER_S = 11.0
N, CLASSES, BOX = 200, 10, 32


def rate(model_cfg: dict, train_cfg: dict, threads: int, epochs: int = 1) -> tuple[float, float]:
    """Best samples/s over ``epochs`` timed epochs after one warm-up epoch: by wall time, and
    by this process's CPU time divided by the threads (what an otherwise idle machine gives;
    differs from the wall figure when other processes share the cores)."""
    from affinity_vae.config import schema_defaults
    from affinity_vae.data import TrainingData
    from affinity_vae.model.vae import AffinityVAE
    from affinity_vae.train import _make_optimizer, run_epoch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    aff = torch.rand(CLASSES, CLASSES, generator=g)
    aff = (aff + aff.T) / 2
    aff.fill_diagonal_(1.0)
    data = TrainingData(torch.randn(N, 1, BOX, BOX, BOX, generator=g),
                        torch.randint(CLASSES, (N,), generator=g), torch.empty(0, 1, BOX, BOX, BOX),
                        torch.empty(0, dtype=torch.long), [str(i) for i in range(CLASSES)], aff)
    cfg = schema_defaults("train", train_cfg)
    model = AffinityVAE(schema_defaults("model", model_cfg), data.box)
    opt = _make_optimizer(model, cfg)
    best, best_cpu = float("inf"), float("inf")
    for i in range(epochs + 1):
        t0, c0 = time.perf_counter(), time.process_time()
        run_epoch(model, opt, data, cfg, 1e-3, 1.0, g, torch.device("cpu"))
        if i:
            best = min(best, time.perf_counter() - t0)
            best_cpu = min(best_cpu, (time.process_time() - c0) / threads)
    return N / best, N / best_cpu


def main() -> None:
    from affinity_vae.config import schema_defaults
    from benchmarks._common import record

    ref_cfg = {"decoder": "cnn", "channels": 3, "depth": 4, "latent_dims": 8, "pose_dims": 3,
               "batch_norm": True}
    for threads in (1, 2):
        r, r_cpu = rate(ref_cfg, {"batch_size": 25}, threads)
        load = os.getloadavg()[0]
        record(f"train_reference_size_cnn_samples_per_s_{threads}thr", r, "samples/s",
               target=f">= {5 * REFERENCE_SAMPLES_PER_S:.0f} (5x the reference's "
                      f"~{REFERENCE_SAMPLES_PER_S:.0f}/s on 2 cores)",
               note=f"channels 3*2^i, depth 4, latent 8, pose 3, batch 25, 32^3, rot90 "
                    f"augmentation, {threads} thread(s); wall-clock rate at load average "
                    f"{load:.1f}; by CPU time {r_cpu:.0f} samples/s; speedup vs reference "
                    f"{r / REFERENCE_SAMPLES_PER_S:.1f}x (wall), "
                    f"{r_cpu / REFERENCE_SAMPLES_PER_S:.1f}x (CPU time)")
        record(f"train_reference_size_cnn_ms_per_sample_{threads}thr", 1000 / r, "ms/sample",
               baseline=1000 / REFERENCE_SAMPLES_PER_S, target="ratio >= 5",
               note="ratio = speedup over the reference implementation")
    bs = schema_defaults("train")["batch_size"]
    for decoder in ("cnn", "gmd"):
        cfg = schema_defaults("model", {"decoder": decoder})
        if decoder == "gmd":
            cfg["pose_dims"] = 4
        for threads in (1, 2):
            r, r_cpu = rate(cfg, {"batch_size": bs}, threads)
            load = os.getloadavg()[0]
            record(f"train_default_{decoder}_samples_per_s_{threads}thr", r, "samples/s",
                   note=f"default architecture ({decoder} decoder, channels "
                        f"{cfg['channels']}*2^i, depth {cfg['depth']}, latent "
                        f"{cfg['latent_dims']}, pose {cfg['pose_dims']}"
                        + (f", {cfg['n_gaussians']} Gaussians" if decoder == "gmd" else "")
                        + f"), batch {bs}, 32^3, {threads} thread(s); wall-clock rate at load "
                     f"average {load:.1f}; by CPU time {r_cpu:.0f} samples/s")


if __name__ == "__main__":
    sys.exit(main())
