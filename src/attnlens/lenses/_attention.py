r"""Shared input handling of the lenses: attention stacks and the residual-augmented maps.

Abnar & Zuidema, "Quantifying Attention Flow in Transformers", ACL 2020 (arXiv 2005.00928),
and their code (samiraabnar/attention_flow): heads are averaged and the residual connection is
modelled by adding the identity, rows renormalized,

.. math:: \hat A_\ell = \tfrac12 \bar A_\ell + \tfrac12 I, \qquad
          \bar A_\ell = \tfrac1H \textstyle\sum_h A_{\ell h},

which equals ``(A + I) / rowsum(A + I)`` when the rows of ``A`` sum to 1 (rows = queries).
"""

from __future__ import annotations

import numpy as np

from attnlens._validation import check_array, raise_invalid

__all__ = ["check_attention", "residual_attention"]

#: rows of an attention map must sum to 1 within this tolerance (float32 softmax outputs)
ROW_SUM_TOL = 1e-3


def check_attention(att, name: str = "att", caller: str = "") -> np.ndarray:
    """Validate an attention stack (layers, heads, n, n) with rows = queries; float64 copy.

    Entries must be finite and nonnegative and every row must sum to 1 (within 1e-3): pass the
    real-token block of one sequence (drop padding first).
    """
    arr = check_array(att, name, ndim=4, caller=caller)
    if arr.shape[2] != arr.shape[3]:
        raise_invalid(name, "an array of shape (layers, heads, n, n)", f"got shape {arr.shape}",
               "The last two axes are queries and keys of one sequence.", caller)
    if arr.min() < 0:
        raise_invalid(name, "nonnegative (attention probabilities)", f"got minimum {arr.min():.3g}",
               "Pass softmax outputs, not logits.", caller)
    sums = arr.sum(axis=-1)
    worst = float(np.abs(sums - 1.0).max())
    if worst > ROW_SUM_TOL:
        raise_invalid(name, "row-stochastic (each query row sums to 1)",
               f"got a row sum off by {worst:.3g}",
               "Pass the real-token block of one sequence (padding rows and columns removed).",
               caller)
    return arr


def residual_attention(att: np.ndarray) -> np.ndarray:
    """(L, H, n, n) -> (L, n, n): head mean plus identity, rows renormalized (the paper's code)."""
    mean = att.mean(axis=1)  # (L, n, n)
    aug = mean + np.eye(att.shape[-1])[None]  # (L, n, n)
    return aug / aug.sum(axis=-1, keepdims=True)
