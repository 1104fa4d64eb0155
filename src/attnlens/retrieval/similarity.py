"""First-stage retrieval: cosine similarity, top-K shortlists, queries found in the gallery.

Protocol for a query that is also a gallery item (the "query in the gallery by accident"
case): as in the Oxford/Paris protocols, where the query image is declared *junk* for its own
ranking, the copy is removed from that query's ranking and from its count of relevant items.
:func:`find_query_duplicates` finds such copies (identical features up to ``tol``), and
:func:`first_stage_ranking` takes them as ``exclude``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from attnlens._validation import Array, Integral, Interval, Real, raise_invalid, validate_params
from attnlens.retrieval._checks import check_features, check_ranking, l2_normalize


def cosine_similarity(Q: np.ndarray, G: np.ndarray) -> np.ndarray:
    """(n_q, n_g) cosine similarities of L2-normalized rows."""
    return l2_normalize(Q) @ l2_normalize(G).T


@validate_params({"Q": [Array(ndim=2)], "G": [Array(ndim=2)],
                  "tol": [Interval(Real, 0, None)]})
def find_query_duplicates(Q: Any, G: Any, tol: float = 1e-6) -> np.ndarray:
    """For each query the index of a gallery item with the same normalized features, else -1.

    Same means a cosine distance ``1 - cos <= tol``. Returns (n_q,) int64.
    """
    Q, G = check_features(Q, G, "find_query_duplicates")
    sim = cosine_similarity(Q, G)  # (n_q, n_g)
    best = sim.argmax(axis=1)
    found = 1.0 - sim[np.arange(len(Q)), best] <= tol
    return np.where(found, best, -1).astype(np.int64)


@validate_params({"Q": [Array(ndim=2)], "G": [Array(ndim=2)],
                  "k": [Interval(Integral, 1, None)],
                  "exclude": [None, Array(ndim=1, dtype=None)]})
def first_stage_ranking(Q: Any, G: Any, k: int, exclude: Any = None) -> np.ndarray:
    """Top-``k`` gallery indices per query by cosine similarity, best first: (n_q, k) int64.

    ``exclude`` (n_q,) gives a gallery index to drop from each query's ranking (-1: none),
    for queries that are gallery items (see the module docstring). ``k`` must not exceed the
    number of gallery items a query can rank.
    """
    Q, G = check_features(Q, G, "first_stage_ranking")
    sim = cosine_similarity(Q, G)  # (n_q, n_g)
    available = len(G)
    if exclude is not None:
        exclude = np.asarray(exclude)
        if exclude.shape != (len(Q),) or exclude.dtype.kind not in "iu":
            raise_invalid("exclude", f"an int array of shape ({len(Q)},)", exclude,
                          "One gallery index (or -1) per query.", "first_stage_ranking")
        if exclude.max() >= len(G) or exclude.min() < -1:
            raise_invalid("exclude", f"gallery indices in [-1, {len(G)})", exclude,
                          "Use -1 for queries that are not in the gallery.",
                          "first_stage_ranking")
        rows = np.flatnonzero(exclude >= 0)
        sim[rows, exclude[rows]] = -np.inf
        available -= int(len(rows) > 0)
    if k > available:
        raise_invalid("k", f"an int <= {available} (the gallery items a query can rank)", k,
                      "Lower k or enlarge the gallery.", "first_stage_ranking")
    part = np.argpartition(-sim, k - 1, axis=1)[:, :k]  # (n_q, k) unordered
    order = np.argsort(-np.take_along_axis(sim, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1).astype(np.int64)


@validate_params({"shortlist": [Array(ndim=2, dtype=None)], "full": [Array(ndim=2, dtype=None)]})
def complete_ranking(shortlist: Any, full: Any) -> np.ndarray:
    """The re-ranked shortlist followed by the rest of ``full`` in its first-stage order.

    ``shortlist`` (n_q, K) holds the same items as ``full[:, :K]`` (n_q, N); returns (n_q, N).
    """
    full = check_ranking(full, len(np.asarray(full)), int(np.max(full)) + 1,
                         "complete_ranking", "full")
    shortlist = check_ranking(shortlist, len(full), int(np.max(full)) + 1,
                              "complete_ranking", "shortlist")
    k = shortlist.shape[1]
    if k > full.shape[1] or not np.array_equal(np.sort(shortlist, axis=1),
                                               np.sort(full[:, :k], axis=1)):
        raise_invalid("shortlist", "a re-ordering of full[:, :K]", "got other items",
                      "Re-rank the first K items of the full ranking.", "complete_ranking")
    return np.concatenate([shortlist, full[:, k:]], axis=1)
