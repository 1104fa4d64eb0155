r"""The optimality certificate of a block nuclear-norm program (a relative duality gap).

For :math:`\min_{Z} f\big(\sum_j \mathcal A_j(Z_j)\big) + \beta\sum_j \|Z_j\|_*` (Sahiner et al.,
ICML 2022, arXiv 2205.08078) and a point ``Z`` with gradient blocks
:math:`G_j = \mathcal A_j^*(\nabla f)`, the dual point :math:`\nu = -t\nabla f` with
:math:`t = \min(1, \beta / \max_j\|G_j\|_2)` is feasible, so its dual value ``D`` bounds the
optimum from below; ``certificate = (P - D) / max(|P|, 1e-12)`` bounds the relative
suboptimality of the primal value ``P``. ``grad_ratio = max_j ||G_j||_2 / beta`` (<= 1 at an
optimum).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from attnlens._validation import Array, InstanceOf, Interval, Options, Real, validate_params
from attnlens.convex._linalg import nuclear_norm, spectral_norm
from attnlens.convex.losses import LOSSES, Loss, get_loss
from attnlens.convex.operators import Program, check_targets


@dataclass(frozen=True)
class Certificate:
    """Primal value, dual value, relative gap, grad ratio and the gradient blocks at one point."""

    primal: float
    dual: float
    certificate: float
    grad_ratio: float
    #: ``A_j^*(grad f)`` per block (the solvers reuse it)
    gradient: list


def penalty(Zs: list[np.ndarray], estimate: bool = False) -> float:
    """``sum_j ||Z_j||_*`` (vector blocks: the group lasso ``sum_j ||Z_j||_2``)."""
    if all(min(Z.shape) == 1 for Z in Zs):  # vector blocks: group lasso
        return float(sum(np.linalg.norm(Z) for Z in Zs))
    return float(sum(nuclear_norm(Z, estimate) for Z in Zs))


def certificate(program: Program, Zs: list[np.ndarray], Y: np.ndarray, beta: float,
                loss: str | Loss, single: bool = False) -> Certificate:
    """The certificate at ``Zs`` (one full forward and adjoint application).

    ``single=True`` evaluates the operator in float32: an *estimate* used to schedule the
    float64 check (only float64 certificates are reported); a non-finite float32 product
    (overflow, or a faulty float32 GEMM) makes it a float64 evaluation.
    """
    loss = get_loss(loss, "certificate")
    yhat = program.forward(Zs, single)
    grad = loss.gradient(yhat, Y)
    G = program.adjoint(grad, single)
    if single and not (np.isfinite(yhat).all() and all(np.isfinite(Gj).all() for Gj in G)):
        return certificate(program, Zs, Y, beta, loss)
    primal = loss.value(yhat, Y) + beta * penalty(Zs, estimate=single)
    gnorm = max(spectral_norm(Gj) for Gj in G)
    t = 1.0 if gnorm <= beta else beta / gnorm
    dual = loss.dual_value(grad, Y, t)
    gap = max(primal - dual, 0.0)
    return Certificate(primal=primal, dual=dual, certificate=gap / max(abs(primal), 1e-12),
                       grad_ratio=gnorm / beta, gradient=G)


@validate_params({
    "program": [InstanceOf(Program)],
    "Zs": [InstanceOf(list, tuple, name="a list of arrays, one per block")],
    "Y": [Array(ndim=2)],
    "beta": [Interval(Real, 0, None, closed="neither")],
    "loss": [Options(*LOSSES)],
})
def certify(program: Program, Zs: list[np.ndarray], Y: np.ndarray, beta: float,
            loss: str) -> tuple[float, float, float, float]:
    """``(primal, dual, certificate, grad_ratio)`` at ``Zs`` for targets ``Y`` (n, c).

    See the module doc: ``certificate`` is the relative duality gap, a bound on the relative
    suboptimality of ``primal``.
    """
    Y = check_targets(program, Y, "certify")
    c = certificate(program, [np.asarray(Z, dtype=np.float64) for Z in Zs], Y, beta, loss)
    return c.primal, c.dual, c.certificate, c.grad_ratio
