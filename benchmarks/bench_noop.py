"""No-op Snakemake: how long `snakemake` takes to say "Nothing to be done" on a finished run of the
default config (config/config.yaml), run name bench_noop. Goal: < 5 s. Makes the default run first
when it is missing
or out of date (minutes). Also records the floor under it: importing Snakemake's CLI alone."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks._common import record

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# the default config under its own run name (results/bench_noop); AVAE_BENCH_NOOP_CONFIG and
# AVAE_BENCH_NOOP_RUN measure another config/run instead (recorded under the config's name)
CONFIG = Path(os.environ.get("AVAE_BENCH_NOOP_CONFIG") or REPO / "config" / "config.yaml")
RUN = os.environ.get("AVAE_BENCH_NOOP_RUN") or "bench_noop"


def _wall(cmd: list[str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, check=False, cwd=REPO, text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}")
    return dt, proc.stdout


def main(repeat: int = 5) -> None:
    smk = [str(BIN / "snakemake"), "--cores", "2", "--configfile", str(CONFIG),
           "--config", f"run={RUN}"]
    _, out = _wall([*smk, "-n"])
    if "Nothing to be done" not in out:
        print(f"finishing results/{RUN} first (snakemake --cores 2) ...", flush=True)
        _wall(smk)
    times = []
    for _ in range(repeat):
        dt, out = _wall(smk)
        assert "Nothing to be done" in out, out[-2000:]
        times.append(dt)
    floor = min(_wall([sys.executable, "-c", "import snakemake.cli"])[0] for _ in range(3))
    name = "default" if CONFIG.resolve() == (REPO / "config" / "config.yaml") else CONFIG.stem
    record(f"noop_snakemake_{name}_s", statistics.median(times), "s", target="< 5 s",
           note=f"median of {repeat} no-op `snakemake --cores 2` on a finished {name} run "
                f"(best {min(times):.2f} s); wall time of the whole process")
    record("snakemake_import_floor_s", floor, "s",
           note="`python -c 'import snakemake.cli'` alone (best of 3): the part of the no-op "
                "that the workflow cannot change")


if __name__ == "__main__":
    main()
