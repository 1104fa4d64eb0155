r"""Diffusion re-ranking (Iscen, Tolias, Avrithis, Furon, Chum, "Efficient Diffusion on Region
Manifolds", CVPR 2017), global-descriptor form, all queries in one block conjugate-gradient run.

Gallery graph: ``a_ij = (x_i^T x_j)_+^gamma`` when ``i`` and ``j`` are mutual k-nearest
neighbours (else 0), ``S = D^{-1/2} A D^{-1/2}``. Query ``q``: ``y_i = (q^T x_i)_+^gamma`` on
its ``k`` nearest gallery items, 0 elsewhere. Ranking scores ``f`` solve

.. math::  (I - \alpha S) f = y .

The paper solves one conjugate-gradient system per query; here one conjugate-gradient run
moves every query at once (a sparse-times-dense product per iteration, per-column step
sizes), until every column's residual is below ``CG_RTOL`` of its right-hand side. (A sparse
LU of ``I - alpha S`` was tried first: on a k-NN graph its fill-in made it slower than the
per-query loop.) The per-query CG of :mod:`attnlens.retrieval._reference` is the test oracle
and the benchmark's anchor.
Defaults ``k=50, alpha=0.99, gamma=3`` follow the paper's global-descriptor experiments.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import scipy.sparse as sp

from attnlens._validation import Array, Integral, Interval, Real, raise_invalid, validate_params
from attnlens.errors import ConvergenceWarning
from attnlens.retrieval._checks import check_features, check_rerank_inputs, l2_normalize, reorder

DEFAULT_K = 50
DEFAULT_ALPHA = 0.99
DEFAULT_GAMMA = 3.0
CG_RTOL = 1e-10
CG_MAXITER = 5000


def block_conjugate_gradient(A: sp.spmatrix, B: np.ndarray, rtol: float = CG_RTOL,
                             maxiter: int = CG_MAXITER) -> np.ndarray:
    """Solve ``A X = B`` for symmetric positive definite ``A``, all columns of B together.

    Plain CG per column, vectorized across columns; converged columns stop moving.
    """
    X = np.zeros_like(B)
    R = B.copy()  # residuals (n, m)
    P = R.copy()
    rs = np.einsum("ij,ij->j", R, R)  # (m,)
    target = (rtol ** 2) * np.maximum(np.einsum("ij,ij->j", B, B), np.finfo(float).tiny)
    for _ in range(maxiter):
        active = rs > target
        if not active.any():
            return X
        AP = A @ P  # (n, m)
        curv = np.einsum("ij,ij->j", P, AP)
        alpha = np.where(active, rs / np.where(active, curv, 1.0), 0.0)
        X += alpha * P
        R -= alpha * AP
        rs_new = np.einsum("ij,ij->j", R, R)
        beta = np.where(active, rs_new / np.where(active, rs, 1.0), 0.0)
        P = R + beta * P
        rs = rs_new
    warnings.warn(f"diffusion: conjugate gradient stopped after {maxiter} iterations with "
                  f"{int((rs > target).sum())} queries above rtol={rtol:g}.",
                  ConvergenceWarning, stacklevel=3)
    return X


def _top(sim: np.ndarray, k: int) -> np.ndarray:
    return np.argpartition(-sim, k - 1, axis=1)[:, :k]


def diffusion_system(G: np.ndarray, k: int, alpha: float, gamma: float) -> sp.csr_matrix:
    """``I - alpha S`` (n_g, n_g), sparse, for normalized gallery features."""
    n = len(G)
    sim = G @ G.T  # (n_g, n_g)
    np.fill_diagonal(sim, -np.inf)  # no self loops
    top = _top(sim, k)  # (n_g, k)
    rows = np.repeat(np.arange(n), k)
    knn = sp.csr_matrix((np.ones(n * k), (rows, top.ravel())), shape=(n, n))
    mutual = knn.multiply(knn.T).tocoo()
    weights = np.maximum(sim[mutual.row, mutual.col], 0.0) ** gamma
    A = sp.csr_matrix((weights, (mutual.row, mutual.col)), shape=(n, n))
    deg = np.asarray(A.sum(axis=1)).ravel()
    inv = np.where(deg > 0, 1.0 / np.sqrt(np.where(deg > 0, deg, 1.0)), 0.0)
    S = sp.diags(inv) @ A @ sp.diags(inv)
    return (sp.identity(n, format="csr") - alpha * S).tocsr()


def query_vectors(Q: np.ndarray, G: np.ndarray, k: int, gamma: float) -> np.ndarray:
    """Initial vectors y (n_g, n_q) of the normalized queries."""
    sim = Q @ G.T  # (n_q, n_g)
    top = _top(sim, k)  # (n_q, k)
    Y = np.zeros_like(sim)
    vals = np.maximum(np.take_along_axis(sim, top, axis=1), 0.0) ** gamma
    np.put_along_axis(Y, top, vals, axis=1)
    return Y.T


@validate_params({"Q": [Array(ndim=2)], "G": [Array(ndim=2)],
                  "k": [Interval(Integral, 1, None)],
                  "alpha": [Interval(Real, 0, 1, closed="neither")],
                  "gamma": [Interval(Real, 0, None, closed="neither")]})
def diffusion_scores(Q: Any, G: Any, k: int = DEFAULT_K, alpha: float = DEFAULT_ALPHA,
                     gamma: float = DEFAULT_GAMMA) -> np.ndarray:
    """Diffusion scores ``f`` (n_q, n_g) of the module docstring; larger is closer."""
    Q, G = check_features(Q, G, "diffusion_scores")
    if k >= len(G):
        raise_invalid("k", f"an int < {len(G)} (the gallery size)", k,
                      "Lower k: the graph links each item to k others.", "diffusion_scores")
    Q, G = l2_normalize(Q), l2_normalize(G)
    system = diffusion_system(G, k, alpha, gamma)
    Y = query_vectors(Q, G, k, gamma)  # (n_g, n_q)
    return block_conjugate_gradient(system, Y).T  # (n_q, n_g)


@validate_params({"Q": [Array(ndim=2)], "G": [Array(ndim=2)],
                  "ranking": [Array(ndim=2, dtype=None)],
                  "k": [Interval(Integral, 1, None)],
                  "alpha": [Interval(Real, 0, 1, closed="neither")],
                  "gamma": [Interval(Real, 0, None, closed="neither")]})
def diffusion_rerank(Q: Any, G: Any, ranking: Any, k: int = DEFAULT_K,
                     alpha: float = DEFAULT_ALPHA, gamma: float = DEFAULT_GAMMA) -> np.ndarray:
    """Re-order each shortlist by its diffusion scores: (n_q, K) -> (n_q, K)."""
    Q, G, ranking = check_rerank_inputs(Q, G, ranking, "diffusion_rerank")
    f = diffusion_scores(Q, G, k, alpha, gamma)
    return reorder(ranking, np.take_along_axis(f, ranking, axis=1))
