"""Recording benchmark figures into benchmarks/results.json.

Format (DESIGN.md): ``{name: {value, unit, baseline, ratio, target, note}}``, one entry a figure.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).with_name("results.json")


def record(name: str, value: float, unit: str, baseline: float | None = None,
           target: str | None = None, note: str = "") -> dict[str, Any]:
    """Add or replace one figure in results.json (ratio = baseline / value when both exist)."""
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    ratio = (baseline / value) if (baseline is not None and value) else None
    data[name] = {"value": value, "unit": unit, "baseline": baseline, "ratio": ratio,
                  "target": target, "note": note,
                  "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                  "date": time.strftime("%Y-%m-%d")}
    tmp = RESULTS.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, RESULTS)
    shown = "n/a" if value is None else f"{value:.4g}"
    print(f"{name}: {shown} {unit}" + (f" (baseline {baseline:.4g}, ratio {ratio:.3g})"
                                       if ratio else ""))
    return data[name]


def timed(fn: Callable[[], Any], repeat: int = 1) -> tuple[float, Any]:
    """Best wall time in seconds over ``repeat`` calls, and the last result."""
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


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
