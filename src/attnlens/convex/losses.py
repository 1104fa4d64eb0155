r"""Convex losses of the pooled head outputs, their gradients and Fenchel-dual values.

Squared loss (one-hot targets): :math:`f(\hat Y) = \frac{1}{2n}\|\hat Y - Y\|_F^2`.
Cross-entropy: :math:`f(\hat Y) = \frac1n \sum_i \big(\log\sum_k e^{\hat y_{ik}} - \hat y_{i y_i}\big)`.

Dual of :math:`\min_Z f(\mathcal A Z) + \beta\sum_j\|Z_j\|_*`: for a dual point
:math:`\nu = -t\,\nabla f(\hat Y)` with :math:`t = \min(1, \beta / \max_j \|\mathcal A_j^*\nabla f\|_2)`
the value :math:`-f^*(-\nu)` is a lower bound on the optimum (weak duality).
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp, softmax, xlogy

LOSSES = ("squared", "cross_entropy")


def value(loss: str, yhat: np.ndarray, Y: np.ndarray) -> float:
    n = Y.shape[0]
    if loss == "squared":
        return float(0.5 * np.sum((yhat - Y) ** 2) / n)
    return float((np.sum(logsumexp(yhat, axis=1)) - np.sum(yhat * Y)) / n)


def gradient(loss: str, yhat: np.ndarray, Y: np.ndarray) -> np.ndarray:
    n = Y.shape[0]
    if loss == "squared":
        return (yhat - Y) / n
    return (softmax(yhat, axis=1) - Y) / n


def curvature(loss: str) -> float:
    """Bound on the Hessian of ``n * f`` per sample (1 for squared, 1/2 for softmax CE)."""
    return 1.0 if loss == "squared" else 0.5


def dual_value(loss: str, grad: np.ndarray, Y: np.ndarray, t: float) -> float:
    """``-f^*(t * grad)``: the dual objective at ``nu = -t grad`` (``grad`` from :func:`gradient`)."""
    n = Y.shape[0]
    if loss == "squared":
        return float(-t * np.sum(grad * Y) - 0.5 * n * t * t * np.sum(grad**2))
    q = t * n * grad + Y  # rows in the simplex for 0 <= t <= 1
    q = np.clip(q, 0.0, 1.0)
    return float(-np.sum(xlogy(q, q)) / n)
