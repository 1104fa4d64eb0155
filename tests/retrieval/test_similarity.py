"""First-stage ranking and the shared input checks (bad input named and explained)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics.pairwise import cosine_similarity

from attnlens.errors import InvalidParameterError
from attnlens.retrieval import (
    average_query_expansion,
    complete_ranking,
    find_query_duplicates,
    first_stage_ranking,
)

SEED = 3


def test_first_stage_is_the_argsort_of_cosine_similarity():
    rng = np.random.default_rng(SEED)
    Q, G = rng.standard_normal((6, 5)), rng.standard_normal((50, 5))
    want = np.argsort(-cosine_similarity(Q, G), axis=1, kind="stable")[:, :12]
    np.testing.assert_array_equal(first_stage_ranking(Q, G, 12), want)
    full = first_stage_ranking(Q, G, 50)
    np.testing.assert_array_equal(complete_ranking(full[:, :12][:, ::-1], full)[:, 12:],
                                  full[:, 12:])


def test_duplicates_are_found_and_excluded():
    rng = np.random.default_rng(SEED)
    G = rng.standard_normal((30, 4))
    Q = np.concatenate([G[[4, 9]] * 2.0, rng.standard_normal((1, 4))])  # scaled copies
    dup = find_query_duplicates(Q, G)
    np.testing.assert_array_equal(dup, [4, 9, -1])
    ranked = first_stage_ranking(Q, G, 29, exclude=dup)
    assert 4 not in ranked[0] and 9 not in ranked[1]
    with pytest.raises(InvalidParameterError, match="k must be an int <= 29"):
        first_stage_ranking(Q, G, 30, exclude=dup)


@pytest.mark.parametrize(("change", "name"), [
    (lambda Q, G, r: (Q[:, :3], G, r), "G"),  # mismatched dimensions
    (lambda Q, G, r: (Q, G, np.concatenate([r, r], axis=1)), "ranking"),  # K > gallery
    (lambda Q, G, r: (Q, G, r + 100), "ranking"),  # not gallery indices
    (lambda Q, G, r: (Q, G, r[:, [0, 0, 1]]), "ranking"),  # a repeated item
    (lambda Q, G, r: (Q, G, r.astype(float)), "ranking"),  # not integers
])
def test_bad_rerank_input_is_refused_by_name(change, name):
    rng = np.random.default_rng(SEED)
    Q, G = rng.standard_normal((4, 5)), rng.standard_normal((20, 5))
    r = first_stage_ranking(Q, G, 20)
    Q2, G2, r2 = change(Q, G, r)
    with pytest.raises(InvalidParameterError, match=name):
        average_query_expansion(Q2, G2, r2, n=2)


def test_nan_features_are_refused():
    rng = np.random.default_rng(SEED)
    Q, G = rng.standard_normal((4, 5)), rng.standard_normal((20, 5))
    G[3, 2] = np.nan
    with pytest.raises(InvalidParameterError, match="G must be finite"):
        first_stage_ranking(Q, G, 5)
