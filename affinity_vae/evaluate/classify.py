"""Classifiers of latent means: a scikit-learn MLP or KNN, grid-searched on CV macro-F1."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

log = logging.getLogger(__name__)


def make_search(method: str, seed: int, n_folds: int,
                mlp_hidden: Sequence[Sequence[int]] = ((32,), (64,), (64, 32)),
                mlp_alpha: Sequence[float] = (1e-4, 1e-3, 1e-2),
                knn_neighbors: Sequence[int] = (1, 3, 5, 9, 15)) -> GridSearchCV:
    """A grid search (scoring macro-F1, stratified shuffled folds seeded by ``seed``)."""
    if method == "mlp":
        est = MLPClassifier(solver="lbfgs", max_iter=1000, random_state=seed)
        grid: dict[str, list[Any]] = {"clf__hidden_layer_sizes": [tuple(h) for h in mlp_hidden],
                                      "clf__alpha": list(mlp_alpha)}
    elif method == "knn":
        est = KNeighborsClassifier()
        grid = {"clf__n_neighbors": list(knn_neighbors), "clf__weights": ["uniform", "distance"]}
    else:
        raise ValueError(f"unknown classifier {method!r} (mlp or knn)")
    pipe = Pipeline([("scale", StandardScaler()), ("clf", est)])
    cv = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return GridSearchCV(pipe, grid, scoring="f1_macro", cv=cv, n_jobs=1, refit=True)


def fit_classifier(X: np.ndarray, y: Sequence[str], method: str = "mlp", seed: int = 0,
                   cv_folds: int = 5, **grid: Any) -> tuple[Any, dict]:
    """Fit the best classifier of ``method`` on latents X (N, L) with labels y (N,).

    KNN neighbour counts larger than the smallest training fold are dropped. With fewer than two
    particles in some class no cross-validation is possible and the grid's first setting is fitted.

    Returns:
        (fitted estimator with .predict, info {method, best_params, cv_macro_f1, n_folds}).
    """
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=object)
    _, counts = np.unique(y, return_counts=True)
    if len(counts) < 2:
        raise ValueError("a classifier needs at least two classes")
    n_folds = int(min(cv_folds, counts.min()))
    if method == "knn":
        smallest_train = len(y) - int(np.ceil(len(y) / max(n_folds, 2)))
        ks = [k for k in grid.get("knn_neighbors", (1, 3, 5, 9, 15)) if k <= smallest_train] or [1]
        grid["knn_neighbors"] = ks
    if n_folds < 2:
        log.warning("a class has a single training particle: no cross-validation, first grid point")
        search = make_search(method, seed, 2, **grid)
        est = search.estimator.set_params(**{k: v[0] for k, v in search.param_grid.items()})
        est.fit(X, y)
        return est, {"method": method, "best_params": {}, "cv_macro_f1": None, "n_folds": 0}
    search = make_search(method, seed, n_folds, **grid)
    search.fit(X, y)
    params = {k.removeprefix("clf__"): (list(v) if isinstance(v, tuple) else v)
              for k, v in search.best_params_.items()}
    log.info("%s grid search: best %s, CV macro-F1 %.3f", method, params, search.best_score_)
    return search.best_estimator_, {"method": method, "best_params": params,
                                    "cv_macro_f1": float(search.best_score_), "n_folds": n_folds}
