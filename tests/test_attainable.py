"""Attainability of an affinity prior by cosines of L-dimensional latent vectors: Gram matrices
of unit vectors are attainable with r = 1, the -1/(n-1) condition, rank caps, and the nearest
realisable matrix (affinity_vae.attainable)."""

from __future__ import annotations

import numpy as np
import pytest

from affinity_vae.attainable import (
    attainability,
    nearest_realisable,
    offdiag,
    principal_axes_factor,
)


def unit_gram(n: int, dims: int, seed: int = 0) -> np.ndarray:
    X = np.random.default_rng(seed).standard_normal((n, dims))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X @ X.T


def realisable(G: np.ndarray, dims: int) -> bool:
    w = np.linalg.eigvalsh(G)
    return (np.allclose(np.diag(G), 1.0) and np.allclose(G, G.T) and w[0] > -1e-9
            and int(np.sum(w > 1e-6 * w[-1])) <= dims)


@pytest.mark.parametrize(("n", "dims", "latent"), [(12, 16, 16), (12, 5, 8), (6, 3, 3)])
def test_gram_of_unit_vectors_is_attainable_with_r_one(n, dims, latent):
    A = unit_gram(n, dims)
    res = attainability(A, latent)
    assert res["psd"] and res["attainable"] and res["mean_condition"]
    assert res["rank_needed"] == min(n, dims) <= latent
    assert res["best_pearson_r"] == pytest.approx(1.0)
    assert res["note"].startswith("attainable: PSD")
    G = nearest_realisable(A, latent)  # the optimiser also finds A itself
    assert np.allclose(G, A, atol=1e-5)


def test_all_minus_point_nine_for_four_classes_violates_the_mean_condition():
    A = np.full((4, 4), -0.9)
    np.fill_diagonal(A, 1.0)
    res = attainability(A, 16)
    assert not res["psd"] and not res["mean_condition"] and not res["attainable"]
    assert res["mean_offdiag_bound"] == pytest.approx(-1 / 3)
    assert res["min_eigenvalue"] == pytest.approx(1 - 0.9 * 3)  # eigenvalue 1 + (n-1) c
    assert "-1/(n-1)" in res["note"] and res["note"].startswith("not attainable")
    # the nearest realisable matrix is the regular simplex: every cosine -1/(n-1)
    G = nearest_realisable(A, 3)
    assert realisable(G, 3)
    assert np.allclose(offdiag(G), -1 / 3, atol=1e-4)
    # two classes can be near-opposite: -0.9 is fine there
    assert attainability(np.array([[1.0, -0.9], [-0.9, 1.0]]), 2)["attainable"]


def test_rank_twelve_prior_in_four_latent_dims_is_not_reached():
    A = unit_gram(20, 12, seed=3)
    res = attainability(A, 4)
    assert res["psd"] and res["mean_condition"] and not res["attainable"]
    assert res["rank_needed"] == 12 and res["latent_dims"] == 4
    assert 0 < res["best_pearson_r"] < 1
    assert "rank 12 > 4" in res["note"]
    G = nearest_realisable(A, 4)
    assert realisable(G, 4)
    # nearer than the plain principal-axes fit, and more latent dims never hurt
    U = principal_axes_factor(A, 4)
    assert np.sum((offdiag(G) - offdiag(A)) ** 2) < np.sum((offdiag(U @ U.T) - offdiag(A)) ** 2)
    assert attainability(A, 8)["best_pearson_r"] > res["best_pearson_r"]


def test_non_psd_prior_that_meets_the_mean_condition_is_flagged_not_psd():
    # b and c both close to a, yet nearly opposite each other: no three unit vectors do that
    A = np.array([[1.0, 0.9, 0.9], [0.9, 1.0, -0.9], [0.9, -0.9, 1.0]])
    res = attainability(A, 16)
    assert res["mean_condition"] and not res["psd"] and not res["attainable"]
    assert "not PSD" in res["note"] and "-1/(n-1)" not in res["note"]
    G = nearest_realisable(A, 16)
    assert realisable(G, 3) and 0 < res["best_pearson_r"] < 1


def test_affinity_stage_warns_about_an_unattainable_final_matrix(caplog):
    import pandas as pd

    from affinity_vae.affinity.stage import warn_unattainable

    names = ["a", "b", "c", "d"]
    bad = np.full((4, 4), -0.9)
    np.fill_diagonal(bad, 1.0)
    with caplog.at_level("WARNING"):
        msg = warn_unattainable(pd.DataFrame(bad, index=names, columns=names))
    assert msg and "-1/(n-1)" in msg and "not positive semi-definite" in msg
    assert msg in caplog.text
    good = unit_gram(4, 3)
    assert warn_unattainable(pd.DataFrame(good, index=names, columns=names)) is None
