r"""cvxpy reference formulation of the block nuclear-norm programs (the test oracle).

.. math::  \min_{Z_j}\ f\Big(\sum_j \Phi_j\,\mathrm{vec}(Z_j)\Big) + \beta\sum_j \|Z_j\|_*

with the design ``Phi_j`` materialized explicitly (n, p q) -- fine for small sizes only; the
fast solvers in :mod:`attnlens.convex.nuclear` and :mod:`attnlens.convex.relu` never build it.
Sahiner et al., ICML 2022 (arXiv 2205.08078). Score convention for self-attention:
``score_t = x_t^T W z``, ``W = W1``.
"""

from __future__ import annotations

import time

import cvxpy as cp
import numpy as np

from attnlens._results import Status
from attnlens.convex.certificate import certificate
from attnlens.convex.gated_attention import GatedAttentionBlock
from attnlens.convex.losses import Loss, get_loss
from attnlens.convex.operators import DenseBlock, KronBlock, Program
from attnlens.convex.relu_program import ReluProgram, certify_relu
from attnlens.convex.results import ConvexResult
from attnlens.errors import InfeasibleError


def dense_design(block) -> np.ndarray:
    """(n, p * q) explicit design of one block (row-major over (k, l))."""
    if isinstance(block, DenseBlock | GatedAttentionBlock):  # gated attention: materialized
        return block.phi.reshape(block.n, -1)
    if not isinstance(block, KronBlock):
        raise TypeError(f"unknown block type {type(block).__name__}")
    phi = block.a[:, :, None, None] * block.B[:, None, :, :]  # (n, p1, p2, q)
    return phi.reshape(block.n, -1)


def _solve(prob: cp.Problem, solver: str | None, what: str, first: cp.Variable) -> None:
    prob.solve(solver=solver)
    if prob.status in (cp.INFEASIBLE, cp.INFEASIBLE_INACCURATE):
        raise InfeasibleError(f"cvxpy reports the {what} infeasible ({prob.status}).",
                              {"status": prob.status})
    if first.value is None:
        raise RuntimeError(f"cvxpy returned no solution (status {prob.status!r}).")


def _status(prob: cp.Problem) -> Status:
    return Status.OPTIMAL if prob.status == cp.OPTIMAL else Status.OPTIMAL_INACCURATE


def solve_cvxpy(program: Program, Y: np.ndarray, beta: float, loss: str | Loss,
                cone_constraints: list | None = None,
                solver: str | None = "CLARABEL") -> ConvexResult:
    """Solve with a cvxpy conic solver; returns a ``ConvexResult`` with a certificate.

    ``solver`` names the cvxpy solver (default Clarabel, an interior-point method, accurate;
    ``None`` lets cvxpy choose). ``cone_constraints`` (optional) is a list, one per block, of
    callables ``Z -> [constraints]``.
    """
    loss = get_loss(loss, "solve_cvxpy")
    start = time.perf_counter()
    c = Y.shape[1]
    Zs = [cp.Variable(s) for s in program.zshapes()]
    yhat = 0
    for b, Z in zip(program.blocks, Zs, strict=True):
        Phi = dense_design(b)
        yhat = yhat + Phi @ cp.reshape(Z, (Phi.shape[1], c), order="C")
    obj = loss.cvxpy_value(yhat, Y) + beta * sum(cp.normNuc(Z) for Z in Zs)
    cons = []
    if cone_constraints is not None:
        for fn, Z in zip(cone_constraints, Zs, strict=True):
            cons += fn(Z)
    prob = cp.Problem(cp.Minimize(obj), cons)
    _solve(prob, solver, "program", Zs[0])
    Zv = [np.asarray(Z.value, dtype=np.float64) for Z in Zs]
    cert = certificate(program, Zv, Y, beta, loss)
    return ConvexResult(objective=float(prob.value), status=_status(prob),
                        certificate=cert.certificate,
                        iterations=int(prob.solver_stats.num_iters or 0),
                        seconds=time.perf_counter() - start,
                        method=f"cvxpy/{prob.solver_stats.solver_name}", Z=Zv,
                        duality_gap=cert.primal - cert.dual, dual_objective=cert.dual,
                        grad_ratio=cert.grad_ratio)


def solve_relu_cvxpy(program: ReluProgram, Y: np.ndarray, beta: float, loss: str | Loss,
                     solver: str | None = "CLARABEL") -> ConvexResult:
    r"""cvxpy reference for the dictionary-restricted ReLU program of :mod:`attnlens.convex.relu`.

    .. math::  \min_{X_j}\ f\Big(\sum_j \Phi_j \mathrm{vec}(X_j E_j^\top)\Big)
       + \beta \sum_{j,k} \|X_j[:, k]\|_2 \quad \text{s.t.}\quad C_j X_j \ge 0

    (explicit design and explicit signed constraint matrices ``C_j``: small sizes only).
    The certificate is the one of :func:`attnlens.convex.relu_program.certify_relu`.
    """
    loss = get_loss(loss, "solve_relu_cvxpy")
    start = time.perf_counter()
    c = Y.shape[1]
    Es = program.signed_directions()
    Xs = [cp.Variable((cone.p, E.shape[1])) for cone, E in zip(program.cones, Es, strict=True)]
    yhat = 0
    cons = []
    pen = 0
    for b, cone, E, X in zip(program.blocks, program.cones, Es, Xs, strict=True):
        Phi = dense_design(b)
        Z = X @ E.T
        yhat = yhat + Phi @ cp.reshape(Z, (Phi.shape[1], c), order="C")
        cons.append(cone.dense() @ X >= 0)
        pen = pen + cp.sum(cp.norm(X, 2, axis=0))
    prob = cp.Problem(cp.Minimize(loss.cvxpy_value(yhat, Y) + beta * pen), cons)
    _solve(prob, solver, "ReLU program", Xs[0])
    Xv = [np.asarray(X.value, dtype=np.float64) for X in Xs]
    cert = certify_relu(program, Xv, Y, beta, loss)
    return ConvexResult(objective=cert.primal, status=_status(prob),
                        certificate=cert.certificate,
                        iterations=int(prob.solver_stats.num_iters or 0),
                        seconds=time.perf_counter() - start,
                        method=f"cvxpy/{prob.solver_stats.solver_name}",
                        Z=program.zs(cert.X), duality_gap=cert.primal - cert.dual,
                        dual_objective=cert.dual, grad_ratio=cert.grad_ratio,
                        cone_factors=list(zip(cert.X, Es, strict=True)),
                        constraint_violation=cert.violation)
