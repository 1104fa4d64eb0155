"""cvxpy reference formulations of Att-SVM (Frobenius) and Att-SVM* (nuclear): the test oracle.

Score convention: ``score_t = x_t^T W z``. The program is

    min_W  1/2 ||W||_F^2   (or ||W||_*)   s.t.  (x_{i,a_ik} - x_it)^T W q_ik >= 1.
"""

from __future__ import annotations

import logging

import cvxpy as cp
import numpy as np

from attnlens.svm._constraints import ConstraintSet

log = logging.getLogger(__name__)

_INFEASIBLE = (cp.INFEASIBLE, cp.INFEASIBLE_INACCURATE)


def solve_reference(cs: ConstraintSet, norm: str, solver: str | None = None) -> dict:
    """Solve with cvxpy (Clarabel). Returns ``W``, duals (n, K, T) of ``min 1/2||W||_F^2`` resp.
    ``min ||W||_*``, cvxpy's status string, iterations, and the raw dual of an infeasible solve."""
    i, k, t = cs.index()
    D, Qc = cs.vectors(i, k, t)
    d = cs.d
    W = cp.Variable((d, d))
    cons = [cp.sum(cp.multiply(D @ W, Qc), axis=1) >= 1]
    obj = 0.5 * cp.sum_squares(W) if norm == "fro" else cp.normNuc(W)
    prob = cp.Problem(cp.Minimize(obj), cons)
    solver = solver or "CLARABEL"
    try:
        prob.solve(solver=solver)
    except cp.error.SolverError as exc:  # pragma: no cover - solver crash path
        log.warning("cvxpy %s failed (%s); retrying with SCS", solver, exc)
        prob.solve(solver="SCS", eps=1e-9, max_iters=100_000)
    duals = np.zeros(cs.mask.shape)
    dv = cons[0].dual_value
    if dv is not None:
        duals[i, k, t] = np.asarray(dv).ravel()
    iters = int(getattr(prob.solver_stats, "num_iters", 0) or 0)
    return {
        "W": None if W.value is None else np.asarray(W.value, dtype=np.float64),
        "duals": duals,
        "status": prob.status,
        "infeasible": prob.status in _INFEASIBLE,
        "iterations": iters,
    }
