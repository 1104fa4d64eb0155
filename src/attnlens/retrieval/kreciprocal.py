r"""k-reciprocal re-ranking (Zhong, Zheng, Cao, Li, "Re-ranking Person Re-identification with
k-reciprocal Encoding", CVPR 2017), vectorized with sparse neighbour sets.

On the queries and gallery together (N = n_q + n_g points, L2-normalized features):
``d(p, g) = ||x_p - x_g||^2`` divided by the largest distance of ``p``'s row;
``N(p, k)`` = the ``k + 1`` nearest points of ``p`` (itself included);
``R(p, k) = {g in N(p, k) : p in N(g, k)}`` (k-reciprocal neighbours);
``R*(p, k1) = R(p, k1) U R(c, k1/2)`` for every ``c in R(p, k1)`` whose half-size set
overlaps ``R(p, k1)`` in more than 2/3 of its items;
``V_p[g] = exp(-d(p, g)) / sum`` on ``R*(p, k1)``, then local query expansion
``V_p <- mean of V_g over the k2 nearest g of p``;

.. math::
    d^*(p, g) = (1-\lambda)\Big(1 - \frac{\sum_j \min(V_{pj}, V_{gj})}
    {\sum_j \max(V_{pj}, V_{gj})}\Big) + \lambda\, d(p, g).

The sets are sparse boolean matrices (``R = F * F^T`` for the k-NN indicator F; the overlap
test is one sparse product), the Jaccard term one dense min-sum per query over the support
of ``V_p``. :mod:`attnlens.retrieval._reference` is the set-by-set implementation
(the structure of the authors' ``re_ranking`` function) used as the test oracle and the
benchmark's anchor. Defaults ``k1=20, k2=6, lambda=0.3`` are the paper's.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from attnlens._validation import Array, Integral, Interval, Real, raise_invalid, validate_params
from attnlens.retrieval._checks import (
    check_features,
    check_rerank_inputs,
    l2_normalize,
    reorder,
)

DEFAULT_K1 = 20
DEFAULT_K2 = 6
DEFAULT_LAMBDA = 0.3


def normalized_distances(X: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances of normalized rows, each row divided by its maximum."""
    X = l2_normalize(X)
    dist = np.maximum(2.0 - 2.0 * (X @ X.T), 0.0)  # (N, N)
    np.fill_diagonal(dist, 0.0)
    return dist / np.maximum(dist.max(axis=1, keepdims=True), np.finfo(float).tiny)


def nearest(dist: np.ndarray, m: int) -> np.ndarray:
    """The ``m`` nearest columns per row, nearest first (N, m)."""
    part = np.argpartition(dist, m - 1, axis=1)[:, :m]
    order = np.argsort(np.take_along_axis(dist, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def _indicator(rows: np.ndarray, n: int) -> sp.csr_matrix:
    r = np.repeat(np.arange(len(rows)), rows.shape[1])
    return sp.csr_matrix((np.ones(rows.size, dtype=np.float64), (r, rows.ravel())), shape=(n, n))


def _reciprocal(top: np.ndarray, n: int) -> sp.csr_matrix:
    forward = _indicator(top, n)
    return forward.multiply(forward.T).tocsr()  # g in N(p) and p in N(g)


def encoding(dist: np.ndarray, k1: int, k2: int) -> sp.csr_matrix:
    """The k-reciprocal feature vectors V (N, N), sparse, after local query expansion."""
    n = len(dist)
    top = nearest(dist, min(k1 + 1, n))
    R = _reciprocal(top, n)
    half = int(np.around(k1 / 2.0))
    Rh = _reciprocal(top[:, : half + 1], n)
    sizes = np.asarray(Rh.sum(axis=1)).ravel()  # |R(c, k1/2)|
    overlap = (R @ Rh.T).tocsr()  # [p, c] = |R(p, k1) & R(c, k1/2)|
    overlap = overlap.multiply(R).tocoo()  # only candidates c in R(p, k1)
    keep = overlap.data > (2.0 / 3.0) * sizes[overlap.col]
    chosen = sp.csr_matrix((np.ones(keep.sum()), (overlap.row[keep], overlap.col[keep])),
                           shape=(n, n))
    expanded = ((R + chosen @ Rh) > 0).tocoo()  # R*(p, k1)
    weights = np.exp(-dist[expanded.row, expanded.col])
    V = sp.csr_matrix((weights, (expanded.row, expanded.col)), shape=(n, n))
    V = sp.diags(1.0 / np.asarray(V.sum(axis=1)).ravel()) @ V
    if k2 > 1:
        M = _indicator(top[:, :k2], n) / k2  # mean over the k2 nearest
        V = M @ V
    return V.tocsr()


def jaccard(V: sp.csr_matrix, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``1 - sum min / sum max`` between rows ``rows`` and ``cols`` of V (each row sums to 1)."""
    Vc = V[cols].tocsc()
    out = np.empty((len(rows), len(cols)))
    for a, p in enumerate(rows):
        vp = V.getrow(p)
        support, values = vp.indices, vp.data
        block = Vc[:, support].toarray()  # (n_cols, |support|)
        shared = np.minimum(block, values[None, :]).sum(axis=1)  # sum_j min(V_p, V_g)
        out[a] = 1.0 - shared / (2.0 - shared)  # sum max = 2 - sum min
    return out


@validate_params({"Q": [Array(ndim=2)], "G": [Array(ndim=2)],
                  "k1": [Interval(Integral, 1, None)], "k2": [Interval(Integral, 1, None)],
                  "lambda_value": [Interval(Real, 0, 1)]})
def k_reciprocal_distance(Q: Any, G: Any, k1: int = DEFAULT_K1, k2: int = DEFAULT_K2,
                          lambda_value: float = DEFAULT_LAMBDA) -> np.ndarray:
    """The re-ranked distance ``d*`` (n_q, n_g) of the module docstring; smaller is closer."""
    Q, G = check_features(Q, G, "k_reciprocal_distance")
    n = len(Q) + len(G)
    if k1 >= n:
        raise_invalid("k1", f"an int < {n} (queries plus gallery)", k1,
                      "Lower k1 or enlarge the gallery.", "k_reciprocal_distance")
    if k2 > k1 + 1:
        raise_invalid("k2", f"an int <= k1 + 1 = {k1 + 1}", k2,
                      "Local query expansion averages within the k1 neighbourhood.",
                      "k_reciprocal_distance")
    dist = normalized_distances(np.concatenate([Q, G]))  # (N, N)
    V = encoding(dist, k1, k2)
    nq = len(Q)
    jac = jaccard(V, np.arange(nq), np.arange(nq, n))
    return (1.0 - lambda_value) * jac + lambda_value * dist[:nq, nq:]


@validate_params({"Q": [Array(ndim=2)], "G": [Array(ndim=2)],
                  "ranking": [Array(ndim=2, dtype=None)],
                  "k1": [Interval(Integral, 1, None)], "k2": [Interval(Integral, 1, None)],
                  "lambda_value": [Interval(Real, 0, 1)]})
def k_reciprocal_rerank(Q: Any, G: Any, ranking: Any, k1: int = DEFAULT_K1,
                        k2: int = DEFAULT_K2, lambda_value: float = DEFAULT_LAMBDA
                        ) -> np.ndarray:
    """Re-order each shortlist by the k-reciprocal distance: (n_q, K) -> (n_q, K)."""
    Q, G, ranking = check_rerank_inputs(Q, G, ranking, "k_reciprocal_rerank")
    dist = k_reciprocal_distance(Q, G, k1, k2, lambda_value)  # (n_q, n_g)
    return reorder(ranking, np.take_along_axis(dist, ranking, axis=1), descending=False)
