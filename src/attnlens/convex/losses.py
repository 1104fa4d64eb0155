r"""Convex losses of the pooled head outputs: one object per loss.

Squared loss (one-hot targets): :math:`f(\hat Y) = \frac{1}{2n}\|\hat Y - Y\|_F^2`.
Cross-entropy: :math:`f(\hat Y) = \frac1n \sum_i \big(\log\sum_k e^{\hat y_{ik}} - \hat y_{i y_i}\big)`.

Each :class:`Loss` gives the value, the gradient, a curvature bound, the Fenchel-dual value
used by the certificates, the cvxpy expression of the reference formulation, the torch value
of the non-convex trainer (with the torch gradient and dual value, those three are what the
torch FISTA of :mod:`attnlens.convex.torch_fista` evaluates on the device) and the class
probabilities of the estimators.

Dual of :math:`\min_Z f(\mathcal A Z) + \beta\sum_j\|Z_j\|_*`: for a dual point
:math:`\nu = -t\,\nabla f(\hat Y)` with :math:`t = \min(1, \beta / \max_j \|\mathcal A_j^*\nabla f\|_2)`
the value :math:`-f^*(-\nu)` is a lower bound on the optimum (weak duality).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy.special import logsumexp, softmax, xlogy

from attnlens._validation import Options, check_param


class Loss:
    """A convex loss ``f(yhat)`` of the pooled outputs (n, c) against targets ``Y`` (n, c)."""

    name: str = ""
    #: bound on the Hessian of ``n * f`` per sample (the FISTA step uses it)
    curvature: float = 1.0

    def value(self, yhat: np.ndarray, Y: np.ndarray) -> float:
        raise NotImplementedError

    def gradient(self, yhat: np.ndarray, Y: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def dual_value(self, grad: np.ndarray, Y: np.ndarray, t: float) -> float:
        """``-f^*(t * grad)``: the dual objective at ``nu = -t grad`` (``grad`` from :meth:`gradient`)."""
        raise NotImplementedError

    def cvxpy_value(self, yhat: Any, Y: np.ndarray) -> Any:
        """The same loss as a cvxpy expression of the affine expression ``yhat`` (n, c)."""
        raise NotImplementedError

    def torch_value(self, out: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
        """The same loss on torch outputs ``out`` (b, c) and one-hot ``Y`` (b, c)."""
        raise NotImplementedError

    def torch_gradient(self, out: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
        """:meth:`gradient` on torch tensors (any device)."""
        raise NotImplementedError

    def torch_dual_value(self, grad: torch.Tensor, Y: torch.Tensor, t: float) -> torch.Tensor:
        """:meth:`dual_value` on torch tensors (a 0-d tensor)."""
        raise NotImplementedError

    def proba(self, scores: np.ndarray) -> np.ndarray:
        """Class probabilities (n, c) from the pooled outputs."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class SquaredLoss(Loss):
    r""":math:`\frac{1}{2n}\|\hat Y - Y\|_F^2`; probabilities: the outputs clipped at 0, normalized."""

    name = "squared"
    curvature = 1.0

    def value(self, yhat, Y):
        return float(0.5 * np.sum((yhat - Y) ** 2) / Y.shape[0])

    def gradient(self, yhat, Y):
        return (yhat - Y) / Y.shape[0]

    def dual_value(self, grad, Y, t):
        n = Y.shape[0]
        return float(-t * np.sum(grad * Y) - 0.5 * n * t * t * np.sum(grad**2))

    def cvxpy_value(self, yhat, Y):
        import cvxpy as cp

        return cp.sum_squares(yhat - Y) / (2 * Y.shape[0])

    def torch_value(self, out, Y):
        return 0.5 * (out - Y).pow(2).sum() / out.shape[0]

    def torch_gradient(self, out, Y):
        return (out - Y) / Y.shape[0]

    def torch_dual_value(self, grad, Y, t):
        n = Y.shape[0]
        return -t * (grad * Y).sum() - 0.5 * n * t * t * grad.pow(2).sum()

    def proba(self, scores):
        p = np.clip(scores, 0.0, None)
        tot = p.sum(axis=1, keepdims=True)
        uniform = np.full_like(p, 1.0 / p.shape[1])
        return np.where(tot > 0, p / np.where(tot > 0, tot, 1.0), uniform)


class CrossEntropyLoss(Loss):
    r""":math:`\frac1n\sum_i \mathrm{CE}(\hat y_i, y_i)` (softmax); probabilities: the softmax."""

    name = "cross_entropy"
    curvature = 0.5  # the softmax Hessian is bounded by 1/2

    def value(self, yhat, Y):
        return float((np.sum(logsumexp(yhat, axis=1)) - np.sum(yhat * Y)) / Y.shape[0])

    def gradient(self, yhat, Y):
        return (softmax(yhat, axis=1) - Y) / Y.shape[0]

    def dual_value(self, grad, Y, t):
        n = Y.shape[0]
        q = t * n * grad + Y  # rows in the simplex for 0 <= t <= 1
        q = np.clip(q, 0.0, 1.0)
        return float(-np.sum(xlogy(q, q)) / n)

    def cvxpy_value(self, yhat, Y):
        import cvxpy as cp

        return (cp.sum(cp.log_sum_exp(yhat, axis=1)) - cp.sum(cp.multiply(yhat, Y))) / Y.shape[0]

    def torch_value(self, out, Y):
        return torch.nn.functional.cross_entropy(out, Y.argmax(dim=1))

    def torch_gradient(self, out, Y):
        return (torch.softmax(out, dim=1) - Y) / Y.shape[0]

    def torch_dual_value(self, grad, Y, t):
        q = torch.clamp(t * Y.shape[0] * grad + Y, 0.0, 1.0)
        return -torch.xlogy(q, q).sum() / Y.shape[0]

    def proba(self, scores):
        return softmax(scores, axis=1)


#: the losses by name (the ``loss`` parameter of every convex solver and estimator)
LOSSES: dict[str, Loss] = {loss.name: loss for loss in (SquaredLoss(), CrossEntropyLoss())}


def get_loss(loss: str | Loss, caller: str = "") -> Loss:
    """The :class:`Loss` named ``loss`` (a :class:`Loss` passes through).

    Raises :class:`~attnlens.errors.InvalidParameterError` naming ``loss`` for an unknown name.
    """
    if isinstance(loss, Loss):
        return loss
    check_param("loss", loss, [Options(*LOSSES)], caller)
    return LOSSES[loss]
