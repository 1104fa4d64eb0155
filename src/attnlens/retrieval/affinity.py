r"""Affinity features of a ranking list (Ouyang et al., NeurIPS 2021, Sec. 3.1).

For a query ``q`` with shortlist ``x_1..x_K`` (best first), the anchors are the query and
its top ``L - 1`` items, ``a = (q, x_1, ..., x_{L-1})``; every list member ``v`` in
``(q, x_1, ..., x_K)`` is represented by its similarities to the anchors,

.. math::  f(v) = (\langle v, a_1\rangle, \dots, \langle v, a_L\rangle) \in \mathbb{R}^L,

on L2-normalized features (the official ``test.py`` builds exactly this ``(1 + K) x L``
matrix, query first, from GeM features that are already normalized). The re-ranker only sees
these similarities, never the features, so it applies to any first-stage retrieval.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from attnlens._validation import Array, Integral, Interval, raise_invalid, validate_params
from attnlens.retrieval._checks import check_rerank_inputs, l2_normalize


def affinity_from_normalized(Q: np.ndarray, G: np.ndarray, ranking: np.ndarray,
                             n_anchors: int) -> np.ndarray:
    """(n_q, 1 + K, L) float32 affinities for normalized ``Q``, ``G`` (no checks).

    Computed in float32 by one batched BLAS product (``np.einsum`` without BLAS in float64
    took ~5x longer for K = 100, L = 64 and 1,000 queries; the model runs in float32 anyway).
    """
    Q32, G32 = Q.astype(np.float32, copy=False), G.astype(np.float32, copy=False)
    members = np.concatenate([Q32[:, None, :], G32[ranking]], axis=1)  # (n_q, 1+K, d)
    anchors = members[:, :n_anchors, :]  # (n_q, L, d): query + top L-1
    return np.matmul(members, anchors.transpose(0, 2, 1))  # (n_q, 1+K, L)


@validate_params({"Q": [Array(ndim=2)], "G": [Array(ndim=2)],
                  "ranking": [Array(ndim=2, dtype=None)],
                  "n_anchors": [Interval(Integral, 1, None)]})
def affinity_features(Q: Any, G: Any, ranking: Any, n_anchors: int) -> np.ndarray:
    """Affinity features (n_q, 1 + K, L) of each query's list; row 0 is the query.

    Q (n_q, d), G (n_g, d), ranking (n_q, K) gallery indices best first, ``n_anchors`` = L
    (the query and its top L - 1 items; needs ``L - 1 <= K``).
    """
    Q, G, ranking = check_rerank_inputs(Q, G, ranking, "affinity_features")
    if n_anchors - 1 > ranking.shape[1]:
        raise_invalid("n_anchors", f"an int <= K + 1 = {ranking.shape[1] + 1}", n_anchors,
                      "The anchors are the query and its top L - 1 items.",
                      "affinity_features")
    return affinity_from_normalized(l2_normalize(Q), l2_normalize(G), ranking, n_anchors)
