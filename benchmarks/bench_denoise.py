"""Benchmark of stage `denoise` on a synthetic noisy 128^3 tomogram (blobs + noise), 2 threads.

Compares, each in its own process (so peak RSS is its own):
  * untiled       topaz ``Denoise3D.denoise(vol, patch_size=0)``: the whole volume at once;
  * topaz_default topaz ``Denoise3D.denoise(vol, patch_size=96, padding=48)``, its default tiling
                  (takes minutes on CPU; ``--skip-topaz-default`` reuses the last recorded time);
  * ours_p64      this project's exact tiling with 64^3 cores (8 tiles);
  * ours_default  this project's tiling at the default patch_size (128: one tile here).
Relative L2 error is against the untiled output (about its mean). ``--curve`` additionally
measures how plain overlapping-halo tiling converges with the halo (docs/denoise.md).

Run: ``python -m benchmarks denoise`` or ``python -m benchmarks.bench_denoise [flags]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks._common import RESULTS, peak_rss_mb, record

SHAPE = (128, 128, 128)
THREADS = 2
METHODS = ("untiled", "topaz_default", "ours_p64", "ours_default")


def make_volume(shape=SHAPE, seed: int = 0) -> np.ndarray:
    """Particle-sized Gaussian blobs (sigma 3-6 voxels) + white noise at SNR ~0.3, float32."""
    rng = np.random.default_rng(seed)
    clean = np.zeros(shape, np.float32)
    grids = np.ogrid[tuple(slice(0, s) for s in shape)]
    for _ in range(40):
        c, s = [rng.uniform(0, n) for n in shape], rng.uniform(3, 6)
        clean += np.exp(-sum((g - ci) ** 2 for g, ci in zip(grids, c)) / (2 * s * s))
    return (clean / clean.std() + rng.normal(0, 2.0, shape)).astype(np.float32)


def _load(name: str = "unet-3d-10a"):
    import warnings

    warnings.simplefilter("ignore")
    from topaz.denoise import Denoise3D

    return Denoise3D(name, use_cuda=False, dims=3)


def run_method(method: str, src: Path, dst: Path) -> dict:
    """In this (child) process: denoise ``src`` (.npy) with ``method``, save to ``dst``."""
    import torch

    torch.set_num_threads(THREADS)
    vol = np.load(src)
    t0, cpu0 = time.perf_counter(), time.process_time()
    if method in ("untiled", "topaz_default"):
        d3 = _load()
        patch, pad = (0, 0) if method == "untiled" else (96, 48)
        out = d3.denoise(vol, patch_size=patch, padding=pad, verbose=False)
    else:
        from affinity_vae.denoise import denoise_volume, load_model

        patch = 64 if method == "ours_p64" else 128
        out = denoise_volume(vol, load_model("unet-3d-10a"), patch_size=patch, padding=None,
                             progress=False)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    np.save(dst, np.asarray(out, np.float32))
    return {"seconds": seconds, "cpu_seconds": cpu, "peak_rss_mb": peak_rss_mb()}


def _child(method: str, src: Path, dst: Path) -> dict:
    out = subprocess.run([sys.executable, "-m", "benchmarks.bench_denoise", "--child", method,
                          str(src), str(dst)], check=True, capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1])
    return json.loads(out.stdout.strip().splitlines()[-1])


def rel_err(a: np.ndarray, ref: np.ndarray) -> float:
    return float(np.linalg.norm(a - ref) / np.linalg.norm(ref - ref.mean()))


def halo_curve(halos=(0, 16, 32, 48, 64, 80, 96)) -> dict[int, float]:
    """Plain overlapping tiling, the obvious alternative: a 64-voxel core in the middle of a
    64x64x256 volume (x 96..160) run with ``h`` voxels of real neighbouring data on both sides
    along x (global normalisation, 32-aligned), vs the untiled output on that core."""
    import torch

    torch.set_num_threads(THREADS)
    net = _load().model.eval()
    vol = make_volume((64, 64, 256), seed=1)
    x = (vol - vol.mean()) / vol.std()

    def run(a: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return net(torch.from_numpy(np.ascontiguousarray(a))[None, None])[0, 0].numpy()

    ref = run(x)[..., 96:160]
    curve = {}
    for h in halos:
        t0, t1 = max(0, 96 - h), min(256, 160 + h)
        curve[h] = rel_err(run(x[..., t0:t1])[..., 96 - t0:160 - t0], ref)
        print(f"  plain halo {h:3d}: rel. error {curve[h]:.2e}", flush=True)
    return curve


def report(res: dict[str, dict]) -> None:
    """Record the figures of ``res[method] = {cpu_seconds, seconds, rel_error, peak_rss_mb}``.

    The headline time is CPU time (user + system, all threads): on a shared machine wall time
    depends on the other jobs, CPU time only on the work done. Wall time is recorded as well.
    """
    note = f"{'x'.join(map(str, SHAPE))} synthetic tomogram, unet-3d-10a, CPU, {THREADS} threads"
    what = {"untiled": "topaz untiled (patch_size=0), the reference output",
            "topaz_default": "topaz default tiling (patch 96, padding 48)",
            "ours_p64": "this project's exact tiling, 64^3 cores (8 tiles)",
            "ours_default": "this project's tiling at the default patch_size 128 (1 tile here)"}
    base = res["topaz_default"]
    for m, r in res.items():
        if r.get("reused") or r.get("cpu_seconds") is None:
            continue  # a reused record stays as it was (its date and note included)
        ours = m.startswith("ours")
        tgt = ">= 10x less than topaz's default tiling" if ours else None
        record(f"denoise_{m}_cpu_seconds", r["cpu_seconds"], "s", target=tgt,
               baseline=None if m == "topaz_default" else base.get("cpu_seconds"),
               note=f"{note}; {what[m]}; CPU time, baseline = topaz default tiling")
        record(f"denoise_{m}_seconds", r["seconds"], "s", target=tgt,
               baseline=None if m == "topaz_default" else base.get("seconds"),
               note=f"{note}; {what[m]}; wall time (shared machine), baseline = topaz default")
        record(f"denoise_{m}_rel_error", r["rel_error"], "", target="<= 1e-3" if ours else None,
               note=f"{note}; {what[m]}; relative L2 vs untiled")
        record(f"denoise_{m}_peak_rss_mb", r["peak_rss_mb"], "MB",
               baseline=None if m == "untiled" else res["untiled"]["peak_rss_mb"],
               note=f"{note}; {what[m]}; peak RSS of its process, baseline = untiled")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-topaz-default", action="store_true",
                    help="do not rerun topaz's default tiling (minutes); reuse the last record")
    ap.add_argument("--curve", action="store_true", help="also measure plain-halo convergence")
    ap.add_argument("--child", nargs=3, metavar=("METHOD", "SRC", "DST"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(run_method(args.child[0], Path(args.child[1]), Path(args.child[2]))))
        return

    methods = [m for m in METHODS if not (args.skip_topaz_default and m == "topaz_default")]
    res: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "vol.npy"
        np.save(src, make_volume())
        outs = {}
        for m in methods:
            res[m] = _child(m, src, Path(tmp) / f"{m}.npy")
            outs[m] = np.load(Path(tmp) / f"{m}.npy")
            print(f"  {m:14s} {res[m]['seconds']:8.1f} s wall, {res[m]['cpu_seconds']:8.1f} s CPU, "
                  f"peak RSS {res[m]['peak_rss_mb']:7.0f} MB",
                  flush=True)
        for m in methods:
            res[m]["rel_error"] = rel_err(outs[m], outs["untiled"])
            print(f"  {m:14s} rel. error vs untiled {res[m]['rel_error']:.2e}")

    if args.skip_topaz_default:  # reuse the last recorded topaz default figures
        old = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
        res["topaz_default"] = {k: old.get(f"denoise_topaz_default_{k}", {}).get("value")
                                for k in ("cpu_seconds", "seconds", "rel_error", "peak_rss_mb")}
        res["topaz_default"]["reused"] = True
    report(res)
    if args.curve:
        for h, e in halo_curve().items():
            record(f"denoise_plain_halo{h}_rel_error", e, "", target="<= 1e-3",
                   note="plain overlapping tiles: a 64-voxel core cut on both sides along x in a "
                        "64x64x256 volume, vs untiled (halo 96 = the whole volume)")


if __name__ == "__main__":
    main(sys.argv[1:])
