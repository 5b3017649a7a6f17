"""GMD renderer: separable (per-axis factors + batched matmul) vs all-pairs (every Gaussian at
every voxel), forward + backward, batch 8, M = 128 / 1024 Gaussians, 32^3 / 64^3 grids.

Each case runs in its own subprocess so that its peak RSS is its own. All-pairs cases whose
estimated peak exceeds ~8 GB are not run; their time and memory are extrapolated linearly in
N * voxels * M from the measured all-pairs case (the all-pairs cost is exactly proportional to
that count) and marked as estimates.
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time

BATCH = 8
CASES = [(128, 32), (1024, 32), (128, 64), (1024, 64)]
LIMIT_GB = 8.0


def _run_case(kind: str, m: int, n: int, threads: int) -> dict:
    import torch

    from affinity_vae.model import gmd

    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    c = (torch.rand(BATCH, m, 3, generator=g) * 1.6 - 0.8).requires_grad_()
    s = (torch.rand(BATCH, m, generator=g) * 0.1 + 0.03).requires_grad_()
    w = torch.rand(BATCH, m, generator=g).requires_grad_()
    fn = gmd.render if kind == "separable" else gmd.render_all_pairs
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    times = []
    for _ in range(3 if kind == "separable" else 1):
        t0 = time.perf_counter()
        out = fn(c, s, w, (n, n, n))
        out.square().mean().backward()
        times.append(time.perf_counter() - t0)
    best = statistics.median(times)  # median of the repeats
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base
    res = {"seconds": best, "peak_mb": peak}
    if kind == "all_pairs":  # agreement with the separable renderer on the same inputs
        with torch.no_grad():
            ref = out.detach()
            new = gmd.render(c, s, w, (n, n, n))
            res["max_rel_err"] = float((new - ref).abs().max() / ref.abs().max())
    return res


def _case(kind: str, m: int, n: int, threads: int) -> dict:
    out = subprocess.run([sys.executable, "-m", "benchmarks.bench_gmd", "--case", kind, str(m),
                          str(n), str(threads)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(threads: int = 1) -> None:
    from benchmarks._common import record

    ref_m, ref_n = CASES[0]
    base = _case("all_pairs", ref_m, ref_n, threads)
    print(f"all-pairs M={ref_m} {ref_n}^3: {base}")
    assert base["max_rel_err"] < 1e-5, base
    record("gmd_render_agreement_max_rel_err", base["max_rel_err"], "relative",
           target="< 1e-5", note=f"separable vs all-pairs, M={ref_m}, {ref_n}^3, batch {BATCH}")
    per_elem_s = base["seconds"] / (BATCH * ref_n ** 3 * ref_m)
    per_elem_mb = base["peak_mb"] / (BATCH * ref_n ** 3 * ref_m)
    for m, n in CASES:
        new = _case("separable", m, n, threads)
        elems = BATCH * n ** 3 * m
        if (m, n) == (ref_m, ref_n):
            old, how = base, "measured"
        else:
            old = {"seconds": per_elem_s * elems, "peak_mb": per_elem_mb * elems}
            how = (f"all-pairs not run (estimated {old['peak_mb'] / 1024:.1f} GB > ~{LIMIT_GB:.0f}"
                   f" GB or too slow); baseline extrapolated linearly from the measured "
                   f"M={ref_m} {ref_n}^3 case")
        print(f"M={m} {n}^3 separable {new}, all-pairs ({how}) {old}")
        note = f"forward+backward, batch {BATCH}, {threads} threads; {how}"
        record(f"gmd_render_time_M{m}_{n}^3", new["seconds"], "s", baseline=old["seconds"],
               target=">= 20x faster than all-pairs", note=note)
        record(f"gmd_render_peak_mem_M{m}_{n}^3", max(new["peak_mb"], 1.0), "MB",
               baseline=old["peak_mb"], target=">= 20x less peak memory than all-pairs",
               note=note + "; peak RSS growth of the case's process (floor 1 MB)")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--case":
        kind, m, n, t = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
        print(json.dumps(_run_case(kind, m, n, t)))
    else:
        main()
