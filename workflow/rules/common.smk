# Shared helpers: config validation, paths of every stage's outputs, the tomogram list.
import os
import sys
from pathlib import Path

from snakemake.utils import validate

REPO = Path(workflow.basedir).resolve()
# The library is importable in every job (local, conda env or SLURM) without installing it.
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
)
sys.path.insert(0, str(REPO))

from affinity_vae.config import check_config  # noqa: E402

check_config(config, REPO / "workflow" / "schemas" / "config.schema.yaml")

RUN = f"results/{config['run']}"
LOGS = f"{RUN}/logs"
BENCH = f"{RUN}/benchmarks"


def env(stage):
    """The conda env file of a stage (used with --software-deployment-method conda)."""
    return str(REPO / "envs" / f"{stage}.yaml")


def tomograms():
    """Names of the tomograms of the dataset, e.g. ['model_0', 'model_1']."""
    ds = config["dataset"]
    if ds["source"] == "simulate":
        return [f"model_{i}" for i in range(config["simulate"]["n_tomograms"])]
    if ds["source"] == "shrec":
        return list(ds["tomograms"])
    if ds["source"] == "alphanumeric":  # one rendered image stack (rule alphanumeric_dataset)
        return ["alphanumeric"]
    return ["imported"]


def tomogram_dir(tomo):
    """Folder holding a tomogram in the SHREC 2021 layout."""
    ds = config["dataset"]
    if ds["source"] == "simulate":
        return f"{RUN}/data/simulated/{tomo}"
    return f"{ds['path']}/{tomo}"


def all_targets():
    return [f"{RUN}/eval/metrics.json", f"{RUN}/figures/table1.md"]
