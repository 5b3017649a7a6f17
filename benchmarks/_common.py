"""Recording benchmark figures into benchmarks/results.json.

Format (DESIGN.md): ``{name: {value, unit, baseline, ratio, target, note}}``, one entry a figure.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
REPO = HERE.parent
#: AVAE_BENCH_OUT redirects every output (results.json, scaling.json, BENCHMARKS.md) to one
#: folder: the tests use it so that a test run never overwrites the figures of record.
OUT = Path(os.environ["AVAE_BENCH_OUT"]) if os.environ.get("AVAE_BENCH_OUT") else None
RESULTS = (OUT or HERE) / "results.json"
#: scaling tables: ``{table: {columns, rows, note, quick, date, machine}}``
SCALING = (OUT or HERE) / "scaling.json"
REPORT = (OUT or REPO) / "BENCHMARKS.md"


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), else what ``platform`` knows."""
    info = Path("/proc/cpuinfo")
    if info.exists():
        for line in info.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def record(name: str, value: float, unit: str, baseline: float | None = None,
           target: str | None = None, note: str = "") -> dict[str, Any]:
    """Add or replace one figure in results.json (ratio = baseline / value when both exist)."""
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    ratio = (baseline / value) if (baseline is not None and value) else None
    data[name] = {"value": value, "unit": unit, "baseline": baseline, "ratio": ratio,
                  "target": target, "note": note,
                  "machine": f"{cpu_model()}, {os.cpu_count()} cores",
                  "date": time.strftime("%Y-%m-%d")}
    _write_json(RESULTS, data)
    shown = "n/a" if value is None else f"{value:.4g}"
    print(f"{name}: {shown} {unit}" + (f" (baseline {baseline:.4g}, ratio {ratio:.3g})"
                                       if ratio else ""))
    return data[name]


def timed(fn: Callable[[], Any], repeat: int = 1) -> tuple[float, Any]:
    """Median wall time in seconds of ``repeat`` calls (``timeit.repeat``, one call each), and
    the last call's result."""
    last: list[Any] = [None]

    def call() -> None:
        last[0] = fn()

    times = timeit.repeat(call, repeat=max(1, repeat), number=1)
    return statistics.median(times), last[0]


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def record_table(name: str, columns: list[str], rows: list[list[Any]], note: str = "",
                 quick: bool = False) -> dict[str, Any]:
    """Add or replace one scaling table in scaling.json (``rows``: one list per row, in the
    order of ``columns``; ``quick``: measured at the small --quick sizes, not of record)."""
    data = json.loads(SCALING.read_text()) if SCALING.exists() else {}
    data[name] = {"columns": columns, "rows": rows, "note": note, "quick": quick,
                  "machine": f"{cpu_model()}, {os.cpu_count()} cores",
                  "date": time.strftime("%Y-%m-%d")}
    _write_json(SCALING, data)
    print(f"table {name}: {len(rows)} rows")
    return data[name]


def run_child(module: str, *args: str, timeout: float | None = None) -> dict[str, Any]:
    """Run ``python -m <module> *args`` in a fresh process (so that its peak memory is its
    own) and return the JSON object it prints on its last line of stdout."""
    out = subprocess.run([sys.executable, "-m", module, *args], check=True,
                         capture_output=True, text=True, cwd=REPO, timeout=timeout)
    return json.loads(out.stdout.strip().splitlines()[-1])


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB.

    Reads VmHWM from /proc (ru_maxrss would also count a parent's peak inherited across fork).
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
