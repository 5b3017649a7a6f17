"""BENCHMARKS.md: the machine, every figure of results.json with its baseline, ratio and
target, the scaling tables (scaling.json), the default pipeline before/after, the GPU figures
and the SHREC 2021 projection. ``python -m benchmarks`` writes it after the runs;
``python -m benchmarks.report`` rewrites it from the stored figures alone.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks._common import HERE, REPORT, RESULTS, SCALING, cpu_model

GPU_ROWS = [("gpu_train_cnn_fp32_samples_per_s", "training, CNN, fp32 (samples/s)"),
            ("gpu_train_cnn_bf16_samples_per_s", "training, CNN, bf16 autocast (samples/s)"),
            ("gpu_train_gmd_fp32_samples_per_s", "training, GMD, fp32 (samples/s)"),
            ("gpu_train_gmd_bf16_samples_per_s", "training, GMD, bf16 autocast (samples/s)"),
            ("gpu_gmd_render_M1024_64^3_s", "GMD renderer, M 1024, 64^3 (s)"),
            ("gpu_gmd_render_M4096_64^3_s", "GMD renderer, M 4096, 64^3 (s)"),
            ("gpu_denoise_256^3_s", "denoise 256^3 (s)"),
            ("gpu_denoise_512^3_s", "denoise 512^3 (s)")]
NM = "not measured"
#: the scaling tables of bench_scaling, shown first (and as 'not measured' when absent)
SCALING_TABLES = ("extract", "denoise", "train", "gmd", "affinity")


def machine() -> dict[str, str]:
    """CPU model, cores, torch version and threads, BLAS (torch's and numpy's)."""
    import numpy as np
    import torch

    cfg = torch.__config__.show()
    blas = re.search(r"BLAS_INFO=([^,\s]+)", cfg)
    lapack = re.search(r"LAPACK_INFO=([^,\s]+)", cfg)
    try:
        np_blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]["name"]
    except (TypeError, KeyError):  # older numpy: no dict mode
        np_blas = "unknown"
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {"CPU": cpu_model(), "cores": str(os.cpu_count()),
            "torch": f"{torch.__version__} ({torch.get_num_threads()} threads by default)",
            "torch BLAS": f"{blas.group(1) if blas else '?'}, LAPACK "
                          f"{lapack.group(1) if lapack else '?'}",
            "numpy BLAS": f"{np_blas} (numpy {np.__version__})", "GPU": gpu,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def table(columns: list[str], rows: list[list[Any]]) -> str:
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    out += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(out)


def figures_section(results: dict) -> str:
    rows = [[k, v.get("value"), v.get("unit", ""), v.get("baseline"), v.get("ratio"),
             v.get("target") or "", v.get("date", "")]
            for k, v in sorted(results.items()) if not k.startswith(("gpu_", "cpu_"))]
    return table(["figure", "value", "unit", "baseline", "ratio", "target", "date"], rows)


def scaling_section(scaling: dict) -> str:
    parts = []
    others = sorted(k for k in scaling if k not in SCALING_TABLES and not k.startswith("pipeline"))
    for name in (*SCALING_TABLES, *others):  # tables other benchmarks record too (e.g. tm)
        t = scaling.get(name)
        if not t:
            parts.append(f"### {name}\n\n{NM} (run `python -m benchmarks scaling`)")
            continue
        q = " **(quick sizes: not the figures of record)**" if t.get("quick") else ""
        parts.append(f"### {name}{q}\n\n{t['note']}; {t['date']}, {t['machine']}.\n\n"
                     + table(t["columns"], t["rows"]))
    return "\n\n".join(parts)


def pipeline_section(scaling: dict, baseline: dict | None, results: dict) -> str:
    after = scaling.get("pipeline")
    parts = []
    for label, t in (("before", baseline), ("after", after)):
        if not t:
            parts.append(f"**{label}**: {NM} (`python -m benchmarks --pipeline`)")
            continue
        src = t.get("source") or t.get("note", "")
        wall = t.get("wall_s") or (results.get("pipeline_default_wall_s") or {}).get("value")
        parts.append(f"**{label}** (wall {fmt(wall)} s; {src})\n\n"
                     + table(t["columns"], t["rows"]))
    fig = results.get("pipeline_default_wall_s")
    if fig:
        parts.append(f"Wall time after / before: {fmt(fig['value'])} s / "
                     f"{fmt(fig['baseline'])} s (ratio {fmt(fig['ratio'])}).")
    return "\n\n".join(parts)


def gpu_section(results: dict) -> str:
    rows = []
    for key, what in GPU_ROWS:
        r = results.get(key)
        rows.append([what, fmt(r["value"]) if r else NM, (r or {}).get("note", "")])
    return table(["GPU figure", "value", "device and settings"], rows)


def projection_section(proj: dict) -> str:
    def s(v: float | None) -> str:
        return NM if v is None else f"{v:,.0f} s ({v / 3600:.2f} h)"

    def limit(r: dict) -> str:
        m = r.get("runtime_min")
        if m is None:
            return "–"
        over = r["cpu_job_s"] is not None and r["cpu_job_s"] > 60 * m
        return f"{m} min" + (" (**CPU job exceeds it**)" if over else "")

    rows = [[r["stage"], r["jobs"], r["parallel"], r["threads"], s(r["cpu_job_s"]),
             s(r["gpu_job_s"]), r["peak_mem"] or NM, limit(r), r["formula"]]
            for r in proj["rows"]]
    sh = proj["shrec"]
    return (f"{sh['tomograms']} tomograms of {sh['size']}^3, {sh['particles']:,} particles, "
            f"{sh['classes']} classes; training {proj['epochs']} epochs of "
            f"{proj['n_train']:,.0f} samples. Under `--profile slurm` every job of a stage runs "
            f"side by side (up to AVAE_SLURM_JOBS = 100 jobs at once; threads per job from "
            f"profiles/default/config.yaml; train_model asks for one GPU there), so a stage's wall "
            f"time is one job's time; the "
            f"affinity job runs beside denoise and extract. Wall = max(denoise + extract, "
            f"affinity) + train + evaluate.\n\n"
            + table(["stage", "jobs", "side by side", "threads", "per job, CPU",
                     "per job, GPU", "peak memory (largest measured case)",
                     "profile runtime", "formula"], rows)
            + f"\n\nExpected wall time on a cluster without a GPU: {s(proj['cpu_total_s'])}; "
              f"with a GPU (training and denoising on it): {s(proj['gpu_total_s'])}.\n\n"
              f"```\n{formulas()}\n```")


def formulas() -> str:
    """The projection's formulas, as benchmarks/projection.py states them."""
    from benchmarks import projection

    doc = projection.__doc__ or ""
    return doc[doc.index("Formulas"):].rstrip()


def render(results: dict, scaling: dict, baseline: dict | None, mach: dict[str, str],
           proj: dict, quick: bool = False) -> str:
    """The whole BENCHMARKS.md text."""
    head = ("# Benchmarks\n\nGenerated by `make benchmark` (`python -m benchmarks`); figures "
            "in benchmarks/results.json, tables in benchmarks/scaling.json. Times are medians "
            "of repeated runs; a ratio is baseline / value, both measured in one run.\n")
    if quick:
        head += ("\n> **QUICK RUN** (`python -m benchmarks --quick`): small sizes, one "
                 "repeat. The scaling tables and the projection below are NOT the figures of "
                 "record; `make benchmark` replaces them.\n")
    return "\n".join([
        head, "## Machine\n", table(["", ""], [[k, v] for k, v in mach.items()]),
        "\n## Figures\n", figures_section(results),
        "\n## Scaling tables\n", scaling_section(scaling),
        "\n## Default pipeline: wall time and stage shares\n",
        pipeline_section(scaling, baseline, results),
        "\n## GPU\n", gpu_section(results),
        "\n## SHREC 2021 projection\n", projection_section(proj), ""])


def _load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def write(quick: bool = False, path: Path = REPORT) -> Path:
    """Render BENCHMARKS.md from results.json, scaling.json and the pipeline baseline."""
    import yaml

    from benchmarks.bench_scaling import PROFILE
    from benchmarks.projection import project

    results, scaling = _load(RESULTS), _load(SCALING)
    baseline = _load(HERE / "pipeline_baseline.json") or None
    prof = yaml.safe_load(PROFILE.read_text()) or {}
    proj = project(scaling, results, scaling.get("pipeline") or baseline,
                   prof.get("set-threads") or {}, prof.get("set-resources") or {})
    quick = quick or any(t.get("quick") for t in scaling.values())  # any table at quick sizes
    path.write_text(render(results, scaling, baseline, machine(), proj, quick))
    print(f"report in {path}")
    return path


if __name__ == "__main__":
    write(quick="--quick" in sys.argv[1:])
