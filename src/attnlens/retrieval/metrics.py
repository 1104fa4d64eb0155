"""Ranking metrics: average precision, mAP, precision at k (mP@k).

Relevance is label equality: gallery item ``g`` is relevant to query ``q`` when
``gallery_labels[g] == query_labels[q]``. A ranking may be a shortlist (n_q, K): relevant
items it does not list count as retrieved at no rank (precision 0), i.e. AP divides by the
number of relevant items in the whole gallery. Queries without any relevant item are left
out of the means (the revisited Oxford/Paris evaluation does the same).

Two interpolations of AP:
- ``"step"`` (default): ``AP = 1/R sum_{i: rel_i} P@i``, the non-interpolated sum, equal to
  scikit-learn's ``average_precision_score`` on the full ranking (tested);
- ``"trapezoid"``: the Oxford/Paris ``compute_ap`` used by the CSA code
  (``utils/evaluate.py``), averaging the precision before and at each relevant item.

``mP@k`` here is the plain mean fraction of relevant items in the top k (the revisitop code
divides by ``min(k, rank of the last relevant item)`` instead; stated where compared).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from attnlens._validation import (
    Array,
    Integral,
    Options,
    check_array,
    raise_invalid,
    validate_params,
)
from attnlens.retrieval._checks import check_ranking

DEFAULT_KS = (1, 5, 10)


@dataclass(frozen=True)
class RankingMetrics:
    """mAP and mP@k of a ranking (fractions in [0, 1]), plus the per-query APs.

    ``ap`` holds NaN for queries without relevant items; ``n_queries`` counts the others.
    """

    map: float
    mp_at_k: dict[int, float]
    ap: np.ndarray = field(repr=False)
    n_queries: int
    interpolation: str

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mAP": self.map, "n_queries": self.n_queries}
        out.update({f"mP@{k}": v for k, v in self.mp_at_k.items()})
        return out


def _hits(ranking: np.ndarray, query_labels: np.ndarray, gallery_labels: np.ndarray
          ) -> np.ndarray:
    return gallery_labels[ranking] == query_labels[:, None]  # (n_q, K) bool


def average_precision_from_hits(hits: np.ndarray, n_relevant: np.ndarray,
                                interpolation: str = "step") -> np.ndarray:
    """Per-query AP from relevance flags in rank order (n_q, K) and relevant counts (n_q,)."""
    hits = hits.astype(np.float64)
    ranks = np.arange(1, hits.shape[1] + 1, dtype=np.float64)  # 1-based rank
    found = np.cumsum(hits, axis=1)  # relevant items up to and including each rank
    if interpolation == "step":
        total = np.sum(hits * found / ranks, axis=1)
    else:  # trapezoid: mean of the precision just before and at each relevant item
        before = np.where(ranks > 1, (found - 1) / np.maximum(ranks - 1, 1), 1.0)
        total = np.sum(hits * (before + found / ranks) / 2.0, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_relevant > 0, total / np.maximum(n_relevant, 1), np.nan)


@validate_params({
    "ranking": [Array(ndim=2, dtype=None)],
    "query_labels": [Array(ndim=1, dtype=None)],
    "gallery_labels": [Array(ndim=1, dtype=None)],
    "ks": [tuple, list],
    "exclude": [None, Array(ndim=1, dtype=None)],
    "interpolation": [Options("step", "trapezoid")],
})
def evaluate_ranking(ranking: Any, query_labels: Any, gallery_labels: Any,
                     ks: tuple[int, ...] = DEFAULT_KS, exclude: Any = None,
                     interpolation: str = "step") -> RankingMetrics:
    """mAP and mP@k of ``ranking`` (n_q, K) of gallery indices, relevance = same label.

    ``exclude`` (n_q,): a gallery index per query that is the query itself (-1: none); it is
    neither relevant nor counted (junk, as in the Oxford/Paris protocol), and must not appear
    in the ranking.
    """
    caller = "evaluate_ranking"
    ql = check_array(query_labels, "query_labels", ndim=1, dtype=None, caller=caller)
    gl = check_array(gallery_labels, "gallery_labels", ndim=1, dtype=None, caller=caller)
    ranking = check_ranking(ranking, len(ql), len(gl), caller)
    for k in ks:
        if not isinstance(k, Integral) or isinstance(k, bool) or k < 1:
            raise_invalid("ks", "a sequence of ints >= 1", ks, "For example (1, 5, 10).", caller)
    hits = _hits(ranking, ql, gl)
    n_relevant = (gl[None, :] == ql[:, None]).sum(axis=1).astype(np.float64)  # (n_q,)
    if exclude is not None:
        ex = check_array(exclude, "exclude", ndim=1, dtype=np.int64, caller=caller)
        if ex.shape != (len(ql),) or ex.max() >= len(gl) or ex.min() < -1:
            raise_invalid("exclude", f"{len(ql)} gallery indices in [-1, {len(gl)})", ex,
                          "Use -1 for queries that are not in the gallery.", caller)
        own = ex >= 0
        if np.any(ranking[own] == ex[own, None]):
            raise_invalid("ranking", "free of each query's own gallery copy (exclude)",
                          "got a ranking listing it", "Rank with first_stage_ranking("
                          "..., exclude=...).", caller)
        n_relevant -= own & (gl[np.maximum(ex, 0)] == ql)
    ap = average_precision_from_hits(hits, n_relevant, interpolation)
    valid = n_relevant > 0
    if not np.any(valid):
        raise_invalid("gallery_labels", "labels giving some query a relevant item",
                      "got no query with a relevant gallery item",
                      "Check that queries and gallery share classes.", caller)
    mp = {int(k): float(np.mean(hits[valid, :k].sum(axis=1) / k)) for k in ks}
    return RankingMetrics(map=float(np.nanmean(ap)), mp_at_k=mp, ap=ap,
                          n_queries=int(valid.sum()), interpolation=interpolation)


