"""The config is validated against the schema before any job: defaults filled, bad keys named."""

from __future__ import annotations

import copy
import subprocess

import pytest
import yaml
from conftest import REPO, snakemake_cmd

from affinity_vae.config import check_config
from affinity_vae.errors import InputError

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


def load(name: str = "config/config.yaml") -> dict:
    return yaml.safe_load((REPO / name).read_text())


def test_defaults_come_from_the_schema():
    cfg = {}
    check_config(cfg, SCHEMA)
    assert cfg["run"] == "demo" and cfg["seed"] == 0 and cfg["device"] == "auto"
    # nested defaults are filled through the per-stage schema files
    assert cfg["structures"]["source"] == "generated"
    assert cfg["dataset"]["splits"]["validation"] == []
    every_section = {"run", "seed", "device", "structures", "dataset", "simulate", "denoise",
                     "extract", "affinity", "model", "train", "evaluate", "report"}
    assert every_section <= set(cfg)


def test_explicit_values_win_over_defaults():
    cfg = {"seed": 7, "simulate": {"n_tomograms": 5}}
    check_config(cfg, SCHEMA)
    assert cfg["seed"] == 7 and cfg["simulate"]["n_tomograms"] == 5


@pytest.mark.parametrize("name", ["config/config.yaml", "tests/configs/tiny.yaml"])
def test_shipped_configs_are_valid(name):
    cfg = load(name)
    check_config(cfg, SCHEMA)


@pytest.mark.parametrize(
    "patch, key",
    [
        ({"sede": 1}, "sede"),
        ({"seed": "one"}, "seed"),
        ({"structures": {"source": "pdbe"}}, "structures.source"),
        ({"simulate": {"n_tomograms": 0}}, "simulate.n_tomograms"),
        ({"dataset": {"splits": {"tset": []}}}, "dataset.splits.tset"),
    ],
)
def test_bad_key_or_type_is_one_line_naming_the_key(patch, key):
    cfg = copy.deepcopy(load())
    for section, value in patch.items():
        if isinstance(value, dict) and isinstance(cfg.get(section), dict):
            cfg[section].update(value)
        else:
            cfg[section] = value
    with pytest.raises(InputError) as err:
        check_config(cfg, SCHEMA)
    msg = str(err.value)
    assert "\n" not in msg
    assert f"'{key}'" in msg


def test_missing_dataset_folder_is_named(tmp_path):
    cfg = {"dataset": {"source": "shrec", "path": str(tmp_path / "nowhere")}}
    with pytest.raises(InputError, match="dataset.path"):
        check_config(cfg, SCHEMA)


def test_missing_predict_tomogram_is_named(tmp_path):
    cfg = load()
    cfg["predict"] = {"tomograms": [{"name": "new", "tomogram": str(tmp_path / "no.mrc"),
                                     "coordinates": str(tmp_path / "no.star")}]}
    with pytest.raises(InputError, match=r"predict\.tomograms\[0\]\.tomogram.*no\.mrc"):
        check_config(cfg, SCHEMA)


def test_snakemake_stops_before_any_job(tmp_path):
    """A wrong key stops `snakemake` at parse time: non-zero exit, the key named, nothing run."""
    proc = subprocess.run(
        snakemake_cmd("-n", "--cores", "1", "--config", "run=cfgtest",
                      "simulate={'n_tomogram': 2}"),
        cwd=REPO, capture_output=True, text=True,
    )
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "unknown config key 'simulate.n_tomogram'" in out
    assert not (REPO / "results" / "cfgtest").exists()


def test_nested_command_line_values_keep_their_types():
    """snakemake --config section='{key: 2}' delivers '2' as a string; the schema's type wins."""
    cfg = {"simulate": {"n_tomograms": "2"}, "seed": "3",
           "dataset": {"splits": {"test": ["model_1"]}}}
    check_config(cfg, SCHEMA)
    assert cfg["simulate"]["n_tomograms"] == 2 and cfg["seed"] == 3
    assert cfg["dataset"]["splits"]["test"] == ["model_1"]  # strings stay strings


def test_values_under_a_local_schema_ref_are_typed_and_checked_twice():
    """train.beta is a local $ref (#/$defs/schedule): a command-line value under it is typed,
    and a config that was already checked (defaults filled) checks again."""
    cfg = {"train": {"beta": {"kind": "flat", "max": "0.5"}}}
    check_config(cfg, SCHEMA)
    assert cfg["train"]["beta"]["max"] == 0.5
    check_config(cfg, SCHEMA)


def test_split_naming_a_missing_tomogram_stops_before_any_job():
    cfg = {"simulate": {"n_tomograms": 2}, "dataset": {"splits": {"test": ["model_9"]}}}
    with pytest.raises(InputError, match=r"dataset.splits.test.*model_9.*model_0, model_1"):
        check_config(cfg, SCHEMA)


def test_shrec2021_config_needs_only_the_download_path(tmp_path):
    cfg = load("config/shrec2021.yaml")
    with pytest.raises(InputError, match="'dataset.path' is required"):
        check_config(copy.deepcopy(cfg), SCHEMA)
    cfg["dataset"]["path"] = str(tmp_path)
    check_config(cfg, SCHEMA)
    assert cfg["dataset"]["splits"]["test"] == ["model_9"]
    assert "4v94" in [c.lower() for c in cfg["extract"]["exclude_classes"]]


def test_readme_config_reference_is_generated_from_the_schemas():
    """The README's config reference is the schemas' (python -m affinity_vae.configdoc)."""
    from affinity_vae.configdoc import reference

    assert reference() in (REPO / "README.md").read_text()
