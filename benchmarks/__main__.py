"""Run benchmarks and write BENCHMARKS.md:

    python -m benchmarks [--quick] [--pipeline] [--no-report] [name ...]

Each benchmarks/bench_<name>.py is found automatically and runs in its own process (so that its
peak-memory figures are its own); one that sets ``OPT_IN = True`` (the default pipeline's wall
time, tens of minutes) runs only when named or with ``--pipeline``. ``--quick``: only the
benchmarks that set ``QUICK_SUPPORTED = True`` (they get ``--quick``: small sizes, one repeat);
the report is then labelled a quick run. The report is written after the runs either way.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent


def discover() -> dict[str, dict[str, bool]]:
    """``{name: {quick, opt_in}}`` of every benchmarks/bench_<name>.py (read, not imported)."""
    found = {}
    for p in sorted(HERE.glob("bench_*.py")):
        text = p.read_text()
        found[p.stem.removeprefix("bench_")] = {
            "quick": bool(re.search(r"^QUICK_SUPPORTED = True\b", text, re.MULTILINE)),
            "opt_in": bool(re.search(r"^OPT_IN = True\b", text, re.MULTILINE))}
    return found


def chosen(names: list[str], available: dict[str, dict[str, bool]], quick: bool,
           pipeline: bool) -> list[str]:
    """The benchmarks to run, in order (raises KeyError naming an unknown one)."""
    unknown = sorted(set(names) - set(available))
    if unknown:
        raise KeyError(f"unknown benchmark(s) {unknown}; available: {sorted(available)}")
    out = names or [n for n, f in available.items() if not f["opt_in"]]
    if pipeline and "pipeline" not in out:
        out = [*out, "pipeline"]
    if quick:
        out = [n for n in out if available[n]["quick"]]
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    ap.add_argument("names", nargs="*", help="benchmarks to run (default: all but opt-in ones)")
    ap.add_argument("--quick", action="store_true", help="small sizes, one repeat")
    ap.add_argument("--pipeline", action="store_true", help="also time the default pipeline")
    ap.add_argument("--no-report", action="store_true", help="do not write BENCHMARKS.md")
    args = ap.parse_args(argv)
    available = discover()
    try:
        names = chosen(args.names, available, args.quick, args.pipeline)
    except KeyError as exc:
        print(exc.args[0], file=sys.stderr)
        return 2
    rc = 0
    for name in names:
        print(f"== {name}", flush=True)
        extra = ["--quick"] if args.quick else []
        rc |= subprocess.call([sys.executable, "-m", f"benchmarks.bench_{name}", *extra])
    if not args.no_report:
        from benchmarks.report import write

        write(quick=args.quick)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
