"""The default pipeline's wall time and each stage's share (opt-in: ``python -m benchmarks
--pipeline``; tens of minutes on 2 cores).

Runs ``snakemake --cores 2`` on config/config.yaml from scratch under its own run name
(results/bench_pipeline, removed first), times the whole process, and reads every rule's
``benchmark:`` TSV (results/<run>/benchmarks/<stage>[/<job>].tsv, column ``s``). Table
``pipeline`` (scaling.json): stage, jobs, summed job seconds, longest job, share of all job
seconds, summed seconds / wall; figure ``pipeline_default_wall_s`` with the recorded "before" wall
as baseline
(benchmarks/pipeline_baseline.json, the same table of an earlier run).

    python -m benchmarks.bench_pipeline [--cores 2] [--config config/config.yaml]
    python -m benchmarks.bench_pipeline --from-run results/demo   # read a finished run only
    python -m benchmarks.bench_pipeline --from-run results/demo --as-baseline
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks._common import HERE, REPO, record, record_table

OPT_IN = True
BASELINE = HERE / "pipeline_baseline.json"
COLUMNS = ["stage", "jobs", "seconds", "longest_job_s", "share_of_job_time",
           "seconds_per_wall"]


def stage_seconds(bench_dir: Path) -> dict[str, dict[str, float]]:
    """``{stage: {jobs, seconds, longest}}`` from a run's benchmark TSVs (first ``s`` row of
    each; ``seconds`` summed over the stage's jobs, ``longest`` the longest job)."""
    out: dict[str, dict[str, float]] = {}
    for tsv in sorted(bench_dir.rglob("*.tsv")):
        rel = tsv.relative_to(bench_dir)
        stage = rel.parts[0] if len(rel.parts) > 1 else tsv.stem
        with tsv.open() as f:
            row = next(csv.DictReader(f, delimiter="\t"), None)
        if row is None:
            continue
        st = out.setdefault(stage, {"jobs": 0, "seconds": 0.0, "longest": 0.0})
        st["jobs"] += 1
        st["seconds"] += float(row["s"])
        st["longest"] = max(st["longest"], float(row["s"]))
    return out


def output_span_s(run_dir: Path) -> float:
    """Seconds from the oldest to the newest file of a finished run (its wall time when the
    run was made in one go; an estimate for a run read with --from-run)."""
    times = [p.stat().st_mtime for p in run_dir.rglob("*") if p.is_file()]
    return max(times) - min(times) if times else 0.0


def stage_rows(stages: dict[str, dict[str, float]], wall: float) -> list[list[Any]]:
    """Rows of COLUMNS, largest stage first."""
    total = sum(s["seconds"] for s in stages.values()) or 1.0
    return [[k, int(v["jobs"]), v["seconds"], v["longest"], v["seconds"] / total,
             v["seconds"] / wall if wall else None]
            for k, v in sorted(stages.items(), key=lambda kv: -kv[1]["seconds"])]


def run_pipeline(config: Path, run: str, cores: int) -> float:
    """Make the run from scratch; returns the wall seconds of the snakemake process."""
    shutil.rmtree(REPO / "results" / run, ignore_errors=True)
    cmd = [str(Path(sys.executable).parent / "snakemake"), "--cores", str(cores),
           "--configfile", str(config), "--config", f"run={run}"]
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, check=True)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=REPO / "config" / "config.yaml")
    ap.add_argument("--run", default="bench_pipeline")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--from-run", type=Path, help="read this finished run; do not run")
    ap.add_argument("--wall", type=float, help="its wall seconds (default: output time span)")
    ap.add_argument("--as-baseline", action="store_true",
                    help=f"write the table to {BASELINE.name} as the 'before' measurement")
    ap.add_argument("--keep", action="store_true", help="keep results/<run> afterwards")
    args = ap.parse_args(argv)
    if args.from_run:
        run_dir = args.from_run
        wall = args.wall or output_span_s(run_dir)
        how = f"read from {run_dir}; wall " + ("given" if args.wall else "= output time span")
    else:
        wall = run_pipeline(args.config, args.run, args.cores)
        run_dir = REPO / "results" / args.run
        how = f"snakemake --cores {args.cores} on {args.config.name} from scratch, timed"
    stages = stage_seconds(run_dir / "benchmarks")
    rows = stage_rows(stages, wall)
    if args.as_baseline:
        BASELINE.write_text(json.dumps({"wall_s": wall, "source": how, "columns": COLUMNS,
                                        "rows": rows, "date": time.strftime("%Y-%m-%d")},
                                       indent=2) + "\n")
        print(f"baseline written to {BASELINE}")
    else:  # another config than the default: its own table and figure, no baseline
        default = args.from_run is not None or (
            args.config.resolve() == (REPO / "config" / "config.yaml").resolve())
        tag = "" if default else f"_{args.config.stem}"
        record_table(f"pipeline{tag}", COLUMNS, rows, note=how)  # wall: the figure below
        base = (json.loads(BASELINE.read_text())["wall_s"]
                if BASELINE.exists() and default else None)
        record(f"pipeline_{'default' if default else args.config.stem}_wall_s", wall, "s",
               baseline=base, note=f"{how}" + (f"; baseline = {BASELINE.name}" if base else ""))
    if not args.from_run and not args.keep:
        shutil.rmtree(run_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
