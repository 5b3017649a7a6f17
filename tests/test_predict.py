"""Stage `predict` on a new tomogram given in predict.tomograms (slow: needs the tiny run).

The tiny run's test tomogram is handed back as if it were new (its raw reconstruction and an
unlabelled STAR file of its particle positions): the pipeline must denoise it exactly like the
training data and reproduce, particle for particle, the latents and the calls it made for the
same tomogram inside the run."""

from __future__ import annotations

import subprocess

import mrcfile
import numpy as np
import pandas as pd
import pytest
import starfile
import yaml
from conftest import REPO, snakemake_cmd
from workflow_helpers import TINY, TINY_RUN, ensure_tiny_run, snakemake

from affinity_vae.io.shrec import read_particle_locations
from affinity_vae.io.star import UNLABELLED

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def predicted(tmp_path_factory):
    run = ensure_tiny_run()
    # the run's own prediction of its test tomogram, to compare with
    snakemake("predict", "--cores", "2", "--configfile", str(TINY), "--config", f"run={TINY_RUN}")
    tmp = tmp_path_factory.mktemp("predict")
    raw = run / "data" / "simulated" / "model_1"
    loc = read_particle_locations(raw / "particle_locations.txt")
    coords = tmp / "positions.star"  # positions only: no class, no angles
    starfile.write({"particles": pd.DataFrame({"rlnCoordinateX": loc["x"],
                                               "rlnCoordinateY": loc["y"],
                                               "rlnCoordinateZ": loc["z"]})}, coords)
    extra = tmp / "predict.yaml"
    extra.write_text(yaml.safe_dump({"run": TINY_RUN, "predict": {"tomograms": [
        {"name": "again", "tomogram": str(raw / "reconstruction.mrc"),
         "coordinates": str(coords)}]}}))
    proc = subprocess.run(snakemake_cmd("predict", "--cores", "2", "--configfile", str(TINY),
                                        str(extra)),
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return run


def test_new_tomogram_is_denoised_like_the_training_data(predicted):
    with mrcfile.open(predicted / "predict" / "again_denoised.mrc", permissive=True) as a, \
            mrcfile.open(predicted / "denoised" / "model_1.mrc", permissive=True) as b:
        assert a.data.shape == b.data.shape
        assert np.abs(a.data - b.data).max() <= 1e-4 * np.abs(b.data).max()


def test_new_tomogram_reproduces_the_runs_own_latents_and_calls(predicted):
    new = pd.read_parquet(predicted / "predict" / "again_latents.parquet")
    own = pd.read_parquet(predicted / "predict" / "model_1_latents.parquet")
    key = ["x", "y", "z"]
    merged = new.merge(own, on=key, suffixes=("_new", "_own"))
    assert len(merged) == len(own) == len(new)
    mu = [c for c in own.columns if c.startswith("mu_")]
    assert np.allclose(merged[[f"{c}_new" for c in mu]].to_numpy(),
                       merged[[f"{c}_own" for c in mu]].to_numpy(), atol=1e-3)
    calls_new = starfile.read(predicted / "predict" / "again_predicted.star")
    calls_own = starfile.read(predicted / "predict" / "model_1_predicted.star")
    cols = ["rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ"]
    both = calls_new.merge(calls_own, on=cols, suffixes=("_new", "_own"))
    assert len(both) == len(calls_own)
    assert (both["avaeCall_new"] == both["avaeCall_own"]).mean() >= 0.95
    assert set(calls_new["avaeGivenClass"]) == {UNLABELLED}
