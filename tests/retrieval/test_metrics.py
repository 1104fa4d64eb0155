"""mAP / mP@k against scikit-learn and against a direct port of the Oxford ``compute_ap``."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score
from sklearn.metrics.pairwise import cosine_similarity

from attnlens.errors import InvalidParameterError
from attnlens.retrieval import evaluate_ranking, first_stage_ranking

SEED = 7


def _data(nq=12, ng=80, d=10, classes=4):
    rng = np.random.default_rng(SEED)
    return (rng.standard_normal((nq, d)), rng.standard_normal((ng, d)),
            rng.integers(0, classes, nq), rng.integers(0, classes, ng))


def test_step_ap_equals_sklearn_on_full_rankings():
    Q, G, ql, gl = _data()
    ranking = first_stage_ranking(Q, G, len(G))
    got = evaluate_ranking(ranking, ql, gl)
    scores = cosine_similarity(Q, G)
    want = [average_precision_score(gl == ql[i], scores[i]) for i in range(len(Q))]
    np.testing.assert_allclose(got.ap, want, atol=1e-12)
    assert got.map == pytest.approx(np.mean(want))


def _oxford_compute_ap(ranks, nres):
    """The loop of the Oxford/Paris evaluation (CSA utils/evaluate.py), written out here."""
    ap = 0.0
    for index, rank in enumerate(ranks):
        precision_0 = 1.0 if rank == 0 else index / rank
        precision_1 = (index + 1) / (rank + 1)
        ap += (precision_0 + precision_1) / (2.0 * nres)
    return ap


def test_trapezoid_ap_equals_the_oxford_loop_on_shortlists():
    Q, G, ql, gl = _data()
    ranking = first_stage_ranking(Q, G, 30)
    got = evaluate_ranking(ranking, ql, gl, interpolation="trapezoid")
    for i in range(len(Q)):
        pos = np.flatnonzero(gl[ranking[i]] == ql[i])
        nres = int(np.sum(gl == ql[i]))
        want = _oxford_compute_ap(pos, nres) if nres else np.nan
        np.testing.assert_allclose(got.ap[i], want, atol=1e-12)


def test_precision_at_k_counts_relevant_items():
    Q, G, ql, gl = _data()
    ranking = first_stage_ranking(Q, G, 20)
    got = evaluate_ranking(ranking, ql, gl, ks=(1, 5, 10))
    valid = [i for i in range(len(Q)) if np.any(gl == ql[i])]
    for k in (1, 5, 10):
        want = np.mean([sum(gl[g] == ql[i] for g in ranking[i, :k]) / k for i in valid])
        assert got.mp_at_k[k] == pytest.approx(want)


def test_a_query_in_the_gallery_is_junk_like_removing_it():
    Q, G, ql, gl = _data()
    G2 = np.concatenate([G, Q[:1]])  # query 0 is also a gallery item, by accident
    gl2 = np.concatenate([gl, ql[:1]])
    exclude = np.array([len(G)] + [-1] * (len(Q) - 1))
    ranked = first_stage_ranking(Q[:1], G2, len(G), exclude=exclude[:1])
    got = evaluate_ranking(ranked, ql[:1], gl2, exclude=exclude[:1])
    want = evaluate_ranking(first_stage_ranking(Q[:1], G, len(G)), ql[:1], gl)
    np.testing.assert_allclose(got.ap, want.ap, atol=1e-12)
    naive = evaluate_ranking(first_stage_ranking(Q[:1], G2, len(G2)), ql[:1], gl2)
    assert naive.ap[0] > got.ap[0]  # the copy at rank 1 inflates AP when not excluded
    with pytest.raises(InvalidParameterError, match="exclude"):
        evaluate_ranking(first_stage_ranking(Q, G2, 5), ql, gl2, exclude=exclude)
