"""The cvxpy reference formulation of Att-SVM, Att-SVM* and Gen-SVM: the test oracle.

Score convention: ``score_t = x_t^T W z``. With margin constraints ``A_c = D_c Q_c^T`` and
optional equality constraints ``E_j = De_j Qe_j^T`` the program is

    min_W  1/2 ||W||_F^2   (or ||W||_*)   s.t.  <A_c, W> = D_c^T W Q_c >= 1,
                                                <E_j, W> = De_j^T W Qe_j = 0.

Att-SVM (Tarzanagh et al., NeurIPS 2023, arXiv 2306.13596) has no equalities; Gen-SVM
(arXiv 2308.16898, non-linear heads) adds them for the tokens of each selected set.
"""

from __future__ import annotations

import logging

import cvxpy as cp
import numpy as np

from attnlens.svm._solvers.output import SolverOutput

log = logging.getLogger(__name__)

_INFEASIBLE = (cp.INFEASIBLE, cp.INFEASIBLE_INACCURATE)
DEFAULT_SOLVER = "CLARABEL"


def solve_reference(
    D: np.ndarray,
    Q: np.ndarray,
    norm: str = "fro",
    *,
    De: np.ndarray | None = None,
    Qe: np.ndarray | None = None,
    solver: str | None = None,
) -> SolverOutput:
    """Solve with cvxpy (Clarabel; SCS if Clarabel crashes).

    D, Q: (m, d) margin constraints; De, Qe: (m_e, d) equalities (Gen-SVM) or None.
    Returns ``W`` (None when infeasible), ``duals`` (m,) of ``min 1/2||W||_F^2`` resp.
    ``min ||W||_*``, ``eq_duals`` (m_e,) with the sign of ``W = sum alpha_c A_c + sum mu_j E_j``,
    cvxpy's status, ``converged`` (status optimal) and the iteration count.
    """
    d = D.shape[1]
    W = cp.Variable((d, d))
    cons = [cp.sum(cp.multiply(D @ W, Q), axis=1) >= 1]
    has_eq = De is not None and De.shape[0] > 0
    if has_eq:
        cons.append(cp.sum(cp.multiply(De @ W, Qe), axis=1) == 0)
    obj = 0.5 * cp.sum_squares(W) if norm == "fro" else cp.normNuc(W)
    prob = cp.Problem(cp.Minimize(obj), cons)
    solver = solver or DEFAULT_SOLVER
    try:
        prob.solve(solver=solver)
    except cp.error.SolverError as exc:  # pragma: no cover - solver crash path
        log.warning("cvxpy %s failed (%s); retrying with SCS", solver, exc)
        prob.solve(solver="SCS", eps=1e-9, max_iters=100_000)
    iterations = int(getattr(prob.solver_stats, "num_iters", 0) or 0)
    if prob.status in _INFEASIBLE or W.value is None:
        return SolverOutput(W=None, duals=None, iterations=iterations, status=str(prob.status))
    dv = cons[0].dual_value
    duals = np.zeros(D.shape[0]) if dv is None else np.asarray(dv, dtype=np.float64).ravel()
    eq = -np.asarray(cons[1].dual_value, dtype=np.float64).ravel() if has_eq else None
    return SolverOutput(
        W=np.asarray(W.value, dtype=np.float64),
        duals=duals,
        eq_duals=eq,
        iterations=iterations,
        converged=prob.status == cp.OPTIMAL,
        status=str(prob.status),
    )
