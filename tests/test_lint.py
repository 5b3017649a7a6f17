"""Style of the workflow itself: Snakemake's linter has nothing to say, snakefmt changes nothing."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from workflow_helpers import BIN, REPO, TINY, snakemake


def lint_titles(output: str) -> list[str]:
    """'<snakefile or rule>: <lint title>' for every lint in `snakemake --lint` text output."""
    out, where = [], "?"
    for line in output.splitlines():
        m = re.match(r"^Lints for (?:snakefile |rule )?(.+?):$", line)
        if m:
            where = Path(m.group(1)).name
        m = re.match(r"^\s{4}\* (.+?)\.?:$", line)
        if m:
            out.append(f"{where}: {m.group(1)}")
    return out


def test_snakemake_lint_reports_nothing():
    for configfile in (REPO / "config" / "config.yaml", TINY):
        proc = snakemake("--lint", "--configfile", str(configfile), "--config", "run=lint_check",
                         check=False, timeout=300)
        lints = lint_titles(proc.stdout)
        assert proc.returncode == 0 and not lints, (
            f"snakemake --lint ({configfile.name}) reports {lints}:\n{proc.stdout[-4000:]}")


def test_snakefmt_check_passes():
    proc = subprocess.run([str(BIN / "snakefmt"), "--check", "."], cwd=REPO, text=True,
                          capture_output=True, timeout=300)
    if proc.returncode != 0:
        diff = subprocess.run([str(BIN / "snakefmt"), "--diff", "."], cwd=REPO, text=True,
                              capture_output=True, timeout=300)
        changed = re.findall(r"=+> Diff for (\S+) <=+", diff.stdout + diff.stderr)
        raise AssertionError(f"snakefmt --check . fails: would change {changed} "
                             f"(run `snakefmt .`):\n{(diff.stdout + diff.stderr)[-3000:]}")
