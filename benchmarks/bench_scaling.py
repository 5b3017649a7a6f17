"""Scaling tables (issue 16): how each stage's time and peak memory grow with its size.

  extract   time + peak RSS vs tomogram size (128^3, 256^3, 512^3) and particle count
  denoise   time + peak RSS vs volume size and patch size (unet-3d-10a, exact tiling)
  train     samples/s vs box size (24^3 - 64^3) and batch size, CNN and GMD decoders
  gmd       GMD renderer (forward + backward) time + peak RSS vs M (128 - 4096) and grid
  affinity  SOAP and FSC matrix time vs the number of SHREC 2021 classes

Every case runs in its own process (``benchmarks._cases``) with the threads that
profiles/default/config.yaml gives the stage's rule, and reports the median of ``repeat`` runs.
Tables go to benchmarks/scaling.json (``_common.record_table``); BENCHMARKS.md shows them and
projects SHREC 2021 from them (``benchmarks.projection``).

    python -m benchmarks.bench_scaling [--quick] [--only extract,train]

``--quick``: small sizes and one repeat (tests, CI); tables are marked quick. ``--set
denoise.sizes=128,256`` (repeatable) overrides one size list or number. A case that fails (e.g.
out of memory) is reported on stderr and leaves None in its row; the others still run.
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
from typing import Any

import yaml

from benchmarks._common import REPO, record_table, run_child

QUICK_SUPPORTED = True

#: the full sizes (``make benchmark``); every list is a parameter of its table
FULL: dict[str, dict[str, Any]] = {
    "extract": {"sizes": [128, 256, 512], "particles": [500, 2000, 8000], "repeat": 3},
    # 512^3 takes ~20 min a run on 2 CPU threads: one run there, three below
    "denoise": {"sizes": [128, 256, 512], "patches": [64, 128], "repeat": 3,
                "repeat_over_256": 1},
    "train": {"boxes": [24, 32, 48, 64], "batches": [16, 32, 64], "decoders": ["cnn", "gmd"],
              "steps": 4, "repeat": 3},
    "gmd": {"ms": [128, 256, 512, 1024, 2048, 4096], "grids": [32, 48, 64], "repeat": 3},
    "affinity": {"classes": [2, 4, 8, 13], "methods": ["soap", "fsc"], "repeat": 3},
}
#: ``--quick``: seconds per table, for tests and CI
QUICK: dict[str, dict[str, Any]] = {
    "extract": {"sizes": [64], "particles": [20, 80], "repeat": 1},
    "denoise": {"sizes": [32], "patches": [32], "repeat": 1, "repeat_over_256": 1},
    "train": {"boxes": [16], "batches": [4], "decoders": ["cnn", "gmd"], "steps": 2,
              "repeat": 1},
    "gmd": {"ms": [16, 64], "grids": [16], "repeat": 1},
    "affinity": {"classes": [2], "methods": ["soap"], "repeat": 1},
}
PROFILE = REPO / "profiles" / "default" / "config.yaml"
RULES = {"extract": "extract_tomogram", "denoise": "denoise_tomogram", "train": "train_model",
         "gmd": "train_model", "affinity": "affinity_method"}


def rule_threads(stage: str) -> int:
    """The threads profiles/default/config.yaml gives the stage's rule (1 when unset)."""
    prof = yaml.safe_load(PROFILE.read_text()) if PROFILE.exists() else {}
    return int((prof.get("set-threads") or {}).get(RULES[stage], 1))


class _Failed(dict):
    """A case that failed (e.g. out of memory): every figure reads None."""

    def __missing__(self, key: str) -> None:
        return None


def _case(kind: str, **params: Any) -> dict[str, Any]:
    try:
        res = run_child("benchmarks._cases", kind, json.dumps(params))
    except subprocess.CalledProcessError as exc:  # one failed case must not end a long run
        print(f"  {kind} {params} FAILED (rc {exc.returncode}):\n{exc.stderr[-2000:]}",
              file=sys.stderr, flush=True)
        return _Failed()
    print(f"  {kind} {params} -> {res}", flush=True)
    return res


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def extract_table(p: dict, quick: bool) -> None:
    t = rule_threads("extract")
    rows = []
    for size in p["sizes"]:
        for n in p["particles"]:
            r = _case("extract", size=size, particles=n, repeat=p["repeat"])
            rows.append([size, n, r["seconds"], r["peak_rss_mb"]])
    record_table("extract", ["size", "particles", "seconds", "peak_rss_mb"], rows, quick=quick,
                 note=f"extract_tomogram end to end, 32^3 boxes, size^3 float32 memory-mapped "
                      f"tomogram, warm page cache, {t} thread; median of {p['repeat']}; peak "
                      f"RSS of the case's process (incl. the mapped pages it touched)")


def denoise_table(p: dict, quick: bool) -> None:
    t = rule_threads("denoise")
    rows = []
    for size in p["sizes"]:
        rep = p["repeat"] if size <= 256 else p["repeat_over_256"]
        for patch in p["patches"]:
            r = _case("denoise", size=size, patch=patch, threads=t, repeat=rep)
            rows.append([size, patch, r["seconds"], r["peak_rss_mb"], rep])
    record_table("denoise", ["size", "patch", "seconds", "peak_rss_mb", "runs"], rows,
                 quick=quick, note=f"denoise_volume (unet-3d-10a, exact tiling, patch^3 cores) on "
                                   f"a size^3 float32 volume, CPU, {t} threads; median of runs")


def train_table(p: dict, quick: bool) -> None:
    t = rule_threads("train")
    rows = []
    for decoder in p["decoders"]:
        for box in p["boxes"]:
            for batch in p["batches"]:
                r = _case("train", decoder=decoder, box=box, batch=batch, steps=p["steps"],
                          threads=t, repeat=p["repeat"])
                rows.append([decoder, box, batch, r["samples_per_s"], r["peak_rss_mb"]])
    record_table("train", ["decoder", "box", "batch", "samples_per_s", "peak_rss_mb"], rows,
                 quick=quick, note=f"default architecture (model defaults; GMD pose_dims 4), "
                                   f"forward + backward + Adam + rot90, {p['steps']} steps an "
                                   f"epoch after a warm-up epoch, CPU, {t} thread(s); median of "
                                   f"{p['repeat']} epochs")


def gmd_table(p: dict, quick: bool) -> None:
    t = rule_threads("gmd")
    rows = []
    for grid in p["grids"]:
        for m in p["ms"]:
            r = _case("gmd", m=m, grid=grid, threads=t, repeat=p["repeat"])
            rows.append([m, grid, r["seconds"], _minus(r["peak_rss_mb"], r["base_rss_mb"])])
    record_table("gmd", ["M", "grid", "seconds", "peak_mem_mb"], rows, quick=quick,
                 note=f"separable GMD renderer, forward + backward, batch 8, CPU, {t} "
                      f"thread(s); median of {p['repeat']}; peak RSS growth of the case")


def affinity_table(p: dict, quick: bool) -> None:
    from benchmarks._cases import SHARED

    if not SHARED.is_dir():
        print(f"affinity table skipped: {SHARED} not present", file=sys.stderr)
        return
    t = rule_threads("affinity")
    rows = []
    for method in p["methods"]:
        for n in p["classes"]:
            r = _case("affinity", method=method, n_classes=n, threads=t, repeat=p["repeat"])
            rows.append([method, r["n"], r["seconds"], r["peak_rss_mb"]])
    record_table("affinity", ["method", "classes", "seconds", "peak_rss_mb"], rows, quick=quick,
                 note=f"compute_affinity, default config, the first n SHREC 2021 classes, "
                      f"{t} threads; median of {p['repeat']}")


def apply_overrides(sizes: dict[str, dict[str, Any]], items: list[str]
                    ) -> dict[str, dict[str, Any]]:
    """A copy of ``sizes`` with each ``table.key=v1,v2`` applied (values take the type of the
    ones they replace; a list stays a list)."""
    sizes = copy.deepcopy(sizes)
    for item in items:
        key, _, val = item.partition("=")
        table, _, name = key.partition(".")
        old = sizes[table][name]
        sizes[table][name] = ([type(old[0])(v) for v in val.split(",")]
                              if isinstance(old, list) else type(old)(val))
    return sizes


TABLES = {"extract": extract_table, "denoise": denoise_table, "train": train_table,
          "gmd": gmd_table, "affinity": affinity_table}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, one repeat")
    ap.add_argument("--only", default="", help=f"comma-separated subset of {list(TABLES)}")
    ap.add_argument("--set", action="append", default=[], metavar="TABLE.KEY=V1,V2",
                    help="override one size list or number, e.g. denoise.sizes=128,256")
    args = ap.parse_args(argv)
    sizes = apply_overrides(QUICK if args.quick else FULL, args.set)
    for name in [n for n in args.only.split(",") if n] or list(TABLES):
        print(f"-- scaling: {name}", flush=True)
        TABLES[name](sizes[name], args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
