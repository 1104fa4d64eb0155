"""Trackers: correlation, the SVM solutions they use, local optimality, tracking a run."""

import numpy as np
import pytest

from attnlens.svm.dynamics import (
    ProblemBatch,
    correlation,
    is_locally_optimal_at,
    svm_solution,
    track_svm,
    train_attention,
)
from attnlens.svm.problems import paper_2d_example, random_problem


def _cvxpy_wmm(X, Z, sel, norm):
    """An independent oracle: min ||W|| s.t. (x_{i,a} - x_it)^T W z_i >= 1 on vec(W)."""
    import cvxpy as cp

    n, T, d = X.shape
    A = np.array([np.outer(X[i, sel[i]] - X[i, t], Z[i]).ravel()
                  for i in range(n) for t in range(T) if t != sel[i]])
    W = cp.Variable((d, d))
    obj = cp.norm(W, "fro") if norm == "fro" else cp.normNuc(W)
    cp.Problem(cp.Minimize(obj), [A @ cp.vec(W, order="C") >= 1]).solve(solver=cp.CLARABEL)
    return np.asarray(W.value)


def test_correlation_is_the_cosine_of_flattened_matrices():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((4, 3, 3))
    B = rng.standard_normal((4, 3, 3))
    expected = [
        a.ravel() @ b.ravel() / np.linalg.norm(a) / np.linalg.norm(b)
        for a, b in zip(A, B, strict=True)
    ]
    np.testing.assert_allclose(correlation(A, B), expected, rtol=1e-12)
    np.testing.assert_allclose(correlation(A, 3 * A), 1.0)
    np.testing.assert_allclose(correlation(A, -A), -1.0)
    assert np.isnan(correlation(A[0], np.zeros((3, 3))))
    with pytest.raises(ValueError, match="one shape"):
        correlation(A, np.zeros((2, 2)))


@pytest.mark.parametrize("norm", ["fro", "nuc"])
def test_svm_solution_agrees_with_cvxpy_reference(norm):
    p = random_problem(4, 5, 6, seed=3)
    sel = p.optimal_tokens
    W = svm_solution(p.X, p.queries, sel, norm, method="auto")
    W_ref = _cvxpy_wmm(p.X, p.queries, sel, norm)
    val = np.linalg.norm(W) if norm == "fro" else np.linalg.norm(W, "nuc")
    val_ref = np.linalg.norm(W_ref) if norm == "fro" else np.linalg.norm(W_ref, "nuc")
    assert val == pytest.approx(val_ref, rel=1e-4)
    assert correlation(W, W_ref) > 0.999


def test_svm_solution_falls_back_to_cvxpy_when_the_fast_solver_fails(monkeypatch, caplog):
    from attnlens.svm import attsvm
    from attnlens.svm.dynamics import trackers

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(attsvm, "solve_frobenius", broken)  # the fast path only
    monkeypatch.setattr(trackers, "_FALLBACK_WARNED", [])
    p = random_problem(3, 4, 5, seed=1)
    before = trackers.SOLVER_COUNTS["cvxpy"]
    with caplog.at_level("WARNING", logger="attnlens.svm.dynamics.trackers"):
        W = svm_solution(p.X, p.queries, p.optimal_tokens, "fro", method="auto")
    assert "boom" in caplog.text
    assert trackers.SOLVER_COUNTS["cvxpy"] == before + 1
    W_ref = _cvxpy_wmm(p.X, p.queries, p.optimal_tokens, "fro")
    np.testing.assert_allclose(W, W_ref, rtol=1e-5, atol=1e-6)  # two cvxpy formulations
    with pytest.raises(ValueError, match="method"):
        svm_solution(p.X, p.queries, p.optimal_tokens, "fro", method="fast")


def test_local_optimality_on_the_papers_2d_example():
    # Tarzanagh et al. (2023): tokens 0 and 1 are locally optimal, token 2 is not
    p = paper_2d_example()
    gamma = p.token_scores
    flags = []
    for a in range(3):
        W = _cvxpy_wmm(p.X, p.queries, np.array([a]), "fro")
        flags.append(is_locally_optimal_at(W, p.X, p.queries, gamma, np.array([a])))
    assert flags == [True, True, False]


def test_track_svm_reports_convergence_and_infeasibility():
    # n >> d: a planted selection is feasible, and some other selection is not
    b = ProblemBatch.from_problems([random_problem(4, 5, 6, seed=s) for s in (0, 1)])
    traj = train_attention(b, "W", steps=800, lr=0.1)
    track = track_svm(b, traj)
    assert track.feasible["fro"].all() and track.feasible["nuc"].all()
    assert np.all(track.final["fro"] > 0.95)
    assert track.corr["fro"].shape == traj.loss.shape
    np.testing.assert_allclose(track.corr["fro"][:, -1], track.final["fro"])
    assert track.mean_final("fro") > track.mean_final("nuc")
    gamma = b.token_scores
    np.testing.assert_array_equal(
        track.globally_optimal, np.all(traj.selection == gamma.argmax(-1), axis=-1)
    )
    # a selection that picks, in a 1-d problem, a token strictly between two others
    X = np.array([[[0.0], [1.0], [2.0]]])
    b1 = ProblemBatch(X[None], np.ones((1, 1)), np.ones((1, 1)), np.ones((1, 1, 1)))
    t1 = train_attention(b1, "W", steps=5)
    tr1 = track_svm(b1, t1, selection=np.array([[1]]))
    assert not tr1.feasible["fro"][0]
    assert np.isnan(tr1.final["fro"][0])
    assert np.isnan(tr1.mean_final("fro"))


def test_track_svm_bad_input():
    b = ProblemBatch.from_problems([random_problem(3, 4, 5, seed=0)])
    traj = train_attention(b, "W", steps=5)
    with pytest.raises(ValueError, match="norms"):
        track_svm(b, traj, norms=("l1",))
    b2 = ProblemBatch.from_problems([random_problem(3, 4, 5, seed=s) for s in (0, 1)])
    with pytest.raises(ValueError, match="seeds"):
        track_svm(b2, traj)


def test_gen_svm_with_singleton_sets_is_the_one_token_svm():
    from attnlens.svm.dynamics import gen_svm_direction

    p = random_problem(3, 4, 5, seed=4)
    sel = p.optimal_tokens
    W_gen = gen_svm_direction(p.X, p.queries, [[int(a)] for a in sel])
    W_one = svm_solution(p.X, p.queries, sel, "fro")
    np.testing.assert_allclose(W_gen, W_one, atol=1e-4 * np.abs(W_one).max())
    assert correlation(W_gen, W_one) > 1 - 1e-8


def test_project_out_fin_and_gen_svm_orthogonality():
    from attnlens.svm.dynamics import gen_svm_direction, project_out_fin

    p = random_problem(3, 4, 6, seed=5)
    sets = [[0, 2], [1], [3, 1]]
    W_eq = gen_svm_direction(p.X, p.queries, sets)
    rng = np.random.default_rng(0)
    W = rng.standard_normal((6, 6))
    P = project_out_fin(W, p.X, p.queries, sets)
    for i, s in enumerate(sets):
        for t in s[1:]:
            B = np.outer(p.X[i, t] - p.X[i, s[0]], p.queries[i])
            assert abs(np.sum(P * B)) < 1e-10  # projected out
            assert abs(np.sum(W_eq * B)) < 1e-6  # equality constraints of Gen-SVM
    # projecting twice changes nothing; W^SVMeq is already orthogonal to S_fin
    np.testing.assert_allclose(project_out_fin(P, p.X, p.queries, sets), P, atol=1e-12)
    np.testing.assert_allclose(project_out_fin(W_eq, p.X, p.queries, sets), W_eq, atol=1e-6)
