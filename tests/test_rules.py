"""How rules reach the library and where their sizes live (static checks, seconds).

- One entry point per rule: every rule's script calls ``run(snakemake, <function>)`` with one
  named function, and no code decides what to do from the rule's name (a renamed rule would
  silently take the other branch).
- Threads and resources in one place: profiles/default/config.yaml (used locally and, under
  slurm/config.yaml, on SLURM) sets every job rule's threads; no rule sets ``threads:``; a
  resource is set by the rule or by the profile, never both.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yte
from workflow_helpers import REPO, job_rules, rule_blocks

PROFILE = REPO / "profiles" / "default" / "config.yaml"
JOB_RULES = job_rules()
#: resources a rule may size itself, from its inputs (the profile then leaves them out)
SIZED_IN_RULE = {"mem_mb"}


def _profile(monkeypatch) -> dict:
    for var in ("AVAE_SLURM_PARTITION", "AVAE_SLURM_GPU_PARTITION"):
        monkeypatch.delenv(var, raising=False)
    with open(PROFILE) as fh:
        return yte.process_yaml(fh, require_use_yte=True)


def _rule_name_tests(path: Path) -> list[str]:
    """Comparisons in a Python file that read an attribute ``rule`` (``smk.rule == ...``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    hits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            parts = [node.left, *node.comparators]
            if any(isinstance(p, ast.Attribute) and p.attr == "rule" for p in parts):
                hits.append(f"{path.relative_to(REPO)}:{node.lineno}: {ast.unparse(node)}")
    return hits


def test_no_code_branches_on_the_rule_name():
    files = [*sorted((REPO / "affinity_vae").rglob("*.py")),
             *sorted((REPO / "scripts").glob("*.py"))]
    hits = [h for f in files for h in _rule_name_tests(f)]
    assert not hits, "dispatch on the rule's name (give each rule its own entry function):\n" \
        + "\n".join(hits)


def test_rule_name_check_finds_a_dispatch(tmp_path, monkeypatch):
    """The check itself sees the pattern it forbids."""
    f = tmp_path / "x.py"
    f.write_text("def main(smk):\n    if smk.rule == 'a':\n        return 1\n")
    monkeypatch.setattr(f"{__name__}.REPO", tmp_path)
    assert len(_rule_name_tests(f)) == 1


@pytest.mark.parametrize("rule", sorted(r for r in JOB_RULES if JOB_RULES[r]["script"]))
def test_script_calls_one_named_entry(rule):
    """scripts/<stage>.py or scripts/<stage>_<part>.py: ``run(snakemake, <entry>)`` once."""
    script = JOB_RULES[rule]["script"]
    tree = ast.parse(script.read_text())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)
             and isinstance(n.func, ast.Name) and n.func.id == "run"]
    assert len(calls) == 1, f"{script.name}: one run(snakemake, entry) call"
    args = calls[0].args
    assert len(args) == 2 and ast.unparse(args[0]) == "snakemake" \
        and isinstance(args[1], ast.Name), f"{script.name}: run(snakemake, <function name>)"


def test_rules_set_no_threads():
    blocks = rule_blocks()
    with_threads = sorted(r for r in JOB_RULES if r in blocks
                          and re.search(r"^\s*threads:", blocks[r][1], re.MULTILINE))
    assert not with_threads, (f"rules {with_threads} set threads: -- set them in "
                              f"profiles/default/config.yaml set-threads only")


def test_every_job_rule_has_one_source_of_threads_and_resources(monkeypatch):
    prof = _profile(monkeypatch)
    threads, res = prof["set-threads"], prof["set-resources"]
    assert set(threads) == set(JOB_RULES), \
        f"set-threads must name exactly the job rules: {set(threads) ^ set(JOB_RULES)}"
    for rule, info in JOB_RULES.items():
        in_rule = info["resources"] & (SIZED_IN_RULE | {"runtime", "gpu", "disk_mb", "mem_mib"})
        in_profile = set(res.get(rule, {}))
        assert in_rule <= SIZED_IN_RULE, f"{rule}: rule sets {in_rule - SIZED_IN_RULE}"
        assert not in_rule & in_profile, f"{rule}: {in_rule & in_profile} set twice"
        assert {"mem_mb", "runtime"} <= in_rule | in_profile, f"{rule}: needs mem_mb and runtime"


# ------------------------------------------------------------ rule helpers in their own file
RULES_DIR = REPO / "workflow" / "rules"
DEF = re.compile(r"^def (\w+)\(", re.MULTILINE)
INCLUDE = re.compile(r"^include:\s*[\"'](?P<path>[^\"']+)[\"']", re.MULTILINE)
#: files that may use other stages' helpers: common.smk (the targets of `all`, called after
#: every include) and the report stage, which draws the evaluation's outputs (the evaluate
#: stage's, whose helpers evaluate_functions.smk holds, and the template-matching baseline's);
#: and evaluate, whose target rule `evaluate` includes the template-matching baseline
SHARED = {"report.smk": {"evaluate_functions.smk", "template_match_functions.smk"},
          "evaluate.smk": {"template_match_functions.smk"}}


def _defs() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(rule file name -> the functions it defines, rule file name -> the files it includes)."""
    defs, includes = {}, {}
    for smk in sorted(RULES_DIR.glob("*.smk")):
        text = smk.read_text()
        defs[smk.name] = set(DEF.findall(text))
        includes[smk.name] = {Path(m.group("path")).name for m in INCLUDE.finditer(text)}
    return defs, includes


def test_a_stage_uses_only_its_own_and_the_common_helpers():
    """A rule file that used another stage's input functions would work only while that file
    is included first (predict's helpers once lived in evaluate_functions.smk)."""
    defs, includes = _defs()
    problems = []
    for name in defs:
        if name == "common.smk":
            continue
        text = (RULES_DIR / name).read_text()
        mine = {name, "common.smk"} | includes[name] | SHARED.get(name, set())
        for other, funcs in defs.items():
            if other in mine:
                continue
            used = sorted(f for f in funcs if re.search(rf"\b{f}\b", text))
            if used:
                problems.append(f"{name} uses {used} of {other}")
    assert not problems, "move the helpers to the stage that uses them or to common.smk:\n" \
        + "\n".join(problems)
