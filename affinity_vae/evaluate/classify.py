"""Classifiers of latent means: a scikit-learn MLP or KNN, grid-searched on CV macro-F1."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from joblib import parallel_config
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

log = logging.getLogger(__name__)


#: the keys of the ``evaluate`` config section the classifier reads (defaults: the schema)
CONFIG_KEYS = ("classifier", "cv_folds", "mlp_hidden", "mlp_alpha", "knn_neighbors")
#: lbfgs iterations of the MLP: the scaled latents of a run converge in a few hundred; the cap
#: only stops a fit that would chase a separable class pair towards infinite weights
MLP_MAX_ITER = 5000
#: BLAS threads of every fit. The MLP's matrices are tiny ((N, L) @ (L, 64)), so
#: more BLAS threads only add synchronisation (on a loaded 2-core machine the grid took 30x
#: longer with 2 than with 1), and BLAS's summation order -- which lbfgs amplifies over thousands
#: of iterations into different CV scores -- would depend on the machine's core count.
#: Parallelism comes from fitting grid points side by side (``n_jobs``) instead.
BLAS_THREADS = 1


def make_search(cfg: Mapping[str, Any], seed: int, n_folds: int, n_jobs: int = 1
                ) -> GridSearchCV:
    """A grid search (scoring macro-F1, stratified shuffled folds seeded by ``seed``) over
    ``cfg``'s grid (the ``evaluate`` section's :data:`CONFIG_KEYS`), ``n_jobs`` fits at a time.
    The latents are standardised (StandardScaler) inside the pipeline, so every fold is scaled
    on its own training part."""
    method = cfg["classifier"]
    if method == "mlp":
        est = MLPClassifier(solver="lbfgs", max_iter=MLP_MAX_ITER, random_state=seed)
        grid: dict[str, list[Any]] = {
            "clf__hidden_layer_sizes": [tuple(h) for h in cfg["mlp_hidden"]],
            "clf__alpha": list(cfg["mlp_alpha"])}
    elif method == "knn":
        est = KNeighborsClassifier()
        grid = {"clf__n_neighbors": list(cfg["knn_neighbors"]),
                "clf__weights": ["uniform", "distance"]}
    else:
        raise ValueError(f"unknown classifier {method!r} (mlp or knn)")
    pipe = Pipeline([("scale", StandardScaler()), ("clf", est)])
    cv = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return GridSearchCV(pipe, grid, scoring="f1_macro", cv=cv, n_jobs=n_jobs, refit=True)


def fit_classifier(X: np.ndarray, y: Sequence[str], cfg: Mapping[str, Any], seed: int,
                   n_jobs: int = 1) -> tuple[Any, dict]:
    """Fit the best classifier of ``cfg["classifier"]`` on latents X (N, L) with labels y (N,):
    the one classifier of evaluate and predict.

    Args:
        cfg: the ``evaluate`` config section (at least :data:`CONFIG_KEYS`).
        n_jobs: grid points fitted at a time (processes, each with :data:`BLAS_THREADS` BLAS
            threads); the result does not depend on it.
    KNN neighbour counts larger than the smallest training fold are dropped. With fewer than two
    particles in some class no cross-validation is possible and the grid's first setting is fitted.

    Returns:
        (fitted estimator with .predict, info {method, best_params, cv_macro_f1, n_folds}).
    """
    cfg = {k: cfg[k] for k in CONFIG_KEYS}
    method = cfg["classifier"]
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=object)
    _, counts = np.unique(y, return_counts=True)
    if len(counts) < 2:
        raise ValueError("a classifier needs at least two classes")
    n_folds = int(min(cfg["cv_folds"], counts.min()))
    if method == "knn":
        smallest_train = len(y) - int(np.ceil(len(y) / max(n_folds, 2)))
        cfg["knn_neighbors"] = [k for k in cfg["knn_neighbors"] if k <= smallest_train] or [1]
    if n_folds < 2:
        log.warning("a class has a single training particle: no cross-validation, first grid point")
        search = make_search(cfg, seed, 2)
        est = search.estimator.set_params(**{k: v[0] for k, v in search.param_grid.items()})
        with threadpool_limits(BLAS_THREADS):
            est.fit(X, y)
        return est, {"method": method, "best_params": {}, "cv_macro_f1": None, "n_folds": 0}
    search = make_search(cfg, seed, n_folds, max(1, int(n_jobs)))
    # processes (loky), not threads: a fit holds the GIL most of the time
    with threadpool_limits(BLAS_THREADS), parallel_config(backend="loky",
                                                          inner_max_num_threads=BLAS_THREADS):
        search.fit(X, y)
    params = {k.removeprefix("clf__"): (list(v) if isinstance(v, tuple) else v)
              for k, v in search.best_params_.items()}
    log.info("%s grid search: best %s, CV macro-F1 %.3f", method, params, search.best_score_)
    return search.best_estimator_, {"method": method, "best_params": params,
                                    "cv_macro_f1": float(search.best_score_), "n_folds": n_folds}
