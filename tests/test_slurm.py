"""`snakemake --profile slurm`: the profiles, and the tiny pipeline run on a real SLURM cluster.

The profile checks need no cluster. The end-to-end test (marker `slurm`) needs a reachable SLURM
controller: it uses the one `sinfo` answers, or starts the one-node localhost cluster of
.ci/slurm-up.sh when it can (root, Debian's munge/slurmctld/slurmd/slurm-client installed; .ci/run
does both) and stops it afterwards; otherwise it is skipped, saying why.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
import yte
from workflow_helpers import REPO, TINY, TINY_RUN, job_rules, plan, snakemake

SLURM_PROFILE = REPO / "slurm" / "config.yaml"
DEFAULT_PROFILE = REPO / "profiles" / "default" / "config.yaml"
SITE_VARS = ("AVAE_SLURM_ACCOUNT", "AVAE_SLURM_PARTITION", "AVAE_SLURM_GPU_PARTITION",
             "AVAE_SLURM_JOBS", "AVAE_SLURM_STATUS_COMMAND")
RUN = TINY_RUN
SUBMITTED = re.compile(r"Job \d+ has been submitted with SLURM jobid (?P<id>\d+) "
                       r"\(log: (?P<log>\S+/rule_(?P<rule>\w+?)/\S*?\d+\.log)\)")


def render(path: Path, monkeypatch, **env: str) -> dict:
    """A profile as Snakemake reads it (YTE), with only the given AVAE_SLURM_* variables set."""
    for var in SITE_VARS:
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    with open(path) as fh:
        return yte.process_yaml(fh, require_use_yte=True)


def test_slurm_profile_reads_site_values_from_env(monkeypatch):
    bare = render(SLURM_PROFILE, monkeypatch)
    assert bare["executor"] == "slurm"
    assert bare["jobs"] == 100 and int(bare["latency-wait"]) >= 30
    assert not bare.get("default-resources"), "unset variables must add no sbatch options"
    assert "slurm-status-command" not in bare
    site = render(SLURM_PROFILE, monkeypatch, AVAE_SLURM_ACCOUNT="proj42",
                  AVAE_SLURM_PARTITION="cpu", AVAE_SLURM_JOBS="7",
                  AVAE_SLURM_STATUS_COMMAND="squeue")
    assert site["default-resources"] == {"slurm_account": "proj42", "slurm_partition": "cpu"}
    assert site["jobs"] == 7 and site["slurm-status-command"] == "squeue"
    # the workflow profile is applied after this one and replaces whole top-level keys
    shadowed = set(site) & set(render(DEFAULT_PROFILE, monkeypatch)) - {"__definitions__"}
    assert not shadowed, f"slurm/config.yaml keys {shadowed} are replaced by profiles/default"


def test_every_job_rule_has_threads_memory_runtime(monkeypatch):
    prof = render(DEFAULT_PROFILE, monkeypatch)
    threads, res = prof["set-threads"], prof["set-resources"]
    rules = job_rules()
    for rule in rules:
        assert rule in threads, f"profiles/default: set-threads lacks {rule}"
        have = set(res.get(rule, {})) | rules[rule]["resources"]  # the rule may size its memory
        assert {"mem_mb", "runtime"} <= have, \
            f"profiles/default: set-resources.{rule} needs mem_mb (unless the rule sets it) and " \
            "runtime"
    stale = (set(threads) | set(res)) - set(rules)
    assert not stale, f"profiles/default names rules that do not exist: {sorted(stale)}"
    assert res["train_model"]["gpu"] == 1 and "slurm_partition" not in res["train_model"]
    gpu = render(DEFAULT_PROFILE, monkeypatch, AVAE_SLURM_GPU_PARTITION="a100")
    assert gpu["set-resources"]["train_model"]["slurm_partition"] == "a100"
    assert render(DEFAULT_PROFILE, monkeypatch, AVAE_SLURM_PARTITION="cpu")[
        "set-resources"]["train_model"]["slurm_partition"] == "cpu"


def test_slurm_plan_carries_partitions_and_gpu():
    """Both profiles merged by Snakemake itself: what each planned job would ask sbatch for."""
    env = {v: "" for v in SITE_VARS} | {"AVAE_SLURM_PARTITION": "cpuq",
                                         "AVAE_SLURM_GPU_PARTITION": "gpuq"}
    _, out = plan("--profile", "slurm", "--configfile", str(TINY), "--config", f"run={RUN}_plan",
                  "--forceall", env=env)
    jobs = re.findall(r"^(?:local)?rule (\w+):\n(?:    .*\n)*?    resources: (.*)$", out, re.M)
    seen = {}
    for rule, resources in jobs:
        seen[rule] = dict(kv.split("=", 1) for kv in resources.split(", "))
    rules = job_rules()
    assert {r for r in rules if r in seen}, out[-3000:]
    for rule, res in seen.items():
        if rule not in rules:
            continue  # aggregate targets run nowhere
        assert res.get("runtime") and res.get("mem_mb"), f"{rule}: {res}"
        want = "gpuq" if rule == "train_model" else "cpuq"
        assert res.get("slurm_partition") == want, f"{rule}: {res}"
    assert seen["train_model"]["gpu"] == "1"


# ---------------------------------------------------------------- the real cluster

def _cluster_problem() -> str | None:
    """None when a SLURM controller answers with a usable node, else why not."""
    if not shutil.which("sinfo") or not shutil.which("sbatch"):
        return ("no SLURM client (sinfo/sbatch) installed; .ci/run installs Debian's munge "
                "slurmctld slurmd slurm-client and starts a one-node cluster (.ci/slurm-up.sh)")
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True,
                              timeout=20)
    except subprocess.TimeoutExpired:
        return "sinfo timed out: no SLURM controller reachable"
    if proc.returncode != 0:
        return f"no SLURM controller reachable: {proc.stderr.strip()[:200]}"
    if not re.search(r"^(idle|mixed|allocated)", proc.stdout, re.M):
        return f"no usable SLURM node (sinfo: {proc.stdout.split()})"
    return None


@pytest.fixture(scope="session")
def slurm_cluster():
    """A reachable SLURM cluster; started (and stopped again) here when none answers."""
    problem = _cluster_problem()
    started = False
    up = REPO / ".ci" / "slurm-up.sh"
    if problem and os.geteuid() == 0 and shutil.which("slurmctld") and shutil.which("munged"):
        proc = subprocess.run([str(up)], capture_output=True, text=True, timeout=180)
        started = proc.returncode == 0
        problem = _cluster_problem() if started else f"{up} failed: {proc.stderr[-500:]}"
    if problem:
        if os.environ.get("AVAE_REQUIRE_SLURM"):  # set by .ci/run: CI must run this test
            pytest.fail(f"AVAE_REQUIRE_SLURM is set but {problem}")
        pytest.skip(problem)
    yield
    if started:
        subprocess.run([str(REPO / ".ci" / "slurm-down.sh")], timeout=60, check=False)


def _partitions() -> set[str]:
    out = subprocess.run(["sinfo", "-h", "-o", "%R"], capture_output=True, text=True).stdout
    return set(out.split())


@pytest.mark.slow
@pytest.mark.slurm
def test_tiny_pipeline_through_slurm(slurm_cluster):
    shutil.rmtree(REPO / "results" / RUN, ignore_errors=True)
    # .ci/slurm-up.sh's cluster: a `gpu` partition (stand-in gres gpu:1), job records kept 1 h
    ours = "gpu" in _partitions()
    env = {v: "" for v in SITE_VARS} | ({"AVAE_SLURM_GPU_PARTITION": "gpu"} if ours else {})
    proc = snakemake("--profile", "slurm", "--configfile", str(TINY), "--config", f"run={RUN}",
                     "--slurm-status-command", "squeue",
                     "--slurm-init-seconds-before-status-checks", "2",
                     "--slurm-keep-successful-logs", env=env, timeout=1500)
    out = proc.stdout

    # every job that is not a local rule went through sbatch, and only those
    submitted = [m.groupdict() for m in SUBMITTED.finditer(out)]
    rules = job_rules()
    remote = {r for r in rules if not rules[r]["local"]}
    ran = {m.group(1) for m in re.finditer(r"^(?:local)?rule (\w+):", out, re.M)}
    assert {s["rule"] for s in submitted} == ran & remote, out[-4000:]
    assert not re.search(r"^localrule ({}):".format("|".join(remote)), out, re.M)
    for s in submitted:  # the job's own log, written by SLURM (sbatch --output)
        log = Path(s["log"])
        assert log.is_file() and "Finished jobid" in log.read_text(), s

    # SLURM's own record of the jobs: completed, and the training job in the GPU partition
    # holding a GPU
    ids = ",".join(s["id"] for s in submitted)
    states = subprocess.run(["squeue", "--states=all", "-h", "-j", ids, "-o", "%i|%T|%P"],
                            capture_output=True, text=True).stdout
    table = dict((line.split("|")[0], line.split("|")[1:]) for line in states.split())
    for s in submitted:
        if ours or s["id"] in table:  # elsewhere squeue may forget jobs (MinJobAge)
            assert table.get(s["id"], ["missing"])[0] == "COMPLETED", (s, table.get(s["id"]))
    for s in (s for s in submitted if s["rule"] == "train_model"):
        info = subprocess.run(["scontrol", "show", "job", "-o", s["id"]], capture_output=True,
                              text=True).stdout
        if ours or info:
            assert "gres:gpu:1" in info or "gres/gpu=1" in info, info
        if ours:
            assert "Partition=gpu " in info, info

    # the results: a trained model's metrics and the paper's table
    run_dir = REPO / "results" / RUN
    metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
    assert 0.0 <= metrics["macro_f1"] <= 1.0 and 0.0 <= metrics["accuracy"] <= 1.0
    assert metrics["per_class"] and all(0.0 <= v["f1"] <= 1.0
                                        for v in metrics["per_class"].values())
    assert (run_dir / "figures" / "table1.md").read_text().strip()
    # and a second invocation has nothing left to do
    again = snakemake("--profile", "slurm", "--configfile", str(TINY), "--config", f"run={RUN}",
                      "-n", env=env)
    assert "Nothing to be done" in again.stdout, again.stdout[-3000:]


def test_profile_yaml_is_plain_yaml():
    """Both profiles stay readable by any YAML parser (YTE expressions are strings)."""
    for path in (SLURM_PROFILE, DEFAULT_PROFILE):
        assert isinstance(yaml.safe_load(path.read_text()), dict)
