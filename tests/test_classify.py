"""The classifier's and the analysis's results do not depend on how many cores run them: BLAS is
pinned to one thread inside the fits (its summation order would otherwise change the lbfgs path
and the CV scores with the machine's core count), grid points may run in parallel processes and
the embeddings in a second process, all bit-for-bit the same as one core doing everything."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from affinity_vae.config import schema_defaults
from affinity_vae.evaluate import classify
from affinity_vae.evaluate.analyse import analyse_latents

MLP = schema_defaults("evaluate", {"classifier": "mlp", "cv_folds": 3, "mlp_hidden": [[8]],
                                   "mlp_alpha": [0.0001, 0.01]})


def overlapping_classes(seed: int = 0, n: int = 40, dims: int = 6, k: int = 4
                        ) -> tuple[np.ndarray, np.ndarray]:
    """(N, dims) latents of k classes whose clouds overlap (lbfgs runs many iterations)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, dims))
    y = np.repeat([f"c{i}" for i in range(k)], n)
    return centres[np.repeat(np.arange(k), n)] + 0.8 * rng.normal(size=(k * n, dims)), y


def test_classifier_is_the_same_for_any_worker_and_blas_thread_count():
    X, y = overlapping_classes()
    Xt, _ = overlapping_classes(seed=1)
    with threadpool_limits(2):  # the caller's BLAS setting does not reach the fits
        est1, info1 = classify.fit_classifier(X, y, MLP, seed=0)
    est2, info2 = classify.fit_classifier(X, y, MLP, seed=0, n_jobs=2)
    assert info1 == info2 and info1["cv_macro_f1"] is not None
    for a, b in zip(est1[-1].coefs_, est2[-1].coefs_):
        assert np.array_equal(a, b)
    assert np.array_equal(est1.predict(Xt), est2.predict(Xt))


@pytest.mark.slow  # UMAP's numba compilation, once per process
def test_analysis_is_the_same_with_the_embeddings_in_a_second_process(tmp_path):
    X, y = overlapping_classes(n=30)
    lat = pd.DataFrame({"class": y, "split": np.tile(["train", "train", "test"], len(y) // 3),
                        "tomogram": "t0", "stack_index": np.arange(len(y))})
    lat[["x", "y", "z"]] = 0.0
    for i in range(X.shape[1]):
        lat[f"mu_{i}"] = X[:, i]
    names = sorted(set(y))
    a = np.random.default_rng(2).uniform(0, 1, (len(names),) * 2)
    aff = pd.DataFrame((a + a.T) / 2 + np.eye(len(names)), index=names, columns=names)
    runs = {}
    for threads in (1, 2):
        out = {k: str(tmp_path / f"{k}{threads}.csv") for k in ("embedding", "predictions")}
        res = analyse_latents(lat, names, aff, MLP, 0, out, threads=threads)
        runs[threads] = (json.dumps(res, default=str),  # NaN == NaN as text
                         {k: open(p, "rb").read() for k, p in out.items()})
    assert runs[1] == runs[2]
