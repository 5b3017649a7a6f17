"""Defaults live only in workflow/schemas/: the filler equals Snakemake's own validator, no
config-mirroring dataclass or `.get(key, default)` restates a schema default, and no object in
the schemas restates its properties' defaults."""

from __future__ import annotations

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
