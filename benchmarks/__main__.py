"""Run benchmarks: `python -m benchmarks [name ...]`. Each benchmarks/bench_<name>.py has main().
Every benchmark runs in its own process so that peak-memory figures are its own."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent


def main(names: list[str]) -> int:
    available = sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))
    chosen = names or available
    unknown = set(chosen) - set(available)
    if unknown:
        print(f"unknown benchmark(s) {sorted(unknown)}; available: {available}", file=sys.stderr)
        return 2
    rc = 0
    for name in chosen:
        print(f"== {name}", flush=True)
        rc |= subprocess.call([sys.executable, "-m", f"benchmarks.bench_{name}"])
    print(f"results in {HERE / 'results.json'}")
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
