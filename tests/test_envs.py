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


class Closure:
    """What one rule's job imports: the script's module-level imports, then (transitively) every
    affinity_vae module it loads (their module-level code runs on import) and every function it
    can reach from the script by name (their function-level, lazy imports run when called).
    Each rule has its own entry function (no dispatch on the rule's name), so rules of one stage
    with different envs have different scripts."""

    def __init__(self, rule: str):
        self.rule = rule
        self.third: set[str] = set()
        self.files: set[Path] = set()
        self._loaded: set[str] = set()
        self._visited: set[tuple[str, str]] = set()
        self._trees: dict[Path, ast.Module] = {}
        self._names: dict[str, dict[str, tuple[str, str | None]]] = {}

    # -- modules
    def _tree(self, path: Path) -> ast.Module:
        if path not in self._trees:
            self._trees[path] = ast.parse(path.read_text(), filename=str(path))
        return self._trees[path]

    def _resolve(self, modname: str, is_pkg: bool, node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        base = modname.split(".") if is_pkg else modname.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        return ".".join(base + ([node.module] if node.module else []))

    def _imports(self, node, modname: str, is_pkg: bool, names: dict) -> None:
        """Record one import statement: third-party names, affinity_vae modules to load, and
        the local names it binds (name -> (module, attribute or None for a module))."""
        if isinstance(node, ast.Import):
            for a in node.names:
                top = a.name.split(".")[0]
                if top == LIB:
                    self.load(a.name)
                    if a.asname:
                        names[a.asname] = (a.name, None)
                elif top not in sys.stdlib_module_names:
                    self.third.add(top)
        elif isinstance(node, ast.ImportFrom):
            mod = self._resolve(modname, is_pkg, node)
            top = mod.split(".")[0]
            if top == LIB:
                self.load(mod)
                for a in node.names:
                    sub = f"{mod}.{a.name}"
                    if _module_file(sub):  # `from affinity_vae.io import mrc`: a submodule
                        self.load(sub)
                        names[a.asname or a.name] = (sub, None)
                    else:
                        names[a.asname or a.name] = (mod, a.name)
            elif top and top != "__future__" and top not in sys.stdlib_module_names:
                self.third.add(top)

    def load(self, modname: str, path: Path | None = None) -> None:
        """Import a module: its parents' and its own module-level code."""
        if modname in self._loaded:
            return
        self._loaded.add(modname)
        parts = modname.split(".")
        for i in range(1, len(parts)):
            self.load(".".join(parts[:i]))
        path = path or _module_file(modname)
        if path is None:
            return
        self.files.add(path)
        tree = self._tree(path)
        skip = _guarded(tree)
        names: dict[str, tuple[str, str | None]] = {}
        self._names[modname] = names
        is_pkg = path.name == "__init__.py"
        todo = list(tree.body)
        while todo:  # module level, class bodies included, function bodies not
            node = todo.pop(0)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if id(node) in skip:
                continue
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                self._imports(node, modname, is_pkg, names)
            else:
                todo.extend(ast.iter_child_nodes(node))

    # -- functions
    def _defs(self, modname: str) -> dict[str, ast.AST]:
        path = _module_file(modname)
        if path is None:
            return {}
        return {n.name: n for n in self._tree(path).body
                if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}

    def visit(self, modname: str, name: str) -> None:
        """Everything calling ``modname.name`` can run (a function, or a class's methods)."""
        if (modname, name) in self._visited:
            return
        self._visited.add((modname, name))
        self.load(modname)
        node = self._defs(modname).get(name)
        if node is None:  # a name the module imported from another affinity_vae module
            target = self._names.get(modname, {}).get(name)
            if target and target[1]:
                self.visit(*target)
            return
        bodies = [node] if not isinstance(node, ast.ClassDef) else [
            n for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        path = _module_file(modname)
        for fn in bodies:
            local: dict[str, tuple[str, str | None]] = {}
            skip = _guarded(fn)
            for stmt in fn.body:
                for sub in ast.walk(stmt):
                    if id(sub) in skip:
                        continue
                    if isinstance(sub, (ast.Import, ast.ImportFrom)):
                        self._imports(sub, modname, path.name == "__init__.py", local)
            for stmt in fn.body:
                self._follow(stmt, modname, local)

    def _follow(self, stmt: ast.AST, modname: str, local: dict) -> None:
        """Visit every affinity_vae function or class a statement refers to by name."""
        defs = self._defs(modname)
        names = {**self._names.get(modname, {}), **local}
        for sub in ast.walk(stmt):
            if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Attribute) \
                    and sub.func.attr in ("to_parquet", "read_parquet"):
                self.third.add("pyarrow")  # pandas parquet I/O needs pyarrow, unimported
            if isinstance(sub, ast.Name):
                if sub.id in defs:
                    self.visit(modname, sub.id)
                elif sub.id in names:
                    mod, attr = names[sub.id]
                    if attr:
                        self.visit(mod, attr)
            elif isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Name):
                target = names.get(sub.value.id)
                if target and target[1] is None:  # module.function
                    self.visit(target[0], sub.attr)

    def script(self, path: Path) -> Closure:
        """Run a rule's script: its imports, and whatever it calls at module level."""
        name = "__script__"
        self.load(name, path)
        tree = self._tree(path)
        for stmt in tree.body:
            if not isinstance(stmt, (ast.Import, ast.ImportFrom)):
                self._follow(stmt, name, {})
        return self


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
    found = Closure(rule).script(script)
    third, files = found.third, sorted(found.files)
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


def test_envs_agree_on_versions():
    """A package pinned in several envs has the same version everywhere (and python too)."""
    versions: dict[str, dict[str, str]] = {}
    for env_file in ENV_FILES:
        data, _ = env_packages(env_file)
        for dep in data.get("dependencies") or []:
            specs = dep.get("pip", []) if isinstance(dep, dict) else [dep]
            for spec in specs:
                m = re.match(r"^([A-Za-z0-9_.\-]+)\s*==?\s*(\S+)", spec)
                if m:
                    versions.setdefault(m.group(1).lower(), {})[env_file.name] = m.group(2)
    clashes = {pkg: v for pkg, v in versions.items() if len(set(v.values())) > 1}
    assert not clashes, f"different pins across envs: {clashes}"


def test_envs_pin_the_versions_the_venv_is_tested_with():
    """The conda envs hold the versions of pyproject.toml's pins (what the tests run with)."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = {m.group(1).lower(): m.group(2) for m in
            (re.match(r"^([A-Za-z0-9_.\-]+)==(\S+)", d.split(";")[0].strip()) for d in project)
            if m}
    conda_to_pypi = {"pytorch": "torch", "matplotlib-base": "matplotlib"}
    wrong = []
    for env_file in ENV_FILES:
        data, _ = env_packages(env_file)
        for dep in data.get("dependencies") or []:
            for spec in (dep.get("pip", []) if isinstance(dep, dict) else [dep]):
                m = re.match(r"^([A-Za-z0-9_.\-]+)\s*==?\s*(\S+)", spec)
                if not m:
                    continue
                name = conda_to_pypi.get(m.group(1).lower(), m.group(1).lower())
                if name in pins and pins[name] != m.group(2):
                    wrong.append(f"{env_file.name}: {spec} (pyproject.toml: {pins[name]})")
    assert not wrong, wrong


def test_every_env_file_is_used():
    used = {info["env"] for info in JOB_RULES.values()}
    unused = sorted(p.stem for p in ENV_FILES if p.stem not in used)
    assert not unused, f"envs {unused} are not used by any rule"


def test_conda_jobs_see_the_library():
    """Under --software-deployment-method conda Snakemake drops PYTHONPATH unless told not to;
    the workflow profile keeps it, so `import affinity_vae` works in every env."""
    profile = yaml.safe_load((REPO / "profiles" / "default" / "config.yaml").read_text())
    assert profile.get("conda-not-block-search-path-envvars") is True


def test_closure_follows_what_a_rule_runs(tmp_path, monkeypatch):
    """The import walker itself: module-level imports of every module loaded, lazy imports only
    in functions the script reaches (each rule's script its own entry function), guarded
    optional imports skipped, parquet I/O needing pyarrow."""
    pkg = tmp_path / LIB / "sub"
    pkg.mkdir(parents=True)
    (tmp_path / LIB / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("from .inner import main, main_a\n")
    (pkg / "inner.py").write_text(
        "import numpy as np\nfrom typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import torch\n"
        "try:\n    import numba\nexcept ImportError:\n    numba = None\n"
        "from . import helpers\n"
        "def unused():\n    import umap\n"
        "def main(smk):\n"
        "    import sklearn.metrics\n    helpers.write(smk)\n"
        "def main_a(smk):\n    import scipy.ndimage\n")
    (pkg / "helpers.py").write_text(
        "import pandas as pd\ndef write(df):\n    df.to_parquet('x')\n"
        "def other():\n    import gemmi\n")
    script, script_a = tmp_path / "s.py", tmp_path / "s_a.py"
    script.write_text("import os\nfrom affinity_vae.sub import main\nrun(snakemake, main)\n")
    script_a.write_text("from affinity_vae.sub import main_a\nrun(snakemake, main_a)\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    a = Closure("rule_a").script(script_a)
    b = Closure("rule_b").script(script)
    assert a.third == {"numpy", "pandas", "scipy"}
    assert b.third == {"numpy", "pandas", "sklearn", "pyarrow"}
    assert {f.name for f in b.files} == {"s.py", "__init__.py", "inner.py", "helpers.py"}
    assert provided("sklearn", {"scikit-learn"}) and not provided("sklearn", {"numpy"})
