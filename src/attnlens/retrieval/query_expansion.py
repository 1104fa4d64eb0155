r"""Query expansion: average QE (Chum et al., ICCV 2007) and alpha-QE (Radenovic et al., TPAMI 2018).

With L2-normalized features and the query's first-stage top-``n`` items ``x_1..x_n``:

.. math::
    \tilde q = \mathrm{normalize}\Big(q + \sum_{i=1}^{n} w_i x_i\Big),\qquad
    w_i = 1 \;(\text{average QE}),\quad w_i = (q^\top x_i)_+^{\alpha} \;(\alpha\text{-QE}).

(``alpha = 0`` gives average QE.) The shortlist is then re-ordered by ``\tilde q^\top x``.
Implemented here (no maintained library ships these for arbitrary features); one batched
matrix product for all queries.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from attnlens._validation import Array, Integral, Interval, Real, raise_invalid, validate_params
from attnlens.retrieval._checks import check_rerank_inputs, l2_normalize, reorder

DEFAULT_N = 10
DEFAULT_ALPHA = 3.0


def expanded_queries(Q: np.ndarray, G: np.ndarray, ranking: np.ndarray, n: int,
                     alpha: float) -> np.ndarray:
    """The expanded, normalized queries (n_q, d) of the formula above (inputs normalized)."""
    top = G[ranking[:, :n]]  # (n_q, n, d)
    sims = np.einsum("qd,qnd->qn", Q, top)  # (n_q, n)
    weights = np.maximum(sims, 0.0) ** alpha if alpha > 0 else np.ones_like(sims)
    return l2_normalize(Q + np.einsum("qn,qnd->qd", weights, top))


def _rerank(Q: Any, G: Any, ranking: Any, n: int, alpha: float, caller: str) -> np.ndarray:
    Q, G, ranking = check_rerank_inputs(Q, G, ranking, caller)
    if n > ranking.shape[1]:
        raise_invalid("n", f"an int <= K = {ranking.shape[1]} (the shortlist length)", n,
                      "Expand with at most the listed items.", caller)
    Q, G = l2_normalize(Q), l2_normalize(G)
    q_new = expanded_queries(Q, G, ranking, n, alpha)  # (n_q, d)
    scores = np.einsum("qd,qkd->qk", q_new, G[ranking])  # (n_q, K)
    return reorder(ranking, scores)


@validate_params({"Q": [Array(ndim=2)], "G": [Array(ndim=2)],
                  "ranking": [Array(ndim=2, dtype=None)], "n": [Interval(Integral, 1, None)]})
def average_query_expansion(Q: Any, G: Any, ranking: Any, n: int = DEFAULT_N) -> np.ndarray:
    """Average QE: re-order each shortlist by the mean of the query and its top-``n``.

    Q (n_q, d), G (n_g, d), ranking (n_q, K) gallery indices best first -> (n_q, K).
    """
    return _rerank(Q, G, ranking, n, 0.0, "average_query_expansion")


@validate_params({"Q": [Array(ndim=2)], "G": [Array(ndim=2)],
                  "ranking": [Array(ndim=2, dtype=None)], "n": [Interval(Integral, 1, None)],
                  "alpha": [Interval(Real, 0, None)]})
def alpha_query_expansion(Q: Any, G: Any, ranking: Any, n: int = DEFAULT_N,
                          alpha: float = DEFAULT_ALPHA) -> np.ndarray:
    """alpha-QE: neighbours weighted by their similarity to the query to the power ``alpha``.

    Q (n_q, d), G (n_g, d), ranking (n_q, K) -> (n_q, K). ``alpha = 0`` is average QE.
    """
    return _rerank(Q, G, ranking, n, float(alpha), "alpha_query_expansion")
