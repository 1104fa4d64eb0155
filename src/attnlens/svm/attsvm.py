r"""Att-SVM and Att-SVM*: the max-margin token-selection programs, solved and certified.

Score convention: ``score_t = x_t^T W z`` (``W = K Q^T`` when factorized). For a selection
``a`` the programs are

.. math::

    W^{mm} = \arg\min_W \|W\|_F \quad\text{or}\quad W^{mm}_\star = \arg\min_W \|W\|_\star
    \quad\text{s.t.}\quad (x_{i,a_i} - x_{it})^\top W z_i \ge 1 \;\; \forall t \ne a_i,\ \forall i.

Tarzanagh, Li, Zhang, Oymak, "Max-Margin Token Selection in Attention Mechanism", NeurIPS 2023
(arXiv 2306.13596), Eq. (Att-SVM); Tarzanagh, Li, Thrampoulidis, Oymak, "Transformers as
Support Vector Machines" (arXiv 2308.16898), Eqs. (Att-SVM), (Att-SVM*), seq2seq and causal.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from attnlens._results import Status, warn_on_status
from attnlens._validation import (
    Array,
    InstanceOf,
    Integral,
    Interval,
    Options,
    Real,
    raise_invalid,
    validate_params,
)
from attnlens.svm._numerics import RANK_RTOL, SUPPORT_TOL, matrix_norm, numerical_rank, support_mask
from attnlens.svm._solvers.certificate import (
    dual_bound,
    make_feasible,
    raise_infeasible,
    relative_gap,
)
from attnlens.svm._solvers.constraints import VARIANTS, ConstraintSet, build_constraints
from attnlens.svm._solvers.frobenius import solve_frobenius
from attnlens.svm._solvers.nuclear import solve_nuclear
from attnlens.svm._solvers.nuclear_ppa import solve_nuclear_ppa
from attnlens.svm._solvers.output import SolverOutput
from attnlens.svm._solvers.reference import solve_reference
from attnlens.svm.problems import TokenSelectionProblem

log = logging.getLogger(__name__)

__all__ = ["AttSVMResult", "att_svm", "att_svm_problem", "NORMS", "METHODS"]

NORMS = ("fro", "nuc")
METHODS = ("auto", "cvxpy", "active_set", "interior_point", "proximal_point")
_FAST = {"fro": ("active_set",), "nuc": ("interior_point", "proximal_point")}
# method="auto" for the nuclear norm: the interior-point method while every constraint fits its
# Schur complement from the start (it is fastest and most accurate there), the proximal point
# method beyond (its cost grows linearly with the constraints, not with their square)
AUTO_IPM_MAX_CONSTRAINTS = 3000


def _auto_method(norm: str, count: int) -> str:
    if norm == "fro":
        return "active_set"
    return "interior_point" if count <= AUTO_IPM_MAX_CONSTRAINTS else "proximal_point"


@dataclass(frozen=True)
class AttSVMResult:
    """Outcome of an Att-SVM solve.

    W: (d, d) solution, scaled so that its minimum margin is exactly 1 (always feasible).
    objective: the norm value of ``W``: ``||W||_F`` for ``norm="fro"``, ``||W||_*`` for
        ``norm="nuc"`` (not the squared or halved value; ``1/2 ||W||_F^2`` is
        ``0.5 * objective**2``).
    status: :class:`attnlens._results.Status`.
    support: the support (neighbour) sets ``T_i = {t : margin_it <= 1 + SUPPORT_TOL}``
        (``SUPPORT_TOL`` = 1e-6, :mod:`attnlens.svm._numerics`); a list of
        ``n`` integer arrays for cross/self, a list of ``n`` lists of ``K`` arrays for
        seq2seq/causal.
    margins: ``(x_{i,a} - x_it)^T W z_i``, shape (n, T) for cross/self and (n, K, T) for
        seq2seq/causal; ``inf`` where ``t`` does not compete (the selected token, causal ``t > k``).
    duals: multipliers of the constraints, same shape as ``margins`` (0 where no constraint):
        ``W = sum alpha_c A_c`` for Frobenius (duals of ``min 1/2||W||_F^2``), and
        ``sum alpha_c A_c`` in the subdifferential of ``||W||_*`` for nuclear.
    certificate: relative gap ``(objective - lower) / objective`` between the returned feasible
        W and the dual lower bound ``1^T alpha / ||sum alpha_c A_c||_dual``.
    iterations, seconds, method: effort and the method that ran.
    norm, variant, selection: what was solved (selection shaped (n,) or (n, K)).
    """

    W: np.ndarray
    objective: float
    status: Status
    support: list
    margins: np.ndarray
    duals: np.ndarray
    certificate: float
    iterations: int
    seconds: float
    method: str
    norm: str
    variant: str
    selection: np.ndarray

    @property
    def rank(self) -> int:
        """Numerical rank of ``W``: singular values above ``RANK_RTOL * s_max``
        (:mod:`attnlens.svm._numerics`)."""
        return int(numerical_rank(self.W, RANK_RTOL))


def _support(cs: ConstraintSet, M: np.ndarray) -> list:
    sup = support_mask(M, SUPPORT_TOL) & cs.mask
    if cs.variant in ("cross", "self"):
        return [np.flatnonzero(sup[i, 0]) for i in range(cs.n)]
    return [[np.flatnonzero(sup[i, k]) for k in range(sup.shape[1])] for i in range(cs.n)]


def _finish(
    cs: ConstraintSet,
    W: np.ndarray,
    duals: np.ndarray,
    norm: str,
    *,
    method: str,
    iterations: int,
    start: float,
    tol: float,
    converged: bool,
) -> AttSVMResult:
    Wf, M, mmin = make_feasible(cs, W)
    if not mmin > 0:
        raise_infeasible(cs, method)
    obj = matrix_norm(Wf, norm)
    lower = dual_bound(cs, duals, norm)
    cert = relative_gap(obj, lower)
    if cert <= tol:
        status = Status.OPTIMAL
    elif converged:
        status = Status.OPTIMAL_INACCURATE
    else:
        status = Status.MAX_ITER
    warn_on_status(status, cert, tol, f"att_svm(norm={norm!r}, method={method!r})")
    squeeze = cs.variant in ("cross", "self")
    duals = np.where(cs.mask, duals, 0.0)
    return AttSVMResult(
        W=Wf,
        objective=obj,
        status=status,
        support=_support(cs, M),
        margins=M[:, 0] if squeeze else M,
        duals=duals[:, 0] if squeeze else duals,
        certificate=cert,
        iterations=int(iterations),
        seconds=time.perf_counter() - start,
        method=method,
        norm=norm,
        variant=cs.variant,
        selection=cs.selection[:, 0] if squeeze else cs.selection,
    )


def _solve_cvxpy(cs: ConstraintSet, norm: str, tol: float, start: float) -> AttSVMResult:
    i, k, t = cs.index()
    out = solve_reference(*cs.vectors(i, k, t), norm)
    if out.W is None:
        raise_infeasible(cs, "cvxpy")
    duals = np.zeros(cs.mask.shape)
    duals[i, k, t] = out.duals
    return _finish(
        cs,
        out.W,
        duals,
        norm,
        method="cvxpy",
        iterations=out.iterations,
        start=start,
        tol=tol,
        converged=True,
    )


@validate_params({
    "X": [Array(ndim=3)],
    "Z": [None, Array(ndim=(2, 3))],
    "selection": [Array(ndim=(1, 2), dtype=None)],
    "norm": [Options(*NORMS)],
    "variant": [Options(*VARIANTS)],
    "method": [Options(*METHODS)],
    "tol": [Interval(Real, 0, None, closed="neither")],
    "max_iter": [Interval(Integral, 1, None)],
    "query_index": [None, Interval(Integral, 0, None)],
})
def att_svm(
    X,
    Z,
    selection,
    *,
    norm: str = "fro",
    variant: str = "cross",
    method: str = "auto",
    tol: float = 1e-7,
    max_iter: int = 10_000,
    query_index: int | None = None,
) -> AttSVMResult:
    """Solve Att-SVM (``norm="fro"``) or Att-SVM* (``norm="nuc"``) for a token selection.

    Score convention ``score_t = x_t^T W z``. Constraints
    ``(x_{i,a} - x_it)^T W z >= 1`` for every competing token (see ``variant``).

    Parameters
    ----------
    X : (n, T, d) tokens.
    Z : queries: (n, d) for ``variant="cross"``; None for ``"self"`` (query
        ``x_{i, query_index}``); None (every token a query) or (n, K, d) for ``"seq2seq"``;
        None or (n, T, d) for ``"causal"``.
    selection : (n,) selected token per sequence, or (n, K) per output position
        (seq2seq/causal; causal needs ``selection[i, k] <= k``).
    norm : ``"fro"`` or ``"nuc"``.
    method : ``"auto"`` (``"active_set"`` for fro; for nuc ``"interior_point"`` up to
        ``AUTO_IPM_MAX_CONSTRAINTS`` = 3000 constraints, ``"proximal_point"`` beyond),
        ``"cvxpy"`` (reference, Clarabel), ``"active_set"`` (Frobenius: augmented
        Lagrangian + semismooth Newton, finished by an exact active-set solve, see
        ``attnlens.svm._solvers.frobenius``), ``"interior_point"`` (nuclear: structured primal-dual
        interior-point method on the semidefinite lift, see ``attnlens.svm._solvers.nuclear``),
        ``"proximal_point"`` (nuclear: proximal point method on ``W`` / augmented Lagrangian
        on the dual with singular value thresholding and L-BFGS-B inner solves, started from
        the Frobenius solution, see ``attnlens.svm._solvers.nuclear_ppa``).
    tol : target relative duality gap (``certificate``); ``status`` is ``"optimal"`` only when
        the certificate is at most ``tol``. The default 1e-7 holds for both norms: the
        interior-point method reaches about 1e-9 on the papers' settings. The proximal point
        method (``"auto"`` beyond 3,000 nuclear constraints) stalls near 1e-7 on large
        problems (1.4e-7 at (n, T, d) = (10000, 64, 128), ``optimal_inaccurate`` with a
        warning, benchmarks/attsvm.py): pass ``tol=1e-6`` there for a warning-free result.
    max_iter : iteration cap of the fast methods (Frobenius: Newton steps plus active-set
        solves; interior point: iterations summed over working-set rounds; proximal point:
        L-BFGS-B iterations summed over the proximal steps).

    Raises
    ------
    attnlens.errors.InfeasibleError : no W satisfies the constraints; ``evidence`` names the
        sequences and holds a dual ray.
    """
    start = time.perf_counter()
    tol, max_iter = float(tol), int(max_iter)
    cs = build_constraints(X, Z, selection, variant, query_index)
    if cs.count == 0:
        raise_invalid("selection", "a selection that leaves a competing token",
                      "got one with no constraint", "Check the variant and the selection.",
                      "att_svm")
    if method == "auto":
        method = _auto_method(norm, cs.count)
    if method == "cvxpy":
        return _solve_cvxpy(cs, norm, tol, start)
    if method not in _FAST[norm]:
        allowed = ", ".join(repr(m) for m in _FAST[norm])
        raise_invalid("method", f"{allowed}, 'auto' or 'cvxpy' for norm={norm!r}", method,
                      f"method={method!r} solves "
                      f"norm={'fro' if method == 'active_set' else 'nuc'!r} only.", "att_svm")
    solver = {"active_set": solve_frobenius, "interior_point": solve_nuclear,
              "proximal_point": solve_nuclear_ppa}[method]
    out: SolverOutput = solver(cs, tol=tol, max_iter=max_iter)
    if not out.solved:
        raise_infeasible(cs, method, out.ray)
    return _finish(
        cs,
        out.W,
        out.duals,
        norm,
        method=method,
        iterations=out.iterations,
        start=start,
        tol=tol,
        converged=out.converged,
    )


@validate_params({
    "problem": [InstanceOf(TokenSelectionProblem, name="a TokenSelectionProblem")],
    "selection": [None, Array(ndim=(1, 2), dtype=None)],
})
def att_svm_problem(problem, selection=None, **kwargs) -> AttSVMResult:
    """:func:`att_svm` on a :class:`~attnlens.svm.problems.TokenSelectionProblem`.

    ``selection`` defaults to the optimal tokens; the variant follows the problem (cross when it
    has queries ``Z``, self when it has a ``query_index``) unless given in ``kwargs``.
    """
    sel = problem.optimal_tokens if selection is None else selection
    variant = kwargs.pop("variant", problem.variant)
    if variant == "self":
        kwargs.setdefault("query_index", problem.query_index)
        return att_svm(problem.X, None, sel, variant="self", **kwargs)
    if variant == "cross":
        return att_svm(problem.X, problem.Z, sel, variant="cross", **kwargs)
    return att_svm(problem.X, None, sel, variant=variant, **kwargs)
