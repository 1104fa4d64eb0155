"""Fast solvers vs the cvxpy reference; certificates; warnings."""

import warnings

import numpy as np
import pytest

from attnlens.convex.programs import build_program, sample_gates
from attnlens.convex.solvers import certify, solve
from attnlens.errors import ConvergenceWarning


def _data(n=80, s=5, d=3, c=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, s, d))
    y = rng.integers(0, c, n)
    return X, np.eye(c)[y], rng


CASES = [("self_attention", "linear", "squared"), ("self_attention", "gated_relu", "squared"),
         ("self_attention", "linear", "cross_entropy"), ("mixer", "gated_relu", "squared"),
         ("fno", "gated_relu", "cross_entropy"), ("bfno", "linear", "squared"),
         ("mlp", "gated_relu", "squared")]


@pytest.mark.parametrize("head,activation,loss", CASES)
def test_fast_solvers_match_cvxpy(head, activation, loss):
    X, Y, rng = _data()
    groups = 3 if head == "bfno" else 1
    if head == "bfno":
        X = np.concatenate([X, X[:, :, :3] ** 2], axis=2)  # d = 6, 3 groups of 2
        groups = 3
    gates = (sample_gates(head, 2, X.shape[1], X.shape[2], rng, groups)
             if activation != "linear" else None)
    prog = build_program(X, head, activation, Y.shape[1], gates=gates, groups=groups)
    beta = 0.02
    ref = solve(prog, Y, beta, loss, solver="cvxpy", tol=1e-4)
    for solver in ("fista", "bm"):
        res = solve(prog, Y, beta, loss, solver=solver, tol=1e-7, max_iter=20000)
        assert res.certificate <= 1e-7
        assert abs(res.objective - ref.objective) <= 1e-5 * abs(ref.objective)
        # the certificate is an honest bound: gap >= 0 and dual <= primal
        assert res.dual_objective <= res.objective + 1e-12
        assert res.grad_ratio <= 1 + 1e-3


def test_certificate_detects_suboptimal_point():
    X, Y, rng = _data()
    prog = build_program(X, "self_attention", "linear", 3)
    Z = [rng.standard_normal(s) for s in prog.zshapes()]
    _, _, cert, ratio = certify(prog, Z, Y, 0.02, "squared")
    assert cert > 1e-2


def test_non_convergence_warns_with_certificate():
    X, Y, _ = _data()
    prog = build_program(X, "self_attention", "linear", 3)
    with pytest.warns(ConvergenceWarning, match="certificate"):
        res = solve(prog, Y, 1e-3, "squared", solver="fista", tol=1e-12, max_iter=3)
    assert res.status == "max_iter"


def test_unknown_solver_raises():
    X, Y, _ = _data()
    prog = build_program(X, "mlp", "linear", 3)
    with pytest.raises(ValueError, match="solver"):
        with warnings.catch_warnings():
            solve(prog, Y, 0.1, "squared", solver="newton")
