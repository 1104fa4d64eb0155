r"""Att-SVM* (nuclear norm) at scale: a proximal point method on ``W`` (an augmented
Lagrangian method on the dual) with singular value thresholding and a working set.

Score convention: ``score_t = x_t^T W z``. With ``A_c = u_c q_c^T`` (``u_c = x_{i,a} - x_it``)
and ``B(alpha) = sum_c alpha_c A_c`` the program and its dual are

.. math::

    \min_W \|W\|_\star \ \text{s.t.}\ \langle A_c, W\rangle \ge 1
    \qquad\text{and}\qquad
    \max_{\alpha \ge 0} 1^\top\alpha \ \text{s.t.}\ \|B(\alpha)\|_2 \le 1 .

Proximal point iterations (Rockafellar 1976; for the nuclear norm Liu, Sun, Toh, "An
implementable proximal point algorithmic framework for nuclear norm minimization", Math.
Program. 133, 2012)

.. math::

    W_{k+1} = \arg\min_W \|W\|_\star + \tfrac{1}{2\tau_k}\|W - W_k\|_F^2
    \ \text{s.t.}\ \langle A_c, W\rangle \ge 1

are solved through their duals, smooth concave programs in ``alpha >= 0`` only:

.. math::

    \max_{\alpha\ge 0}\ 1^\top\alpha - \tfrac{1}{2\tau_k}\|P(\alpha)\|_F^2, \qquad
    P(\alpha) = \mathrm{SVT}_{\tau_k}\big(W_k + \tau_k B(\alpha)\big),
    \quad \text{gradient}\ 1 - \big(\langle A_c, P(\alpha)\rangle\big)_c,

(``SVT_tau`` soft-thresholds the singular values by ``tau``: one ``d x d`` SVD per
evaluation), then ``W_{k+1} = P(alpha_k)``. The inner programs are solved by L-BFGS-B (bound
constraints ``alpha >= 0``) warm-started from the previous ``alpha``; ``tau_k`` grows
geometrically up to a multiple of ``||W_k||_2``. Cost per evaluation: two products with the
constraint matrix on the working set, ``O(#groups d^2 + #constraints d)``, and one SVD; it does
not grow with the square of the number of constraints (the interior-point method of
:mod:`attnlens.svm._solvers.nuclear` factorizes an ``m x m`` Schur complement).

Working set: the inner programs see the constraints with ``alpha_c > 0`` or margin under
``W_k`` below ``1 + _WS_SLACK``; one pass over every constraint per outer iteration refreshes
it (the others have ``alpha_c = 0``, optimal for them while ``W`` satisfies them with slack).

Start: the Frobenius solution (:mod:`attnlens.svm._solvers.frobenius`), which also decides
feasibility (the two programs share their constraints) and gives the dual ray when there is
none; its duals, scaled to ``||B(alpha)||_2 = 1``, are the first dual point.

Certificate (the one of :mod:`attnlens.svm._solvers.certificate`): after every outer iteration
``P`` rescaled to minimum margin 1 over *all* constraints is feasible (upper bound
``||P||_* / min margin``) and ``1^T alpha / ||B(alpha)||_2`` is a lower bound (weak duality);
their relative gap is valid whatever the accuracy of the inner solves or the working set.
"""

from __future__ import annotations

import logging
import time

import numpy as np
from scipy.optimize import Bounds, minimize

from attnlens.svm._solvers.certificate import dual_norm, relative_gap
from attnlens.svm._solvers.constraints import ConstraintSet
from attnlens.svm._solvers.frobenius import solve_frobenius
from attnlens.svm._solvers.frobenius_ops import Block, Constraints
from attnlens.svm._solvers.output import SolverOutput

log = logging.getLogger(__name__)

_SEED_TOL = 1e-4  # certificate of the Frobenius start (only a start: no accuracy needed)
_WS_SLACK = 0.3  # working set: margin under W_k below 1 + _WS_SLACK, or alpha_c > 0
_TAU_START = 1.0  # tau_0 = _TAU_START ||W_0||_2
_TAU_GROWTH = 3.0  # tau_{k+1} = min(_TAU_GROWTH tau_k, _TAU_CAP ||W_{k+1}||_2)
_TAU_CAP = 30.0
_INNER_MAX = 1000  # L-BFGS-B iterations per proximal step
_INNER_GTOL = 1e-10  # projected-gradient tolerance of L-BFGS-B (margins are O(1))
_LBFGS_MEMORY = 20
_BB_MAX = 100  # gradient-only steps after L-BFGS-B in every proximal step
_STALL_OUTER = 3  # stop when the best certificate has not halved in this many outer steps


def _svt(Y: np.ndarray, tau: float) -> tuple[np.ndarray, np.ndarray]:
    """``SVT_tau(Y)`` and its singular values."""
    U, s, Vt = np.linalg.svd(Y)
    s = np.maximum(s - tau, 0.0)
    r = int(np.count_nonzero(s))
    return (U[:, :r] * s[:r]) @ Vt[:r], s


class _Inner:
    """The negated dual of one proximal step on the working set ``block``."""

    def __init__(self, block: Block, Wk: np.ndarray, tau: float, a0: np.ndarray):
        self.block, self.Wk, self.tau = block, Wk, tau
        self.a0 = a0.copy()  # f is evaluated relative to 1^T a0: no cancellation in 1^T a
        self.evaluations = 0

    def __call__(self, a: np.ndarray) -> tuple[float, np.ndarray]:
        self.evaluations += 1
        P, s = _svt(self.Wk + self.tau * self.block.combine(a), self.tau)
        f = -float((a - self.a0).sum()) + float(s @ s) / (2.0 * self.tau)
        return f, self.block.margins(P) - 1.0

    def primal(self, a: np.ndarray) -> np.ndarray:
        return _svt(self.Wk + self.tau * self.block.combine(a), self.tau)[0]


def _projected_gradient(a: np.ndarray, g: np.ndarray) -> np.ndarray:
    return np.where(a > 0, g, np.minimum(g, 0.0))


def _bb_polish(inner: _Inner, a: np.ndarray, iters: int) -> tuple[np.ndarray, int]:
    """Projected Barzilai-Borwein steps on ``inner`` from ``a``; returns the point with the
    smallest projected gradient and the number of steps.

    L-BFGS-B stops once its line search cannot decrease ``f`` in double precision, which
    happens at projected gradients (margin residuals) ~ ``sqrt(eps L)`` with ``L`` the
    curvature; steps that use gradients only (no function values, Barzilai and Borwein, IMA
    J. Numer. Anal. 1988; nonmonotone, so the best point is kept) go on reducing them."""
    _, g = inner(a)
    pg = float(np.abs(_projected_gradient(a, g)).max())
    best = (pg, a)
    step = None
    for it in range(1, iters + 1):
        if step is None:
            step = 1.0 / (inner.tau * max(float(np.abs(g).max()), 1e-300)) * pg
        an = np.maximum(a - step * g, 0.0)
        _, gn = inner(an)
        s, y = an - a, gn - g
        sy = float(s @ y)
        step = float(s @ s) / sy if sy > 0 else 2.0 * step
        a, g = an, gn
        pg = float(np.abs(_projected_gradient(a, g)).max())
        if pg < best[0]:
            best = (pg, a)
        if pg <= _INNER_GTOL:
            return best[1], it
    return best[1], iters


def _certify(C: Constraints, P: np.ndarray, block: Block, a: np.ndarray):
    """``(gap, W_feasible, margins)`` of ``P`` and the duals ``a`` on ``block`` (zero elsewhere)."""
    M = C.margins(P)
    mmin = float(M.min())
    if not mmin > 0:
        return np.inf, None, M
    upper = float(np.linalg.norm(P, "nuc")) / mmin
    sn = dual_norm(block.combine(np.maximum(a, 0.0)), "nuc")
    lower = float(np.maximum(a, 0.0).sum()) / sn if sn > 0 else 0.0
    return relative_gap(upper, lower), P / mmin, M


def solve_nuclear_ppa(cs: ConstraintSet, *, tol: float, max_iter: int) -> SolverOutput:
    """Att-SVM* by the proximal point method; see the module docstring.

    Returns ``W`` (d, d), ``duals`` (n, K, T), ``ray`` (n, K, T) when infeasible (from the
    Frobenius start), ``iterations`` (L-BFGS-B iterations summed over the proximal steps,
    capped by ``max_iter``), ``converged`` (False when the budget ran out first) and ``stats``
    (outer steps, evaluations, working-set size, seconds of the start).
    """
    start = time.process_time()
    fr = solve_frobenius(cs, tol=_SEED_TOL, max_iter=10_000)
    if not fr.solved:
        return SolverOutput(W=None, duals=None, ray=fr.ray, iterations=fr.iterations)
    C = Constraints(cs)
    shape = cs.mask.shape
    alpha = np.maximum(fr.duals[cs.mask], 0.0)
    alpha /= dual_norm(C.combine(alpha), "nuc")  # a feasible dual point
    M = C.margins(fr.W)
    W = fr.W / M.min()
    M = M / M.min()
    best_W, best_alpha, best_gap = W, alpha.copy(), np.inf  # the start is feasible
    tau = _TAU_START * dual_norm(W, "nuc")
    stats = {"outer": 0, "evaluations": 0, "working_set": 0,
             "seed_seconds": time.process_time() - start}
    iters, it_best, converged = 0, 0, False
    while iters < max_iter:
        stats["outer"] += 1
        N = np.flatnonzero((M < 1.0 + _WS_SLACK) | (alpha > 0))
        block = C.block(N)
        inner = _Inner(block, W, tau, alpha[N])
        res = minimize(inner, alpha[N], jac=True, method="L-BFGS-B", bounds=Bounds(0.0, np.inf),
                       options={"maxiter": min(_INNER_MAX, max_iter - iters),
                                "maxcor": _LBFGS_MEMORY, "ftol": 0.0, "gtol": _INNER_GTOL})
        log.debug("ppa inner: %s", res.message)
        iters += int(res.nit)
        stats["evaluations"] += inner.evaluations
        stats["working_set"] = int(N.size)
        a, nbb = _bb_polish(inner, np.maximum(res.x, 0.0), _BB_MAX)
        iters += nbb
        alpha[:] = 0.0
        alpha[N] = a
        P = inner.primal(a)
        gap, Wf, M = _certify(C, P, block, a)
        log.info("ppa outer %d: tau %.3g, working set %d, %d L-BFGS-B iterations, "
                 "certificate %.3g, cpu %.1fs", stats["outer"], tau, N.size, res.nit, gap,
                 time.process_time() - start)
        if gap < best_gap:
            if gap < 0.5 * best_gap:
                it_best = stats["outer"]
            best_W, best_alpha, best_gap = Wf, alpha.copy(), gap
        if best_gap <= tol:
            converged = True
            break
        if stats["outer"] - it_best >= _STALL_OUTER:
            converged = True  # the method's accuracy limit on this instance
            break
        W = P
        tau = min(_TAU_GROWTH * tau, _TAU_CAP * dual_norm(W, "nuc"))
    duals = np.zeros(shape)
    duals[cs.mask] = best_alpha
    stats["gap"] = float(best_gap)
    return SolverOutput(W=best_W, duals=duals, iterations=iters, converged=converged,
                        stats=stats)
