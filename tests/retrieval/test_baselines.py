"""Classic re-rankers, each against an independent path."""

from __future__ import annotations

import numpy as np
import pytest

from attnlens.retrieval import (
    alpha_query_expansion,
    average_query_expansion,
    diffusion_rerank,
    diffusion_scores,
    first_stage_ranking,
    k_reciprocal_distance,
    k_reciprocal_rerank,
)
from attnlens.retrieval._reference import diffusion_reference, k_reciprocal_reference

SEED = 11


def _clusters(nq=6, ng=60, d=8, seed=SEED):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((4, d)) * 2
    return (centers[rng.integers(0, 4, nq)] + rng.standard_normal((nq, d)),
            centers[rng.integers(0, 4, ng)] + rng.standard_normal((ng, d)))


@pytest.mark.parametrize(("k1", "k2", "lam"), [(20, 6, 0.3), (7, 1, 0.0), (5, 4, 1.0)])
def test_k_reciprocal_vectorized_equals_the_set_based_definition(k1, k2, lam):
    Q, G = _clusters()
    got = k_reciprocal_distance(Q, G, k1=k1, k2=k2, lambda_value=lam)
    np.testing.assert_allclose(got, k_reciprocal_reference(Q, G, k1, k2, lam), atol=1e-10)


def test_k_reciprocal_rerank_sorts_the_shortlist_by_that_distance():
    Q, G = _clusters()
    r = first_stage_ranking(Q, G, 25)
    out = k_reciprocal_rerank(Q, G, r, k1=8, k2=3)
    dist = k_reciprocal_reference(Q, G, 8, 3, 0.3)
    for i in range(len(Q)):
        assert set(out[i]) == set(r[i])
        assert np.all(np.diff(dist[i, out[i]]) >= -1e-12)


def test_diffusion_factorized_equals_per_query_conjugate_gradient():
    Q, G = _clusters()
    got = diffusion_scores(Q, G, k=10, alpha=0.9, gamma=3.0)
    np.testing.assert_allclose(got, diffusion_reference(Q, G, 10, 0.9, 3.0), atol=1e-8)
    r = first_stage_ranking(Q, G, 30)
    out = diffusion_rerank(Q, G, r, k=10, alpha=0.9)
    assert all(np.all(np.diff(got[i, out[i]]) <= 1e-12) for i in range(len(Q)))


def test_query_expansion_against_a_per_query_loop():
    Q, G = _clusters()
    r = first_stage_ranking(Q, G, 20)
    n, alpha = 4, 3.0
    Gn = G / np.linalg.norm(G, axis=1, keepdims=True)
    for fn, weight in ((average_query_expansion, lambda s: 1.0),
                       (alpha_query_expansion, lambda s: max(s, 0.0) ** alpha)):
        out = fn(Q, G, r, n=n) if fn is average_query_expansion else fn(Q, G, r, n=n,
                                                                         alpha=alpha)
        for i in range(len(Q)):
            q = Q[i] / np.linalg.norm(Q[i])
            new = q.copy()
            for g in r[i, :n]:
                new = new + weight(float(q @ Gn[g])) * Gn[g]
            want = sorted(r[i], key=lambda g, new=new: -(new @ Gn[g]))
            np.testing.assert_array_equal(out[i], want)
    np.testing.assert_array_equal(alpha_query_expansion(Q, G, r, n=n, alpha=0.0),
                                  average_query_expansion(Q, G, r, n=n))
