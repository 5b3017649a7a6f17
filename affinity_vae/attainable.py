"""Is an affinity prior attainable by cosine similarities of L-dimensional latent vectors?

The aVAE pulls the cosine similarity of two particles' latent means towards their classes'
affinity A_mn. The cosines of C unit vectors in R^L form a Gram matrix G = X X^T (X: (C, L),
unit rows): symmetric, unit diagonal, positive semi-definite (PSD) and of rank <= L. A prior
that is not such a matrix cannot be reached by any encoder, however well trained.

Exact necessary condition (a special case of PSD, reported on its own because it explains the
commonest failure, strongly negative signed affinities): for n unit vectors
``|x_1 + ... + x_n|^2 = n + n (n - 1) mean_{i != j} x_i . x_j >= 0``, so the mean off-diagonal
cosine is >= -1/(n-1). Pairwise values near -0.9 are realisable for two classes only.

:func:`nearest_realisable` finds the nearest realisable matrix (least squares over the
off-diagonal entries) by the hypersphere parametrisation of Rebonato & Jaeckel (1999): X is
optimised with its rows kept on the unit sphere (x_i / |x_i|), L-BFGS from the principal-axes
factor (top-L eigenpairs, rows normalised), so the result is realisable by construction.
:func:`attainability` reports the Pearson r between A's off-diagonal entries and those of that
nearest realisable matrix -- "the r of the nearest realisable matrix", the r a model would score
whose latent class geometry reached the closest geometry it can. Pearson r is affine-invariant,
so a realisable matrix chosen for r alone may score somewhat higher; this is not a strict upper
bound on a learned r. numpy/scipy only: imported by the affinity and evaluate stages.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize

PSD_TOL = 1e-9   # min eigenvalue >= -PSD_TOL * max|eigenvalue| counts as PSD
RANK_TOL = 1e-6  # eigenvalues > RANK_TOL * largest count towards the rank


def _eig(A: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (ascending) and eigenvectors of the symmetric part of A (C, C)."""
    A = np.asarray(A, dtype=float)
    return np.linalg.eigh((A + A.T) / 2)


def offdiag(A: np.ndarray) -> np.ndarray:
    """The upper off-diagonal entries of a (C, C) matrix, (C (C - 1) / 2,)."""
    return np.asarray(A, dtype=float)[np.triu_indices(len(A), k=1)]


def pearson_offdiag(A: np.ndarray, B: np.ndarray) -> float:
    """Pearson r of the off-diagonal entries of two (C, C) matrices; NaN when either is
    constant (or C < 3)."""
    a, b = offdiag(A), offdiag(B)
    if len(a) < 2 or np.ptp(a) < 1e-12 or np.ptp(b) < 1e-12:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def is_psd(A: np.ndarray) -> tuple[bool, float]:
    """(PSD within the relative tolerance, min eigenvalue) of a symmetric (C, C) matrix."""
    w, _ = _eig(A)
    scale = max(float(np.max(np.abs(w))), 1e-300)
    return bool(w[0] >= -PSD_TOL * scale), float(w[0])


def rank_needed(A: np.ndarray) -> int:
    """Eigenvalues of A (C, C) above RANK_TOL x the largest: the latent dimensions a Gram
    matrix equal to A would need (of its PSD part when A is not PSD)."""
    w, _ = _eig(A)
    top = float(w[-1])
    return int(np.sum(w > RANK_TOL * top)) if top > 0 else 0


def mean_condition(A: np.ndarray) -> tuple[bool, float, float]:
    """The n-unit-vector condition: (mean off-diagonal >= -1/(n-1), mean off-diagonal, bound)."""
    n = len(A)
    if n < 2:
        return True, float("nan"), float("-inf")
    mean = float(np.mean(offdiag((np.asarray(A) + np.asarray(A).T) / 2)))
    bound = -1.0 / (n - 1)
    return bool(mean >= bound - 1e-12), mean, bound


def principal_axes_factor(A: np.ndarray, latent_dims: int) -> np.ndarray:
    """X (C, L'), L' = min(L, C): top eigenpairs of A, rows normalised to unit length (a row
    that vanishes gets the first axis)."""
    w, V = _eig(A)
    k = min(int(latent_dims), len(A))
    X = V[:, ::-1][:, :k] * np.sqrt(np.clip(w[::-1][:k], 0.0, None))
    norm = np.linalg.norm(X, axis=1, keepdims=True)
    X = np.where(norm > 1e-12, X / np.where(norm > 1e-12, norm, 1.0), 0.0)
    X[norm[:, 0] <= 1e-12, 0] = 1.0
    return X


def _loss(flat: np.ndarray, A: np.ndarray, shape: tuple[int, int]) -> tuple[float, np.ndarray]:
    """Sum over i != j of (u_i . u_j - A_ij)^2 with u_i = x_i / |x_i|, and its gradient."""
    X = flat.reshape(shape)
    norm = np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    U = X / norm
    R = U @ U.T - A
    np.fill_diagonal(R, 0.0)
    gU = 4.0 * R @ U                                   # d/dU of sum_{i != j} R_ij^2
    gX = (gU - U * np.sum(gU * U, axis=1, keepdims=True)) / norm
    return float(np.sum(R * R)), gX.ravel()


def nearest_realisable(A: np.ndarray, latent_dims: int, restarts: int = 3, seed: int = 0
                       ) -> np.ndarray:
    """The nearest realisable matrix to A (C, C): U U^T with U (C, min(L, C)) unit rows,
    minimising the squared off-diagonal distance to A (see module docstring). Returns (C, C).

    Starts: the principal-axes factor plus ``restarts`` random ones (seeded); the best wins.
    """
    A = (np.asarray(A, dtype=float) + np.asarray(A, dtype=float).T) / 2
    C = len(A)
    if C < 2:
        return np.ones((C, C))
    k = max(1, min(int(latent_dims), C))
    rng = np.random.default_rng(seed)
    starts = [principal_axes_factor(A, k)] + [rng.standard_normal((C, k))
                                              for _ in range(restarts)]
    best, best_f = starts[0], np.inf
    for X0 in starts:
        r = minimize(_loss, X0.ravel(), args=(A, X0.shape), jac=True, method="L-BFGS-B",
                     options={"maxiter": 2000, "gtol": 1e-10, "ftol": 1e-14})
        if r.fun < best_f:
            best, best_f = r.x.reshape(X0.shape), float(r.fun)
    U = best / np.maximum(np.linalg.norm(best, axis=1, keepdims=True), 1e-12)
    G = U @ U.T
    np.fill_diagonal(G, 1.0)
    return G


def attainability(A: np.ndarray, latent_dims: int) -> dict:
    """Can cosines of ``latent_dims``-dimensional latent vectors equal the affinity A (C, C)?

    Returns:
        {psd, min_eigenvalue, rank_needed, latent_dims, best_pearson_r (r of the nearest
        realisable matrix, NaN when off-diagonals are constant), mean_offdiag,
        mean_offdiag_bound (-1/(n-1)), mean_condition (bool), attainable (bool), note}.
    """
    A = np.asarray(A, dtype=float)
    L = int(latent_dims)
    psd, min_eig = is_psd(A)
    rank = rank_needed(A)
    ok_mean, mean, bound = mean_condition(A)
    attainable = psd and rank <= L
    r = pearson_offdiag(A, A if attainable else nearest_realisable(A, L))
    r_txt = "undefined (constant off-diagonals)" if not np.isfinite(r) else f"{r:.4f}"
    if attainable:
        note = f"attainable: PSD, rank {rank} <= {L} latent dims"
    else:
        why = []
        if not ok_mean:
            why.append(f"mean off-diagonal {mean:.2f} < -1/(n-1) = {bound:.2f} for n = {len(A)} "
                       f"classes (cosines of n unit vectors average >= -1/(n-1))")
        if not psd:
            why.append(f"not PSD (min eigenvalue {min_eig:.3g}): no unit vectors have these "
                       f"cosines in any dimension")
        if psd and rank > L:
            why.append(f"rank {rank} > {L} latent dims")
        head = "not exactly attainable" if psd else "not attainable"  # PSD: only the rank cap
        note = f"{head}: {'; '.join(why)}; best reachable r {r_txt}"
    return {"psd": psd, "min_eigenvalue": min_eig, "rank_needed": rank, "latent_dims": L,
            "best_pearson_r": r, "mean_offdiag": mean, "mean_offdiag_bound": bound,
            "mean_condition": ok_mean, "attainable": attainable, "note": note}
