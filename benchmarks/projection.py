"""SHREC 2021 projection from the scaling tables: per-stage cost of 10 tomograms of 512^3 and
~20,000 particles, which jobs run side by side under ``--profile slurm``, and the expected wall
time on a cluster with and without a GPU. Only measured figures are used: a GPU number that was
not measured stays ``None`` (BENCHMARKS.md: 'not measured').

Formulas (V = voxels of a tomogram, P = particles of a tomogram, C = classes):
  denoise   t(V) = t(V_m) * V / V_m         linear in voxels, largest measured size V_m at the
                                            default patch
  extract   t(V, P) = a V + b P + c         least squares over the extract table
                                            (proportional in V from the largest row if < 3 rows)
  affinity  t(C) = t(C_m) * (C / C_m)^2     pairs of classes, largest measured C_m, default method
  train     t = epochs * N_train / rate     rate = samples/s at box 32, default batch and decoder
                                            (scaled by box^3 from the nearest box if 32 is absent);
                                            N_train = P_total * (1 - validation_fraction)
  evaluate  t = t_demo * P_total / P_demo   linear in particles from the default pipeline's
                                            longest evaluate job
"""

from __future__ import annotations

from typing import Any

import numpy as np

from affinity_vae.config import schema_defaults
from benchmarks._common import REPO

SHREC = {"tomograms": 10, "size": 512, "particles": 20000, "classes": 13}


def defaults(section: str) -> dict[str, Any]:
    """The schema defaults of one config section (the only place defaults live)."""
    return schema_defaults(section)


def _rows(table: dict | None) -> list[dict[str, Any]]:
    if not table:
        return []
    rows = [dict(zip(table["columns"], r)) for r in table["rows"]]
    return [r for r in rows if all(v is not None for v in r.values())]  # failed cases out


def denoise_job_s(table: dict | None, size: int, patch: int) -> float | None:
    rows = _rows(table)
    if not rows:
        return None
    at = [r for r in rows if r["patch"] == patch] or rows
    top = max(at, key=lambda r: (r["size"], r["patch"] == patch))
    return top["seconds"] * (size / top["size"]) ** 3


def extract_job_s(table: dict | None, size: int, particles: int) -> float | None:
    rows = _rows(table)
    if not rows:
        return None
    v = np.array([r["size"] ** 3 for r in rows], float)
    p = np.array([r["particles"] for r in rows], float)
    t = np.array([r["seconds"] for r in rows], float)
    if len({*v}) >= 2 and len({*p}) >= 2 and len(rows) >= 3:
        coef, *_ = np.linalg.lstsq(np.c_[v, p, np.ones_like(v)], t, rcond=None)
        return float(coef @ [size ** 3, particles, 1.0])
    i = int(np.argmax(v))
    return float(t[i] * size ** 3 / v[i])


def affinity_s(table: dict | None, method: str, classes: int) -> float | None:
    rows = [r for r in _rows(table) if r["method"] == method]
    if not rows:
        return None
    top = max(rows, key=lambda r: r["classes"])
    return top["seconds"] * (classes / top["classes"]) ** 2


def train_rate(table: dict | None, decoder: str, batch: int, box: int = 32) -> float | None:
    rows = [r for r in _rows(table) if r["decoder"] == decoder]
    if not rows:
        return None
    near = min(rows, key=lambda r: (abs(r["box"] - box), abs(r["batch"] - batch)))
    return near["samples_per_s"] * (near["box"] / box) ** 3


def evaluate_job_s(pipeline: dict | None, particles: int) -> float | None:
    """Per evaluate job (aVAE or beta-VAE), linear in particles from a default-pipeline table."""
    rows = [r for r in _rows(pipeline) if r["stage"] == "evaluate"]
    if not rows:
        return None
    sim = {**defaults("simulate"), **_demo_config().get("simulate", {})}
    demo_particles = sim["n_tomograms"] * sim["n_particles"]
    per_job = rows[0].get("longest_job_s") or rows[0]["seconds"] / max(1, rows[0]["jobs"])
    return per_job * particles / demo_particles


def _demo_config() -> dict[str, Any]:
    import yaml

    return yaml.safe_load((REPO / "config" / "config.yaml").read_text()) or {}


def peak_mb(table: dict | None, key: str) -> str | None:
    """Peak memory of the table's largest measured case (``key``: its size column)."""
    rows = _rows(table)
    mem = "peak_rss_mb" if rows and "peak_rss_mb" in rows[0] else "peak_mem_mb"
    if not rows:
        return None
    top = max(rows, key=lambda r: (r[key], r[mem]))
    return f"{top[mem]:,.0f} MB at {key} {top[key]}"


RULES = {"denoise": "denoise_tomogram", "extract": "extract_tomogram",
         "affinity": "affinity_method", "train": "train_model", "evaluate": "evaluate_avae"}


def project(scaling: dict, results: dict, pipeline: dict | None, threads: dict[str, int],
            resources: dict[str, dict] | None = None) -> dict[str, Any]:
    """Rows ``{stage, jobs, parallel, threads, cpu_job_s, cpu_wall_s, gpu_job_s, gpu_wall_s,
    peak_mem, runtime_min, formula}`` and the totals for SHREC 2021 (``None`` = not measured).
    ``threads`` / ``resources``: the profile's set-threads / set-resources by rule name."""
    n_t, size, n_p, n_c = (SHREC[k] for k in ("tomograms", "size", "particles", "classes"))
    per_tomo = n_p / n_t
    train_cfg, model_cfg = defaults("train"), defaults("model")
    patch = defaults("denoise")["patch_size"]
    method = defaults("affinity")["method"]
    n_train = n_p * (1 - train_cfg["validation_fraction"])
    rate = train_rate(scaling.get("train"), model_cfg["decoder"], train_cfg["batch_size"])
    gpu_rate = (results.get(f"gpu_train_{model_cfg['decoder']}_fp32_samples_per_s") or {}
                ).get("value")
    gpu_dn = (results.get(f"gpu_denoise_{size}^3_s") or {}).get("value")
    train_s = train_cfg["epochs"] * n_train / rate if rate else None
    gpu_train_s = train_cfg["epochs"] * n_train / gpu_rate if gpu_rate else None
    dn = denoise_job_s(scaling.get("denoise"), size, patch)
    ex = extract_job_s(scaling.get("extract"), size, int(per_tomo))
    af = affinity_s(scaling.get("affinity"), method, n_c)
    ev = evaluate_job_s(pipeline, n_p)
    rows = [
        {"stage": "denoise", "jobs": n_t, "parallel": n_t, "cpu_job_s": dn, "gpu_job_s": gpu_dn,
         "threads": threads.get("denoise_tomogram"),
         "formula": f"t({size}^3) = t(V_m) * V / V_m, patch {patch}"},
        {"stage": "extract", "jobs": n_t, "parallel": n_t, "cpu_job_s": ex, "gpu_job_s": ex,
         "threads": threads.get("extract_tomogram"),
         "formula": f"a V + b P + c at V = {size}^3, P = {per_tomo:.0f}"},
        {"stage": "affinity", "jobs": 1, "parallel": 1, "cpu_job_s": af, "gpu_job_s": af,
         "threads": threads.get("affinity_method"),
         "formula": f"{method}: t(C_m) (C / C_m)^2 at C = {n_c}; runs beside denoise/extract"},
        {"stage": "train", "jobs": 2, "parallel": 2, "cpu_job_s": train_s,
         "gpu_job_s": gpu_train_s, "threads": threads.get("train_model"),
         "formula": f"{train_cfg['epochs']} epochs * {n_train:.0f} / samples/s "
                    f"({model_cfg['decoder']}, box 32, batch {train_cfg['batch_size']})"},
        {"stage": "evaluate", "jobs": 2, "parallel": 2, "cpu_job_s": ev, "gpu_job_s": ev,
         "threads": threads.get("evaluate_avae"),
         "formula": f"default pipeline's longest evaluate job * {n_p} / its particles"},
    ]
    mems = {"denoise": peak_mb(scaling.get("denoise"), "size"),
            "extract": peak_mb(scaling.get("extract"), "size"),
            "affinity": peak_mb(scaling.get("affinity"), "classes"),
            "train": peak_mb(scaling.get("train"), "box"), "evaluate": None}
    for r in rows:  # all jobs of a stage run side by side under --profile slurm
        r["peak_mem"] = mems[r["stage"]]
        r["runtime_min"] = ((resources or {}).get(RULES[r["stage"]]) or {}).get("runtime")
        r["cpu_wall_s"] = r["cpu_job_s"]
        r["gpu_wall_s"] = r["gpu_job_s"]

    def total(key: str) -> float | None:
        w = {r["stage"]: r[key] for r in rows}
        if any(v is None for v in w.values()):
            return None
        return max(w["denoise"] + w["extract"], w["affinity"]) + w["train"] + w["evaluate"]

    return {"rows": rows, "cpu_total_s": total("cpu_wall_s"), "gpu_total_s": total("gpu_wall_s"),
            "shrec": SHREC, "n_train": n_train, "epochs": train_cfg["epochs"]}
