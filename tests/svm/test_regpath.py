"""Regularization path: projections, constrained minimizers, convergence to the SVMs."""

import cvxpy as cp
import numpy as np
import pytest

from attnlens.svm._numerics import matrix_norm
from attnlens.svm.dynamics import ProblemBatch, correlation, loss_and_grad, svm_solution
from attnlens.svm.dynamics.regpath import project_ball, regularization_path
from attnlens.svm.problems import random_problem


@pytest.mark.parametrize("norm", ["fro", "nuc"])
def test_projection_matches_cvxpy(norm):
    rng = np.random.default_rng(0)
    W = rng.standard_normal((2, 4, 4)) * 2
    P = project_ball(W, 1.5, norm)
    for s in range(2):
        X = cp.Variable((4, 4))
        cons = [cp.norm(X, "fro") <= 1.5] if norm == "fro" else [cp.normNuc(X) <= 1.5]
        cp.Problem(cp.Minimize(cp.sum_squares(X - W[s])), cons).solve(solver=cp.CLARABEL)
        np.testing.assert_allclose(P[s], X.value, atol=1e-5)
    np.testing.assert_allclose(matrix_norm(P, norm), 1.5, rtol=1e-10)
    inside = W * 1e-3
    np.testing.assert_allclose(project_ball(inside, 1.5, norm), inside, atol=1e-12)


def test_path_direction_converges_to_frobenius_svm():
    b = ProblemBatch.from_problems([random_problem(3, 4, 4, seed=s) for s in (0, 1)])
    radii = [1.0, 4.0, 16.0, 64.0]
    rp = regularization_path(b, radii, "fro", inner_steps=200)
    np.testing.assert_allclose(matrix_norm(rp.W, "fro"), np.broadcast_to(radii, (2, 4)),
                               rtol=1e-6)
    # larger radius, lower loss (the path is monotone)
    assert np.all(np.diff(rp.loss, axis=1) <= 1e-9)
    for s in range(2):
        W = rp.W[s, -1]
        sel = np.einsum("ntd,de,ne->nt", b.X[s], W, b.Z[s]).argmax(1)
        W_mm = svm_solution(b.X[s], b.Z[s], sel, "fro", method="cvxpy")
        c = [float(correlation(rp.W[s, j], W_mm)) for j in range(4)]
        assert c[-1] > 0.98
        assert c[-1] > c[0]
    # the kept iterate is no worse than the projected warm start along a random direction
    lg = loss_and_grad(b, rp.W[:, -1])
    np.testing.assert_allclose(lg.loss, rp.loss[:, -1])


def test_path_nuclear_norm_stays_in_ball():
    b = ProblemBatch.from_problems([random_problem(3, 4, 4, seed=2)])
    rp = regularization_path(b, [1.0, 8.0], "nuc", inner_steps=50)
    assert np.all(matrix_norm(rp.W, "nuc") <= np.array([1.0, 8.0]) * (1 + 1e-9))
    np.testing.assert_allclose(rp.directions[0, 1] * 8.0, rp.W[0, 1])


def test_regpath_bad_options():
    b = ProblemBatch.from_problems([random_problem(2, 3, 3, seed=0)])
    with pytest.raises(ValueError, match="norm"):
        regularization_path(b, [1.0], "l1")
    with pytest.raises(ValueError, match="radii"):
        regularization_path(b, [2.0, 1.0])
    with pytest.raises(ValueError, match="radii"):
        regularization_path(b, [0.0, 1.0])
    with pytest.raises(ValueError, match="inner_steps"):
        regularization_path(b, [1.0], inner_steps=0)
