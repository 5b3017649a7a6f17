"""Re-running one stage after a config change: after a complete tiny run, `snakemake -n` plans
exactly the changed stage and what depends on it (Snakemake's default rerun triggers, params
included: every rule's params: hold its config section).

The finished run is shared with the SLURM test (same run name): when that test ran first, its
results are reused here; otherwise they are made here, locally.
"""

from __future__ import annotations

import pytest
import yaml
from workflow_helpers import TINY, TINY_RUN, ensure_tiny_run, plan, reasons

pytestmark = pytest.mark.slow

UPSTREAM = {"structures_build", "simulate_tomogram", "denoise_tomogram"}
EXTRACT = {"extract_tomogram"}
AFFINITY = {"affinity_method", "affinity_matrix"}
TRAIN = {"train_model"}
EVALUATE = {"evaluate_avae", "evaluate_bvae", "evaluate_summary"}
REPORT = {"figures_build"}
AGGREGATES = {"all", "structures", "simulate", "denoise", "extract", "affinity", "train",
              "evaluate", "figures"}


@pytest.fixture(scope="module")
def finished_run():
    ensure_tiny_run()
    return TINY


def planned_with(tmp_path, change: dict) -> tuple[set[str], str]:
    """Rules a dry-run plans for the tiny config plus `change` (a second config file)."""
    extra = tmp_path / "change.yaml"
    extra.write_text(yaml.safe_dump(change))
    table, out = plan("--configfile", str(TINY), str(extra), "--config", f"run={TINY_RUN}",
                      "--cores", "2")
    return set(table) - AGGREGATES, out


def _why(out: str) -> str:
    return "\n".join(f"{r}: {v}" for r, v in reasons(out).items())


def test_noop_plans_nothing(finished_run):
    table, out = plan("--configfile", str(TINY), "--config", f"run={TINY_RUN}", "--cores", "2")
    assert table == {}, f"a finished run should plan nothing, got {table}:\n{_why(out)}"
    assert "Nothing to be done" in out


def test_evaluate_change_reruns_only_evaluate_and_report(finished_run, tmp_path):
    base = yaml.safe_load(TINY.read_text()).get("evaluate", {})
    other = "knn" if base.get("classifier", "mlp") == "mlp" else "mlp"
    planned, out = planned_with(tmp_path, {"evaluate": {"classifier": other}})
    assert {"evaluate_avae", "evaluate_summary"} <= planned, _why(out)
    assert planned <= EVALUATE | REPORT, f"planned {sorted(planned)}:\n{_why(out)}"
    assert any("Params have changed" in r for r in reasons(out)["evaluate_avae"]), _why(out)


def test_box_size_change_reruns_extract_and_downstream(finished_run, tmp_path):
    base = yaml.safe_load(TINY.read_text()).get("extract", {})
    box = 24 if base.get("box_size", 32) != 24 else 28
    planned, out = planned_with(tmp_path, {"extract": {"box_size": box}})
    assert EXTRACT | TRAIN | {"evaluate_avae", "evaluate_summary"} <= planned, _why(out)
    assert not planned & (UPSTREAM | AFFINITY), f"planned {sorted(planned)}:\n{_why(out)}"
    assert any("Params have changed" in r for r in reasons(out)["extract_tomogram"]), _why(out)


def test_affinity_change_reruns_affinity_train_evaluate_not_extract(finished_run, tmp_path):
    base = yaml.safe_load(TINY.read_text()).get("affinity", {})
    scale = "signed" if base.get("scale", "unit") != "signed" else "unit"
    planned, out = planned_with(tmp_path, {"affinity": {"scale": scale}})
    assert {"affinity_matrix"} | TRAIN | {"evaluate_avae", "evaluate_summary"} <= planned, \
        _why(out)
    assert not planned & (UPSTREAM | EXTRACT), f"planned {sorted(planned)}:\n{_why(out)}"
    # the SOAP and FSC matrices depend only on their own settings
    assert "affinity_method" not in planned, _why(out)
