"""Helpers for the workflow-level tests (envs, SLURM, re-runs, lint): the rules as written in
workflow/rules/*.smk, and running snakemake from the repo root and reading what it planned."""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RULES = REPO / "workflow" / "rules"
TINY = REPO / "tests" / "configs" / "tiny.yaml"

RULE_HEADER = re.compile(r"^(?P<indent>[ \t]*)(?P<kind>rule|checkpoint) (?P<name>\w+):", re.M)
CONDA_ENV = re.compile(r"^\s*conda:\s*\n\s*env\(\s*[\"'](?P<env>[\w-]+)[\"']\s*\)", re.M)
SCRIPT = re.compile(r"^\s*script:\s*\n\s*[\"'](?P<path>[^\"']+)[\"']", re.M)
DIRECTIVE = re.compile(r"^\s*(?P<name>\w+):", re.M)
RESOURCES = re.compile(r"^\s*resources:\s*\n((?:[ \t]+\w+\s*=.*\n?)+)", re.M)
LOCALRULE = re.compile(r"^\s*localrule:\s*True", re.M)


def rule_blocks() -> dict[str, tuple[Path, str]]:
    """Rule name -> (rule file, the rule's body), from every workflow/rules/*.smk and the
    Snakefile (rules inside `if`/`else` blocks included)."""
    blocks: dict[str, tuple[Path, str]] = {}
    for smk in [REPO / "Snakefile", *sorted(RULES.glob("*.smk"))]:
        text = smk.read_text()
        lines = text.splitlines()
        for m in RULE_HEADER.finditer(text):
            start = text.count("\n", 0, m.start())
            indent = len(m.group("indent").expandtabs())
            body = []
            for line in lines[start + 1:]:
                if line.strip() and len(line) - len(line.lstrip()) <= indent:
                    break
                body.append(line)
            blocks[m.group("name")] = (smk, "\n".join(body))
    return blocks


_LIST_RULES = r"""
import json, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings
with SnakemakeApi(OutputSettings()) as api:
    wf = api.workflow(resource_settings=ResourceSettings(),
                      config_settings=ConfigSettings(configfiles=[Path(sys.argv[1])],
                                                     config={"run": "rule_listing"}),
                      snakefile=Path("Snakefile"), workdir=Path("."))._workflow
    print(json.dumps([dict(
        name=r.name, snakefile=str(r.snakefile), env=r.conda_env, script=r.script,
        local=r.name in wf._localrules, norun=r.norun, log=bool(r.log),
        benchmark=bool(r.benchmark), params=bool(r.params), conda=bool(r.conda_env),
        resources=sorted(k for k in r.resources if not k.startswith("_")))
        for r in wf.rules]))
"""


@functools.cache
def parsed_rules(configfile: Path = TINY) -> tuple[dict, ...]:
    """The rules Snakemake itself builds from the Snakefile for a config (rules made in loops
    included; rules inside a config `if` only when that branch is taken)."""
    proc = subprocess.run([sys.executable, "-c", _LIST_RULES, str(configfile)], cwd=REPO,
                          text=True, capture_output=True, timeout=300)
    if proc.returncode != 0:
        raise AssertionError(f"the workflow does not parse:\n{proc.stderr[-3000:]}")
    return tuple(json.loads(proc.stdout.strip().splitlines()[-1]))


def job_rules() -> dict[str, dict]:
    """Rules that run a job (not aggregate targets): directives, conda env name, script path,
    whether local. The rules Snakemake builds for the tiny config, plus rules in other `if`
    branches of the rule files (read from the text)."""
    out: dict[str, dict] = {}
    for r in parsed_rules():
        if r["norun"]:
            continue  # an aggregate target such as `rule extract: input: ...`
        env = Path(r["env"]).stem if r["env"] else None
        directives = {k for k in ("log", "benchmark", "params", "conda") if r[k]}
        out[r["name"]] = {
            "file": Path(r["snakefile"]), "directives": directives, "env": env,
            "script": (Path(r["snakefile"]).parent / r["script"]).resolve() if r["script"]
            else None, "local": r["local"], "resources": set(r["resources"])}
    for name, (smk, body) in rule_blocks().items():
        directives = {m.group("name") for m in DIRECTIVE.finditer(body)}
        if name in out or not directives & {"script", "shell", "run", "notebook", "wrapper"}:
            continue
        env = CONDA_ENV.search(body)
        script = SCRIPT.search(body)
        res = RESOURCES.search(body)
        out[name] = {
            "file": smk,
            "directives": directives,
            "env": env.group("env") if env else None,
            "script": (smk.parent / script.group("path")).resolve() if script else None,
            "local": bool(LOCALRULE.search(body)),
            "resources": set(re.findall(r"^\s*(\w+)\s*=", res.group(1), re.M)) if res else set(),
        }
    return out


def snakemake(*args: str, env: dict[str, str] | None = None, timeout: float = 1200,
              check: bool = True) -> subprocess.CompletedProcess:
    """Run the venv's snakemake from the repo root; stdout and stderr together in .stdout."""
    full_env = dict(os.environ)
    full_env["PATH"] = f"{BIN}{os.pathsep}{full_env.get('PATH', '')}"
    full_env.setdefault("MPLBACKEND", "Agg")
    full_env.update(env or {})
    proc = subprocess.run([str(BIN / "snakemake"), *args], cwd=REPO, env=full_env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({proc.returncode}):\n"
                             + proc.stdout[-6000:])
    return proc


def job_table(output: str) -> dict[str, int]:
    """The `Job stats:` table of a snakemake run or dry-run: rule -> number of jobs ({} when
    nothing is to be done)."""
    counts: dict[str, int] = {}
    lines = output.splitlines()
    for i, line in enumerate(lines):
        if line.strip() == "Job stats:":
            for row in lines[i + 3:]:
                parts = row.split()
                if len(parts) != 2 or not parts[1].isdigit() or parts[0] == "total":
                    break
                counts[parts[0]] = counts.get(parts[0], 0) + int(parts[1])
            break
    return counts


def reasons(output: str) -> dict[str, list[str]]:
    """rule -> the `reason:` lines snakemake gives for its planned jobs (for error messages)."""
    out: dict[str, list[str]] = {}
    rule = None
    for line in output.splitlines():
        m = re.match(r"^(?:local)?(?:rule|checkpoint) (\w+):", line)
        if m:
            rule = m.group(1)
        elif rule and line.strip().startswith("reason:"):
            out.setdefault(rule, []).append(line.strip()[len("reason:"):].strip())
    return out


def plan(*args: str, env: dict[str, str] | None = None) -> tuple[dict[str, int], str]:
    """Dry-run (`snakemake -n`) with the given arguments: (job table, full output)."""
    proc = snakemake("-n", *args, env=env)
    return job_table(proc.stdout), proc.stdout


# The finished tiny run (the tiny config's own run name) is shared by the SLURM test (which makes
# it through SLURM, first: see the test order in the Makefile), the re-run tests and the other
# end-to-end tests. AVAE_TEST_TINY_RUN picks another run name (e.g. to leave results/tiny alone).
TINY_RUN = os.environ.get("AVAE_TEST_TINY_RUN") or yaml.safe_load(TINY.read_text())["run"]


def ensure_tiny_run() -> Path:
    """results/<TINY_RUN>, complete for the tiny config (a no-op when it already is)."""
    snakemake("--cores", "2", "--configfile", str(TINY), "--config", f"run={TINY_RUN}",
              timeout=1800)
    return REPO / "results" / TINY_RUN
