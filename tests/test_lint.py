"""Style and types: snakemake --lint is silent, snakefmt changes nothing, ruff and mypy pass."""

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


def test_ruff_check_passes():
    """ruff with the rules in pyproject.toml ([tool.ruff]) on the whole tree."""
    proc = subprocess.run([str(BIN / "ruff"), "check", "--output-format", "concise", "."],
                          cwd=REPO, text=True, capture_output=True, timeout=300)
    assert proc.returncode == 0, f"ruff check . fails:\n{proc.stdout[-4000:]}{proc.stderr}"


def test_mypy_passes_on_the_typed_core():
    """mypy on the files pyproject.toml names ([tool.mypy]: io, rotation, model)."""
    proc = subprocess.run([str(BIN / "mypy")], cwd=REPO, text=True, capture_output=True,
                          timeout=600)
    assert proc.returncode == 0, f"mypy fails:\n{proc.stdout[-4000:]}{proc.stderr}"
