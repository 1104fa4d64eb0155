r"""Attention rollout (Abnar & Zuidema, ACL 2020, arXiv 2005.00928, Eq. 1).

With the residual-augmented, head-averaged maps :math:`\hat A_\ell` (rows = queries, see
:mod:`attnlens.lenses._attention`), rollout multiplies them from the first layer up:

.. math:: \tilde A = \hat A_L \hat A_{L-1} \cdots \hat A_1 ,

so row ``i`` of :math:`\tilde A` is output position ``i`` at the last layer over input tokens
``j``; rows sum to 1 (a product of row-stochastic matrices).
"""

from __future__ import annotations

import numpy as np

from attnlens._validation import Array, validate_params
from attnlens.lenses._attention import check_attention, residual_attention

__all__ = ["attention_rollout"]


@validate_params({"att": [Array(ndim=4)]})
def attention_rollout(att) -> np.ndarray:
    """Attention rollout of one sequence.

    Parameters
    ----------
    att : (layers, heads, n, n) attention probabilities, rows = queries, layer 0 first.

    Returns
    -------
    (n, n) float64: row ``i`` = output position ``i`` over input tokens, rows summing to 1.
    """
    aug = residual_attention(check_attention(att, caller="attention_rollout"))  # (L, n, n)
    joint = aug[0]
    for layer in aug[1:]:
        joint = layer @ joint  # (n, n)
    return joint
