"""Facts about affinity_vae.runner, the wrapper every rule script runs in."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np  # noqa: F401  (loads the BLAS pool before the run, as a stage module does)

from affinity_vae.runner import run


def test_runner_caps_blas_threads_at_the_rules_threads(tmp_path):
    from threadpoolctl import threadpool_info

    seen = {}

    def entry(smk):
        seen["blas"] = [p["num_threads"] for p in threadpool_info()
                        if p["user_api"] == "blas"]

    smk = SimpleNamespace(log=[str(tmp_path / "x.log")], output=[], threads=1, rule="t")
    run(smk, entry)
    assert seen["blas"] and set(seen["blas"]) == {1}
