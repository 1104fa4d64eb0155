r"""Attention flow (Abnar & Zuidema, "Quantifying Attention Flow in Transformers", ACL 2020,
arXiv 2005.00928, Sec. 3), exact and fast.

The residual-augmented, head-averaged maps :math:`\hat A_\ell` (rows = queries, see
:mod:`attnlens.lenses._attention`) define a layered DAG: node :math:`(\ell, u)` has an edge of
capacity :math:`\hat A_\ell[u, v]` to node :math:`(\ell-1, v)`. The flow from input token
``j`` to output position ``i`` is the maximum flow from :math:`(L, i)` to :math:`(0, j)`,

.. math:: F_{ij} = \operatorname{maxflow}\big((L, i) \to (0, j)\big), \qquad
          \tilde F_{ij} = F_{ij} \big/ \textstyle\sum_{j'} F_{ij'} ,

normalized per output position as the paper's code does (``flow_values[u] /= sum``).

Algorithm: Dinic's algorithm (BFS level graph, blocking flow by depth-first search with
current-arc pointers) on the dense layered graph, compiled with numba and run in parallel over
output positions. Why Dinic: every source-sink path of the original graph has the same length
``L``, so the first level graph is the whole DAG and its blocking flow carries most of the
flow; later phases only reroute through a few residual arcs, so few phases run. The graph is
stored as the ``(L, n, n)`` capacity array itself (flows in a same-shaped scratch array), so no
graph is built per pair and the inner loops are contiguous array scans. Capacities stay float64:
the result is exact up to rounding (residuals below 1e-14 count as saturated), unlike
``scipy.sparse.csgraph.maximum_flow``, which needs integer capacities (rounding every edge).
The paper's networkx Edmonds-Karp reference (:func:`attnlens.lenses._reference.flow_reference`)
agrees to 1e-6 in the tests.
"""

from __future__ import annotations

import numpy as np

from attnlens._validation import Array, raise_invalid, validate_params
from attnlens.lenses._attention import check_attention, residual_attention

__all__ = ["attention_flow", "raw_attention_flow"]


def _outputs(outputs, n: int) -> np.ndarray:
    if outputs is None:
        return np.arange(n, dtype=np.int64)
    idx = np.atleast_1d(np.asarray(outputs))
    if idx.size == 0 or idx.dtype.kind not in "iu" or idx.min() < 0 or idx.max() >= n:
        raise_invalid("outputs", f"output positions in [0, {n - 1}]", outputs,
                      "Pass None (every position) or a list of token indices.",
                      "attention_flow")
    return idx.astype(np.int64)


@validate_params({"att": [Array(ndim=4)]})
def raw_attention_flow(att, outputs=None) -> np.ndarray:
    """Unnormalized max-flow values ``F`` (rows ``outputs``, n) of one sequence."""
    from attnlens.lenses._maxflow import FLOW_EPS, all_pairs_max_flow

    aug = residual_attention(check_attention(att, caller="attention_flow"))  # (L, n, n)
    return all_pairs_max_flow(np.ascontiguousarray(aug), _outputs(outputs, aug.shape[-1]),
                              FLOW_EPS)


@validate_params({"att": [Array(ndim=4)]})
def attention_flow(att, outputs=None) -> np.ndarray:
    """Attention flow of one sequence.

    Parameters
    ----------
    att : (layers, heads, n, n) attention probabilities, rows = queries, layer 0 first (the
        real-token block of one sequence).
    outputs : output positions whose rows are computed (None: all ``n``; ``[0]``: the CLS
        token of a ViT, ``n`` max-flows instead of ``n^2``).

    Returns
    -------
    (len(outputs), n) float64, (n, n) by default: row ``i`` = output position ``i`` at the
    last layer over input tokens, rows summing to 1.
    """
    flows = raw_attention_flow(att, outputs)
    return flows / flows.sum(axis=1, keepdims=True)
