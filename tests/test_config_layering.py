"""How configs layer: the demo config is the default only; a user's --configfile starts from the
schema defaults and names its own run; `--config key=null` means null; the run name can't leave
results/."""

from __future__ import annotations

import pytest
import yaml
from workflow_helpers import REPO, snakemake

from affinity_vae.config import check_config
from affinity_vae.errors import InputError

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


def _planned_runs(output: str) -> set[str]:
    import re

    return set(re.findall(r"results/([A-Za-z0-9_.-]+)/", output))


def test_a_users_configfile_does_not_inherit_the_demo(tmp_path):
    mine = tmp_path / "my_lab.yaml"
    mine.write_text(yaml.safe_dump({"seed": 3, "simulate": {"n_tomograms": 2}}))
    out = snakemake("-n", "--cores", "1", "--configfile", str(mine)).stdout
    assert _planned_runs(out) == {"my_lab"}  # not results/demo/
    assert "ring7" not in out  # the demo's unseen class is not inherited
    demo = snakemake("-n", "--cores", "1").stdout
    assert _planned_runs(demo) == {"demo"}
    override = snakemake("-n", "--cores", "1", "--config", "run=other").stdout
    assert _planned_runs(override) == {"other"}


@pytest.mark.parametrize("name", [".", "..", "a/b", "../x", ".hidden", "a b"])
def test_run_names_that_leave_results_are_refused(name):
    with pytest.raises(InputError, match="config key 'run'"):
        check_config({"run": name}, SCHEMA)


def test_null_given_on_the_command_line_means_null():
    # snakemake --config affinity='{path: null}' hands the nested value over as a string
    cfg = {"affinity": {"path": "null"}, "extract": {"bin_to": "~"}}
    check_config(cfg, SCHEMA)
    assert cfg["affinity"]["path"] is None and cfg["extract"]["bin_to"] is None
    cfg = {"affinity": {"path": "my.csv"}}
    check_config(cfg, SCHEMA)
    assert cfg["affinity"]["path"] == "my.csv"


@pytest.mark.parametrize("cfg", [
    {"dataset": {"source": "shrec", "path": "/tmp", "tomograms": ["../../etc"]}},
    {"predict": {"tomograms": [{"name": "..", "tomogram": "t.mrc", "coordinates": "c.txt"}]}},
])
def test_names_that_become_output_paths_cannot_leave_the_run_folder(cfg):
    with pytest.raises(InputError, match="does not match"):
        check_config(cfg, SCHEMA)
