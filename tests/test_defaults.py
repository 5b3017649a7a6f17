"""Defaults live only in workflow/schemas/: the filler equals Snakemake's own validator, no
config-mirroring dataclass or `.get(key, default)` restates a schema default, and no object in
the schemas restates its properties' defaults."""

from __future__ import annotations

import ast
import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from affinity_vae.config import (
    CONFIG_SCHEMA,
    coerce_strings,
    fill_defaults,
    schema_defaults,
)

REPO = Path(__file__).resolve().parents[1]
SCHEMAS = REPO / "workflow" / "schemas"
SHIPPED = sorted([*REPO.glob("config/*.yaml"), *REPO.glob("config/paper/*.yaml"),
                  *REPO.glob("tests/configs/**/*.yaml")])


def _load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text()) or {}


def _recipe_filled(config: dict[str, Any]) -> dict[str, Any]:
    """The filling of snakemake.utils.validate(config, schema, set_default=True): jsonschema's
    FAQ recipe ("properties" also sets each missing property's default), here with a registry
    that lets the section files be validated by the extended class too."""
    import jsonschema
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    base = jsonschema.Draft202012Validator
    props = base.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):  # as in snakemake.utils
        for prop, sub in properties.items():
            if "default" in sub:
                instance.setdefault(prop, copy.deepcopy(sub["default"]))
        yield from props(validator, properties, instance, schema)

    def retrieve(uri: str) -> Resource:
        contents = yaml.safe_load((SCHEMAS / uri.rsplit("/", 1)[-1]).read_text())
        contents.pop("$schema", None)  # else jsonschema validates it with the plain class
        return Resource.from_contents(contents, default_specification=DRAFT202012)

    out = copy.deepcopy(config)
    extended = jsonschema.validators.extend(base, {"properties": set_defaults})
    extended(yaml.safe_load(CONFIG_SCHEMA.read_text()),
             registry=Registry(retrieve=retrieve)).validate(out)
    return out


def _snakemake_filled(config: dict[str, Any]) -> dict[str, Any]:
    from snakemake.utils import validate

    out = copy.deepcopy(config)
    validate(out, str(CONFIG_SCHEMA), set_default=True)
    return out


def _contained(small: Any, big: Any) -> bool:
    if isinstance(small, dict):
        return isinstance(big, dict) and all(k in big and _contained(v, big[k])
                                             for k, v in small.items())
    return small == big


@pytest.mark.parametrize("path", SHIPPED + [None], ids=lambda p: "empty" if p is None else
                         str(p.relative_to(REPO)))
def test_filler_equals_snakemakes_validator(path):
    """fill_defaults fills exactly what Snakemake's set_default recipe fills, on every shipped
    config (and on none: all defaults). snakemake.utils.validate itself stops at the section
    files (jsonschema hands a sub-schema that names its $schema to the plain Draft 2020-12
    class, and Snakemake's retriever refuses one that does not), so what it fills is checked
    to be a part of ours, with the same values."""
    config = _load(path) if path is not None else {}
    coerce_strings(config, CONFIG_SCHEMA)
    ours = copy.deepcopy(config)
    fill_defaults(ours, CONFIG_SCHEMA)
    assert ours == _recipe_filled(config)
    assert _contained(_snakemake_filled(config), ours)


def test_partial_nested_sections_are_filled_key_by_key():
    """A schedule or a pose_consistency block with one key keeps the others' defaults (they
    were merged by train.py's own copy of the defaults before)."""
    full = schema_defaults("train")
    part = schema_defaults("train", {"beta": {"max": 0.5}, "pose_consistency": {"weight": 1}})
    assert part["beta"] == {**full["beta"], "max": 0.5}
    assert part["pose_consistency"] == {**full["pose_consistency"], "weight": 1}
    assert part["gamma"] == full["gamma"]


def test_schema_defaults_does_not_modify_its_argument():
    given = {"epochs": 3}
    assert schema_defaults("train", given)["epochs"] == 3
    assert given == {"epochs": 3}
    with pytest.raises(KeyError):
        schema_defaults("no_such_section")


def _objects(node: Any, where: str):
    """(key path, schema) of every sub-schema in a schema file."""
    if isinstance(node, dict):
        yield where, node
        for k, v in node.items():
            yield from _objects(v, f"{where}.{k}" if where else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _objects(v, f"{where}[{i}]")


@pytest.mark.parametrize("path", sorted(SCHEMAS.glob("*.schema.yaml")), ids=lambda p: p.name)
def test_no_object_default_restates_its_properties(path):
    """An object's default is {} when its properties carry defaults (each default is written
    once, next to its key; the filler fills the rest key by key)."""
    for where, node in _objects(_load(path), ""):
        props = node.get("properties")
        if not isinstance(props, dict) or not isinstance(node.get("default"), dict):
            continue
        restated = [k for k in node["default"] if "default" in props.get(k, {})]
        assert not restated, f"{path.name} {where}: default restates {restated}"


# ------------------------------------------------------------------ no default restated in code
def _sections() -> dict[str, set[str]]:
    """Key path of every object in the schemas (e.g. simulate, dataset.copick) -> its keys."""
    top = _load(CONFIG_SCHEMA)["properties"]
    out: dict[str, set[str]] = {}
    for section, sub in top.items():
        if "$ref" not in sub:
            continue
        for where, node in _objects(_load(SCHEMAS / sub["$ref"]), ""):
            props = node.get("properties")
            if isinstance(props, dict) and all(isinstance(v, dict) for v in props.values()):
                path = ".".join(p for p in where.split(".") if p != "properties")
                out[f"{section}.{path}" if path else section] = set(props)
    return out


def _dataclass_defaults() -> list[tuple[str, str, list[tuple[str, bool]]]]:
    """(file, class, [(field, has a default)]) of every @dataclass in affinity_vae/."""
    out = []
    for path in sorted(REPO.glob("affinity_vae/**/*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ClassDef) or not any(
                    "dataclass" in ast.unparse(d) for d in node.decorator_list):
                continue
            fields = [(f.target.id, f.value is not None) for f in node.body
                      if isinstance(f, ast.AnnAssign) and isinstance(f.target, ast.Name)]
            out.append((str(path.relative_to(REPO)), node.name, fields))
    return out


def test_dataclasses_mirroring_a_config_section_have_no_defaults():
    """A dataclass with three or more fields named like the keys of one config section (the
    Settings of extract, denoise, simulate, dataset.copick, the simulated microscope, ...)
    mirrors that section: none of those fields has a default (the schema's is the one)."""
    sections = _sections()
    mirrors, bad = [], []
    for rel, name, fields in _dataclass_defaults():
        names = {f for f, _ in fields}
        for section, keys in sections.items():
            if len(names & keys) >= 3:
                mirrors.append(f"{name}~{section}")
                bad += [f"{rel} {name}.{f} (config key {section}.{f})"
                        for f, has in fields if has and f in keys]
    assert bad == []
    # the check sees the config-mirroring classes it is meant for
    assert {"Settings~extract", "Settings~denoise", "Settings~simulate",
            "CopickSettings~dataset.copick", "Microscope~simulate"} <= set(mirrors)


def _schema_defaults_by_key() -> dict[str, list[Any]]:
    """Property name -> the defaults the schemas give it (any section, any depth)."""
    out: dict[str, list[Any]] = {}
    for path in SCHEMAS.glob("*.schema.yaml"):
        for _, node in _objects(_load(path), ""):
            for key, sub in (node.get("properties") or {}).items():
                if isinstance(sub, dict) and "default" in sub:
                    out.setdefault(key, []).append(sub["default"])
    return out


#: `.get("<schema key>", <literal>)` calls that are not on a config section: (file, key) -> why.
NOT_CONFIG = {
    ("affinity_vae/figures.py", "groups"): "metrics.json's per-model group F1 scores",
    ("affinity_vae/figures.py", "tm"): "the rule's named inputs (smk.input), an optional file",
}


def _literal(node: ast.AST) -> tuple[bool, Any]:
    try:
        return True, ast.literal_eval(node)
    except (ValueError, SyntaxError, TypeError):
        return False, None


def _restated_defaults() -> list[str]:
    """`x.get("k", <literal>)` and `x.get("k") or <literal>` in affinity_vae/ and scripts/
    where k is a schema property that has a default (the code should read cfg["k"])."""
    keys = _schema_defaults_by_key()
    found = {}
    for path in sorted([*REPO.glob("affinity_vae/**/*.py"), *REPO.glob("scripts/*.py")]):
        rel = str(path.relative_to(REPO))
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.BoolOp) and isinstance(node.op, ast.Or):
                call, fallback = node.values[0], node.values[1]
            elif isinstance(node, ast.Call) and len(node.args) == 2:
                call, fallback = node, node.args[1]
            else:
                continue
            if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
                    and call.func.attr == "get" and call.args
                    and isinstance(call.args[0], ast.Constant)
                    and isinstance(call.args[0].value, str)):
                continue
            key = call.args[0].value
            is_literal, value = _literal(fallback)
            if key not in keys or not is_literal:
                continue
            same = "restates" if value in keys[key] else "contradicts"
            found[(rel, key, call.lineno)] = (
                f"{rel}:{call.lineno}: .get({key!r}, {value!r}) {same} the schema default "
                f"{keys[key][0]!r} -- read the validated config")
    return found


def test_no_config_get_restates_a_schema_default():
    """No `.get("<schema key>", <literal>)` outside the allow-list NOT_CONFIG (each entry: a
    dict that is not a config section, with the reason), and no stale allow-list entry."""
    found = _restated_defaults()
    assert [m for (rel, key, _), m in found.items() if (rel, key) not in NOT_CONFIG] == []
    assert set(NOT_CONFIG) <= {(rel, key) for rel, key, _ in found}
