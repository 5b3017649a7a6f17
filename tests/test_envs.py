"""Static checks of the per-stage conda envs (there is no conda here to build them).

For every rule that runs a script, the rule file names its env (``conda: env("<stage>")``); every
third-party module that the script imports, directly or through the ``affinity_vae`` modules it
imports (followed transitively with ``ast``), must be provided by ``envs/<stage>.yaml``, and every
env file must be a pinned conda environment file.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest
import yaml
from workflow_helpers import job_rules

REPO = Path(__file__).resolve().parents[1]
ENVS = REPO / "envs"
LIB = "affinity_vae"

# import name -> the conda or pip package names that provide it
PROVIDERS: dict[str, set[str]] = {
    "sklearn": {"scikit-learn"},
    "skimage": {"scikit-image"},
    "yaml": {"pyyaml"},
    "topaz": {"topaz-em"},
    "umap": {"umap-learn"},
    "torch": {"pytorch", "torch", "pytorch-cpu", "pytorch-gpu"},
    "matplotlib": {"matplotlib", "matplotlib-base"},
    "PIL": {"pillow"},
    "cv2": {"opencv", "opencv-python", "opencv-python-headless"},
    "mpl_toolkits": {"matplotlib", "matplotlib-base"},
    "pkg_resources": {"setuptools"},
    "pyarrow": {"pyarrow", "arrow"},
    "jinja2": {"jinja2"},
    "Bio": {"biopython"},
    "dateutil": {"python-dateutil"},
}
# packages a module needs without importing them (pandas parquet I/O needs pyarrow)
IMPLICIT: dict[str, tuple[re.Pattern[str], str]] = {
    "pyarrow": (re.compile(r"\b(to_parquet|read_parquet)\s*\("), "pyarrow"),
}
PINNED_CONDA = re.compile(r"^[A-Za-z0-9_.\-]+\s*==?\s*[0-9][^\s]*$")
PINNED_PIP = re.compile(r"^[A-Za-z0-9_.\-\[\]]+\s*==\s*[0-9][^\s]*$")


def _guarded(tree: ast.AST) -> set[int]:
    """ids of import nodes under `if TYPE_CHECKING:` or in a `try` that catches ImportError."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        body: list[ast.stmt] = []
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            body = node.body
        elif isinstance(node, ast.Try) and any(
            h.type is not None and re.search(r"ImportError|ModuleNotFoundError",
                                             ast.unparse(h.type))
            for h in node.handlers
        ):
            body = node.body
        for stmt in body:
            skip.update(id(n) for n in ast.walk(stmt))
    return skip


def _module_file(module: str) -> Path | None:
    """The file of an affinity_vae module (`a.b` -> a/b.py or a/b/__init__.py), if it exists."""
    base = REPO.joinpath(*module.split("."))
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def _module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path) -> tuple[set[str], set[str]]:
    """(top-level third-party names, affinity_vae module names) that a file imports."""
    tree = ast.parse(path.read_text(), filename=str(path))
    skip = _guarded(tree)
    is_pkg = path.name == "__init__.py"
    here = _module_name(path) if path.is_relative_to(REPO / LIB) else ""
    package = here if is_pkg else here.rpartition(".")[0]
    third, local = set(), set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
            targets = names
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            names = [mod]
            # `from affinity_vae.io import mrc` imports the submodule affinity_vae.io.mrc
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
        else:
            continue
        for name in targets:
            top = name.split(".")[0]
            if top == LIB:
                if _module_file(name):
                    local.add(name)
            elif name in names and top and top not in sys.stdlib_module_names \
                    and top != "__future__":
                third.add(top)
    return third, local


def import_closure(script: Path) -> tuple[set[str], list[Path]]:
    """Third-party imports of a script and every affinity_vae module it reaches (with parents)."""
    third: set[str] = set()
    seen: set[Path] = set()
    todo = [script]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        t, local = imports_of(path)
        third |= t
        for mod in local:
            parts = mod.split(".")
            for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__, a/b/__init__
                f = _module_file(".".join(parts[:i]))
                if f and f not in seen:
                    todo.append(f)
    for path in seen:
        text = path.read_text()
        for pkg, (pattern, _) in IMPLICIT.items():
            if pattern.search(text):
                third.add(pkg)
    return third, sorted(seen)


def env_packages(env_file: Path) -> tuple[dict, set[str]]:
    """(parsed env file, lower-case names of every conda and pip package it lists)."""
    data = yaml.safe_load(env_file.read_text())
    names: set[str] = set()
    for dep in data.get("dependencies") or []:
        if isinstance(dep, str):
            names.add(re.split(r"[=<>~!\s\[]", dep.split("::")[-1], maxsplit=1)[0].lower())
        elif isinstance(dep, dict):
            for spec in dep.get("pip", []):
                names.add(re.split(r"[=<>~!\s\[]", spec, maxsplit=1)[0].lower())
    return data, names


def provided(import_name: str, packages: set[str]) -> bool:
    cands = PROVIDERS.get(import_name, set()) | {
        import_name.lower(), import_name.lower().replace("_", "-")}
    return bool(cands & packages)


JOB_RULES = job_rules()
ENV_FILES = sorted(ENVS.glob("*.yaml"))


def test_rules_found():
    assert JOB_RULES, "no rules with script:/shell: found in workflow/rules/*.smk"


@pytest.mark.parametrize("rule", sorted(JOB_RULES))
def test_rule_has_env_log_benchmark_params(rule):
    info = JOB_RULES[rule]
    missing = {"conda", "log", "benchmark", "params"} - info["directives"]
    assert not missing, f"rule {rule} ({info['file'].name}) lacks {sorted(missing)}"
    assert info["env"], f"rule {rule}: conda: must be env(\"<stage>\")"
    assert (ENVS / f"{info['env']}.yaml").is_file(), f"rule {rule}: envs/{info['env']}.yaml missing"


@pytest.mark.parametrize("rule", sorted(r for r in JOB_RULES if JOB_RULES[r]["script"]))
def test_env_provides_every_import(rule):
    info = JOB_RULES[rule]
    script: Path = info["script"]
    assert script.is_file(), f"rule {rule}: script {script} missing"
    third, files = import_closure(script)
    env_file = ENVS / f"{info['env']}.yaml"
    _, packages = env_packages(env_file)
    missing = sorted(m for m in third if not provided(m, packages))
    assert not missing, (
        f"rule {rule}: envs/{env_file.name} lacks {missing}, imported by "
        f"{[str(f.relative_to(REPO)) for f in files]}")


@pytest.mark.parametrize("env_file", ENV_FILES, ids=lambda p: p.name)
def test_env_file_is_pinned_conda_env(env_file):
    data, _ = env_packages(env_file)
    assert isinstance(data, dict), f"{env_file.name}: not a YAML mapping"
    assert set(data) <= {"name", "channels", "dependencies"}, f"{env_file.name}: extra keys"
    assert isinstance(data.get("name"), str) and data["name"], f"{env_file.name}: no name"
    channels = data.get("channels")
    assert isinstance(channels, list) and channels and all(isinstance(c, str) for c in channels)
    assert "defaults" not in channels, f"{env_file.name}: use conda-forge, not defaults"
    deps = data.get("dependencies")
    assert isinstance(deps, list) and deps, f"{env_file.name}: no dependencies"
    pip_sections = [d for d in deps if isinstance(d, dict)]
    conda_specs = [d for d in deps if isinstance(d, str)]
    assert len(conda_specs) + len(pip_sections) == len(deps)
    assert any(re.match(r"^python\s*=", d) for d in conda_specs), f"{env_file.name}: pin python"
    for spec in conda_specs:
        assert spec == "pip" or PINNED_CONDA.match(spec), f"{env_file.name}: {spec!r} not pinned"
    for section in pip_sections:
        assert set(section) == {"pip"}, f"{env_file.name}: unknown section {section}"
        assert "pip" in conda_specs or any(s.startswith("pip=") for s in conda_specs), (
            f"{env_file.name}: a pip: section needs pip in the conda dependencies")
        for spec in section["pip"]:
            assert PINNED_PIP.match(spec), f"{env_file.name}: pip {spec!r} not pinned (==)"
    names = [re.split(r"[=<>~!\s]", s, maxsplit=1)[0] for s in conda_specs]
    assert len(names) == len(set(names)), f"{env_file.name}: duplicate packages"


def test_every_env_file_is_used():
    used = {info["env"] for info in JOB_RULES.values()}
    unused = sorted(p.stem for p in ENV_FILES if p.stem not in used)
    assert not unused, f"envs {unused} are not used by any rule"


def test_conda_jobs_see_the_library():
    """Under --software-deployment-method conda Snakemake drops PYTHONPATH unless told not to;
    the workflow profile keeps it, so `import affinity_vae` works in every env."""
    profile = yaml.safe_load((REPO / "profiles" / "default" / "config.yaml").read_text())
    assert profile.get("conda-not-block-search-path-envvars") is True


def test_closure_follows_library_imports(tmp_path, monkeypatch):
    """The import walker itself: relative imports, submodules, guarded optional imports."""
    pkg = tmp_path / LIB / "sub"
    pkg.mkdir(parents=True)
    (tmp_path / LIB / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("from .inner import f\n")
    (pkg / "inner.py").write_text(
        "import numpy as np\nfrom typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import torch\n"
        "try:\n    import numba\nexcept ImportError:\n    numba = None\n"
        "def f(df):\n    import sklearn.metrics\n    return df.to_parquet('x')\n")
    script = tmp_path / "s.py"
    script.write_text("import os\nfrom affinity_vae.sub import f\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    third, files = import_closure(script)
    assert third == {"numpy", "sklearn", "pyarrow"}
    assert {f.name for f in files} == {"s.py", "__init__.py", "inner.py"}
    assert provided("sklearn", {"scikit-learn"}) and not provided("sklearn", {"numpy"})
