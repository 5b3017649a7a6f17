"""Config validation against the JSON schema, with one-line errors naming the key.

Used by the Snakefile before any job is planned. Defaults live in the schema files
(``workflow/schemas/*.schema.yaml``) and are filled in here.
"""

from __future__ import annotations

import copy
import functools
import math
import reprlib
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from affinity_vae.errors import InputError


@functools.cache
def _load_schema(path: Path) -> dict[str, Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when available
    return yaml.load(path.read_text(), Loader=loader)


def _schema(path: Path) -> dict[str, Any]:
    """A schema file, parsed once per process (a fresh copy: callers may modify it)."""
    return copy.deepcopy(_load_schema(Path(path).resolve()))


def _registry(schema_dir: Path) -> Registry:
    def retrieve(uri: str) -> Resource:
        name = uri.rsplit("/", 1)[-1]
        contents = _schema(schema_dir / name)
        # Without "$schema" the sub-schema is validated by the caller's (extended) class.
        contents.pop("$schema", None)
        return Resource.from_contents(contents, default_specification=DRAFT202012)

    return Registry(retrieve=retrieve)


def _key(error: jsonschema.ValidationError) -> str:
    path = ".".join(str(p) for p in error.absolute_path)
    return path or "<top level>"


def _short(error: jsonschema.ValidationError, width: int = 80) -> str:
    """The error's message with a long value shortened (the message stays one readable line)."""
    msg, text = error.message, repr(error.instance)
    if len(text) > width and text in msg:
        short = reprlib.Repr()
        short.maxstring = short.maxother = width // 2
        short.maxlist = short.maxdict = 4
        msg = msg.replace(text, short.repr(error.instance))
    return " ".join(msg.split())


def schema_errors(config: dict[str, Any], schema_path: Path) -> list[str]:
    """All schema violations of ``config``, one readable line each (empty when valid)."""
    schema_path = Path(schema_path)
    schema = _schema(schema_path)
    validator = jsonschema.Draft202012Validator(schema, registry=_registry(schema_path.parent))
    lines = []
    for err in sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path)):
        if err.validator == "additionalProperties":
            extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
            where = _key(err)
            for k in extra:
                full = k if where == "<top level>" else f"{where}.{k}"
                lines.append(f"unknown config key '{full}' (allowed here: "
                             f"{', '.join(sorted(err.schema.get('properties', {})))})")
            continue
        lines.append(f"config key '{_key(err)}': {_short(err)}")
    return lines


#: Deeper than this, a config is not a config (and the recursive checks would overflow).
MAX_DEPTH = 50


def _depth(value: Any, limit: int = MAX_DEPTH) -> int:
    """Nesting depth of dicts/lists in ``value``, counted up to ``limit + 1`` (no recursion)."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        node, d = stack.pop()
        deepest = max(deepest, d)
        if deepest > limit:
            break
        if isinstance(node, dict):
            stack.extend((v, d + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, d + 1) for v in node)
    return deepest


def check_config(config: dict[str, Any], schema_path: Path) -> None:
    """Validate ``config`` in place and fill in the schema's defaults.

    Raises:
        InputError: one line naming the first offending key and how to fix it.
    """
    if not isinstance(config, dict):
        raise InputError(f"the config is a {type(config).__name__}, not a mapping of sections "
                         f"-- give a YAML mapping (run:, structures:, ...) in your --configfile")
    if _depth(config) > MAX_DEPTH:
        raise InputError(f"the config is nested more than {MAX_DEPTH} levels deep -- fix the "
                         f"brackets in your --configfile or --config")
    try:
        coerce_strings(config, schema_path)
    except RecursionError:  # a --config string parsing into something absurdly deep
        raise InputError(f"a --config value is nested more than {MAX_DEPTH} levels deep -- fix "
                         f"its brackets") from None
    errors = schema_errors(config, schema_path)
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise InputError(f"{errors[0]}{more} -- fix it in your --configfile or --config")
    fill_defaults(config, schema_path)
    _check_finite(config)
    _check_semantics(config)


def _coerce(value: Any, schema: dict[str, Any], schema_dir: Path,
            root: dict[str, Any] | None = None) -> Any:
    schema, root = _resolve(schema, schema_dir, root if root is not None else schema)
    if isinstance(value, dict):
        props = schema.get("properties", {})
        return {k: _coerce(v, props.get(k, {}), schema_dir, root) for k, v in value.items()}
    if isinstance(value, list):
        return [_coerce(v, schema.get("items", {}), schema_dir, root) for v in value]
    types = schema.get("type", [])
    types = [types] if isinstance(types, str) else types
    if isinstance(value, str) and value.strip() in ("null", "~") and "null" in types:
        return None  # `--config affinity='{path: null}'` means null, not the string "null"
    if isinstance(value, str) and types and "string" not in types:
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            return value
        return _coerce(parsed, schema, schema_dir, root) if not isinstance(parsed, str) else value
    return value


def coerce_strings(config: dict[str, Any], schema_path: Path) -> None:
    """Undo snakemake's `--config key='{...}'` parsing, which turns every nested scalar into a
    string: a string where the schema wants a number, boolean, null or list is parsed as YAML."""
    schema_path = Path(schema_path)
    fixed = _coerce(config, _schema(schema_path), schema_path.parent)
    config.clear()
    config.update(fixed)


def fill_defaults(config: dict[str, Any], schema_path: Path) -> None:
    """Set every missing key that has a ``default`` in the schema, at every depth (following
    ``$ref`` to sibling schema files and to local ``#/$defs/...``, and into the items of
    arrays); a default written next to a ``$ref`` wins over the referenced schema's own.

    The same filling as ``snakemake.utils.validate(config, schema, set_default=True)`` (tested
    on every shipped config in tests/test_defaults.py), without snakemake, and with each
    default copied (snakemake shares the schema's default objects between configs)."""
    schema_path = Path(schema_path)
    schema = _schema(schema_path)
    _fill(config, schema, schema_path.parent, schema)


#: The schema of the whole config; each top-level section refers to its own file.
CONFIG_SCHEMA = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "config.schema.yaml"


def schema_defaults(section: str, given: dict[str, Any] | None = None) -> dict[str, Any]:
    """Config section ``section`` (e.g. ``"train"``) as the pipeline sees it: ``given``
    (default: nothing) with every schema default filled in, at every depth.

    For library callers and tests that build a config without the Snakefile, so that no
    default is restated outside workflow/schemas/. ``given`` is not modified.

    Raises:
        KeyError: ``section`` is not a top-level section of the config schema.
    """
    if section not in _schema(CONFIG_SCHEMA)["properties"]:
        raise KeyError(f"no config section {section!r} in {CONFIG_SCHEMA.name}")
    config = {section: copy.deepcopy(given) if given is not None else {}}
    fill_defaults(config, CONFIG_SCHEMA)
    return config[section]


def _resolve(schema: dict[str, Any], schema_dir: Path, root: dict[str, Any]
             ) -> tuple[dict[str, Any], dict[str, Any]]:
    """(schema with its ``$ref`` merged in, properties key by key, the root that local refs
    inside it resolve against)."""
    while "$ref" in schema:
        ref = schema["$ref"]
        if ref.startswith("#/"):
            target = root
            for part in ref[2:].split("/"):
                target = target[part]
        else:
            root = target = _schema(schema_dir / ref)
        merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        if "properties" in target and "properties" in schema:  # defaults next to a $ref
            merged["properties"] = {
                k: {**target["properties"].get(k, {}), **schema["properties"].get(k, {})}
                for k in {**target["properties"], **schema["properties"]}}
        schema = merged
    return schema, root


def _fill(instance: Any, schema: dict[str, Any], schema_dir: Path, root: dict[str, Any]) -> None:
    schema, root = _resolve(schema, schema_dir, root)
    if isinstance(instance, dict):
        for name, sub in schema.get("properties", {}).items():
            sub, sub_root = _resolve(sub, schema_dir, root)
            if name not in instance and "default" in sub:
                instance[name] = copy.deepcopy(sub["default"])
            if name in instance:
                _fill(instance[name], sub, schema_dir, sub_root)
    elif isinstance(instance, list) and isinstance(schema.get("items"), dict):
        for item in instance:
            _fill(item, schema["items"], schema_dir, root)


def _check_finite(config: dict[str, Any]) -> None:
    """No NaN or infinite number anywhere (YAML's .nan/.inf pass the schema's bounds)."""
    stack: list[tuple[str, Any]] = [(k, v) for k, v in config.items()]
    while stack:
        key, value = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            raise InputError(f"config key '{key}': {value} is not a finite number -- give a "
                             f"number in your --configfile or --config")
        if isinstance(value, dict):
            stack.extend((f"{key}.{k}", v) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((f"{key}.{i}", v) for i, v in enumerate(value))


class _SimulatedNames:
    """The names model_0 .. model_<n-1> of simulated tomograms, without listing them (n comes
    from the config and may be huge)."""

    def __init__(self, n: int) -> None:
        self.n = int(n)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str) or not name.startswith("model_"):
            return False
        digits = name[len("model_"):]
        return digits.isdigit() and digits.isascii() and str(int(digits)) == digits \
            and int(digits) < self.n

    def last(self) -> str:
        return f"model_{self.n - 1}"

    def describe(self) -> str:
        if self.n <= 12:
            return ", ".join(sorted((f"model_{i}" for i in range(self.n)), key=str))
        return f"model_0 .. model_{self.n - 1}"


def _check_semantics(config: dict[str, Any]) -> None:
    """Cross-field checks the schema cannot express."""
    ds = config["dataset"]
    if ds["source"] in ("shrec", "subtomo_folder"):
        if not ds.get("path"):
            raise InputError(f"config key 'dataset.path' is required when dataset.source is "
                             f"'{ds['source']}' -- set it to the folder holding your data")
        if not Path(ds["path"]).is_dir():
            raise InputError(f"config key 'dataset.path': folder '{ds['path']}' does not exist "
                             f"-- point it at your data folder")
    if ds["source"] == "simulate":
        names = _SimulatedNames(config["simulate"]["n_tomograms"])
    elif ds["source"] == "shrec":
        names = set(ds["tomograms"])
    else:
        names = None
    if ds["splits"].get("test") is None:  # default: the last tomogram (SHREC: model_9)
        last = names.last() if isinstance(names, _SimulatedNames) else (
            max(names, key=lambda n: (len(n), n)) if names else None)
        ds["splits"]["test"] = [last] if last else []
    for split in ("test", "validation"):
        for tomo in ds["splits"].get(split, []):
            if names is not None and tomo not in names:
                listed = names.describe() if isinstance(names, _SimulatedNames) else \
                    ", ".join(sorted(names))
                raise InputError(f"config key 'dataset.splits.{split}': tomogram '{tomo}' is not "
                                 f"in the dataset ({listed}) -- fix the name")
    if ds["source"] == "alphanumeric" and config["model"]["pose_head"] != "linear":
        raise InputError(f"config key 'model.pose_head': {config['model']['pose_head']} needs 3D "
                         f"boxes, but dataset.source alphanumeric makes 2D images -- set "
                         f"model.pose_head: linear")
    if (config["train"]["pose_consistency"]["weight"] > 0 and ds["source"] != "alphanumeric"
            and config["model"]["pose_head"] != "rotation"):
        raise InputError("config key 'train.pose_consistency.weight': on 3D data the "
                         "pose-consistency term trains the learned rotation pose -- set "
                         "model.pose_head: rotation (2D images: dataset.source alphanumeric), "
                         "or the weight to 0")
    for i, new in enumerate(config["predict"]["tomograms"]):
        for key in ("tomogram", "coordinates"):
            if not Path(new[key]).is_file():
                raise InputError(f"config key 'predict.tomograms[{i}].{key}': file '{new[key]}' "
                                 f"not found -- fix the path")
    st = config["structures"]
    from affinity_vae.structures.checks import (
        check_structures_config,  # no heavy imports
    )

    check_structures_config(st, ds["voxel_size"])
    if st["source"] == "dir" and not (st.get("path") and Path(st["path"]).is_dir()):
        raise InputError(f"config key 'structures.path': folder '{st.get('path')}' does not "
                         f"exist -- point it at a folder of PDB/mmCIF/MRC files")
