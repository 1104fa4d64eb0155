"""Run pyscnn (``scnn``, R-FISTA; Mishkin, Sahiner, Pilanci, ICML 2022) on a gated-ReLU MLP.

The anchor for the gated-ReLU MLP program ``min (1/2n)||sum_j D_j X Z_j - Y||^2 +
beta sum_j ||Z_j||_*`` with ``D_j = 1[X h_j >= 0]``: for one output column the nuclear norm is
the group-L1 penalty pyscnn's ``NeuronGL1`` uses, with the same ``1/(2n)`` loss scaling.
pyscnn is a test/benchmark-only dependency (installed with ``--no-deps``, see Makefile).
"""

from __future__ import annotations

import time

import numpy as np


def available() -> bool:
    try:
        import scnn.optimize  # noqa: F401
    except Exception:  # pragma: no cover - depends on the environment
        return False
    return True


def solve_gated_relu(X: np.ndarray, y: np.ndarray, gates: np.ndarray, beta: float,
                     tol: float = 1e-8, max_iters: int = 10000):
    """Fit pyscnn's convex gated ReLU (gates ``h_j`` as rows of ``gates``, shape (m, d)).

    Returns ``(objective, seconds)``: the regularized objective of pyscnn's solution computed
    from pyscnn's own predictions, ``(1/2n)||yhat - Y||^2 + beta sum_j ||W_j||_2``.
    """
    from scnn.metrics import Metrics
    from scnn.models import ConvexGatedReLU
    from scnn.optimize import optimize_model
    from scnn.regularizers import NeuronGL1
    from scnn.solvers import RFISTA

    Y = y.reshape(len(y), -1)
    model = ConvexGatedReLU(np.ascontiguousarray(gates.T), c=Y.shape[1])
    solver = RFISTA(model, max_iters=max_iters, tol=tol)
    t0 = time.perf_counter()
    model, _ = optimize_model(model, solver, Metrics(), X, Y, regularizer=NeuronGL1(beta),
                              unitize_data=False, dtype="float64", return_convex=True)
    seconds = time.perf_counter() - t0
    W = np.asarray(model.parameters[0])  # (c, m, d)
    resid = np.asarray(model(X)).reshape(Y.shape) - Y
    pen = float(np.sqrt((W**2).sum(axis=(0, 2))).sum())
    return float(0.5 * np.sum(resid**2) / len(Y) + beta * pen), seconds


def solve_relu(X: np.ndarray, y: np.ndarray, gates: np.ndarray, beta: float,
               tol: float = 1e-8, constraint_tol: float = 1e-8):
    """Fit pyscnn's convex ReLU (augmented Lagrangian ``AL``) on gates ``h_j`` (rows, (m, d)).

    Program (Pilanci & Ergen 2020): ``min (1/2n)||sum_j D_j X (v_j - w_j) - y||^2 +
    beta sum_j (||v_j|| + ||w_j||)`` s.t. ``(2 D_j - 1) X v_j >= 0``, same for ``w_j``.
    Returns ``(objective, max_violation, seconds)``: the objective from pyscnn's own weights
    (convex predictions ``sum_j D_j X (v_j - w_j)``) and the largest cone violation
    ``max(0, -(2D_j - 1) X v_j)`` of those weights (the AL iterate is feasible only up to
    ``constraint_tol``).
    """
    from scnn.metrics import Metrics
    from scnn.models import ConvexReLU
    from scnn.optimize import optimize_model
    from scnn.regularizers import NeuronGL1
    from scnn.solvers import AL

    Y = y.reshape(len(y), -1)
    model = ConvexReLU(np.ascontiguousarray(gates.T), c=Y.shape[1])
    solver = AL(model, tol=tol, constraint_tol=constraint_tol)
    t0 = time.perf_counter()
    model, _ = optimize_model(model, solver, Metrics(), X, Y, regularizer=NeuronGL1(beta),
                              unitize_data=False, dtype="float64", return_convex=True)
    seconds = time.perf_counter() - t0
    V, W = (np.asarray(p) for p in model.parameters[:2])  # (c, m, d) each
    # pyscnn reorders the gates internally: use its gate matrix, not ours
    D = (X @ np.asarray(model.G) >= 0).astype(np.float64)  # (n, m)
    yhat = np.einsum("nm,nd,cmd->nc", D, X, V - W)
    S = 2.0 * D - 1.0
    viol = max(float(np.max(-S[:, :, None] * np.einsum("nd,cmd->cnm", X, U).transpose(1, 2, 0),
                            initial=0.0)) for U in (V, W))
    pen = float(np.linalg.norm(V, axis=2).sum() + np.linalg.norm(W, axis=2).sum())
    return float(0.5 * np.sum((yhat - Y) ** 2) / len(Y) + beta * pen), max(viol, 0.0), seconds
