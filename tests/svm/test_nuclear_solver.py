"""Att-SVM* (nuclear norm): the structured interior-point solver against the cvxpy reference,
its KKT conditions, its certificate, infeasibility, iteration limits and its working-set path."""

import warnings

import numpy as np
import pytest

import attnlens.svm._solvers.nuclear as nuclear
from attnlens._results import Status
from attnlens.errors import ConvergenceWarning, InaccurateSolutionWarning, InfeasibleError
from attnlens.svm import att_svm, att_svm_problem, paper_2d_example, planted_problem, random_problem
from attnlens.svm._solvers.certificate import dual_bound
from attnlens.svm._solvers.constraints import build_constraints


def _planted_selection(X, Q, rng):
    """Top token under a random W for every query (feasible by construction)."""
    W0 = rng.standard_normal((X.shape[2], X.shape[2]))
    return np.argmax(np.einsum("itd,ikd->ikt", X, Q @ W0.T), axis=2)


def _instance(variant, seed):
    """A feasible random instance of ``variant``: (X, Z, selection)."""
    rng = np.random.default_rng(seed)
    n, T, d = int(rng.integers(3, 16)), int(rng.integers(3, 9)), int(rng.integers(3, 12))
    p = random_problem(n, T, d, seed=rng)
    if variant == "cross":
        return p.X, p.Z, _planted_selection(p.X, p.Z[:, None], rng)[:, 0]
    if variant == "self":
        return p.X, None, _planted_selection(p.X, p.X[:, :1], rng)[:, 0]
    S = np.einsum("itd,ikd->ikt", p.X, p.X @ rng.standard_normal((d, d)).T)
    if variant == "causal":
        S[:, np.arange(T)[:, None] < np.arange(T)[None, :]] = -np.inf
    return p.X, None, np.argmax(S, axis=2)


def _constraint_matrix_sum(X, Z, sel, variant, duals):
    """``sum_c alpha_c (x_{i,a} - x_it) q_c^T`` computed directly from the inputs."""
    cs = build_constraints(X, Z, sel, variant)
    a = duals[:, None, :] if duals.ndim == 2 else duals
    B = np.zeros((X.shape[2], X.shape[2]))
    for i, k, t in zip(*np.nonzero(cs.mask), strict=True):
        B += a[i, k, t] * np.outer(X[i, cs.selection[i, k]] - X[i, t], cs.Q[i, k])
    return B


@pytest.mark.parametrize("seed", range(8))
def test_cross_matches_cvxpy_and_certifies(seed):
    X, Z, sel = _instance("cross", seed)
    ref = att_svm(X, Z, sel, norm="nuc", method="cvxpy")
    fast = att_svm(X, Z, sel, norm="nuc")
    assert fast.method == "interior_point"  # the default for norm="nuc"
    assert fast.status is Status.OPTIMAL and fast.certificate <= 1e-7
    assert abs(fast.objective - ref.objective) <= 1e-5 * ref.objective
    # weak duality across the two independent solves: each dual bound is below the other's
    # feasible objective
    cs = build_constraints(X, Z, sel, "cross")
    assert dual_bound(cs, fast.duals[:, None], "nuc") <= ref.objective * (1 + 1e-9)
    assert dual_bound(cs, ref.duals[:, None], "nuc") <= fast.objective * (1 + 1e-9)


@pytest.mark.parametrize("variant", ["self", "seq2seq", "causal"])
@pytest.mark.parametrize("seed", range(3))
def test_variants_match_cvxpy(variant, seed):
    X, Z, sel = _instance(variant, 100 + seed)
    ref = att_svm(X, Z, sel, norm="nuc", variant=variant, method="cvxpy")
    fast = att_svm(X, Z, sel, norm="nuc", variant=variant, method="interior_point")
    assert fast.status is Status.OPTIMAL and fast.certificate <= 1e-7
    assert abs(fast.objective - ref.objective) <= 1e-5 * ref.objective


@pytest.mark.parametrize(("variant", "seed"), [("cross", 0), ("cross", 1), ("self", 2), ("seq2seq", 3)])
def test_kkt_conditions(variant, seed):
    X, Z, sel = _instance(variant, 200 + seed)
    r = att_svm(X, Z, sel, norm="nuc", variant=variant)
    finite = np.isfinite(r.margins)
    # primal feasibility, dual feasibility, complementary slackness (interior-point duals of
    # inactive constraints are ~ mu / slack: tiny, not exactly zero)
    assert r.margins[finite].min() >= 1 - 1e-9
    assert np.all(r.duals >= 0) and np.all(r.duals[~finite] == 0)
    slack = np.where(finite, r.margins - 1, 0.0)
    assert np.sum(r.duals * slack) <= 1e-6 * r.objective
    # B = sum alpha_c A_c lies in the subdifferential of ||.||_* at W:
    # ||B||_2 <= 1 and <B, W> = ||W||_*, i.e. B = U V^T on W's singular subspaces
    B = _constraint_matrix_sum(X, Z, sel, variant, r.duals)
    assert np.linalg.norm(B, 2) <= 1 + 1e-6
    assert np.sum(B * r.W) >= (1 - 1e-6) * r.objective
    U, s, Vt = np.linalg.svd(r.W)
    k = r.rank
    P, Q = U[:, :k], Vt[:k].T
    assert np.abs(P.T @ B @ Q - np.eye(k)).max() <= 1e-3
    assert np.abs(P.T @ B @ Vt[k:].T).max(initial=0) <= 1e-3
    assert np.abs(U[:, k:].T @ B @ Q).max(initial=0) <= 1e-3
    if variant == "cross":
        assert r.rank <= X.shape[0]


def test_rank_at_most_n_when_n_below_d():
    for seed in range(3):
        p, sel = planted_problem(4, 6, 12, seed=seed)
        r = att_svm(p.X, p.Z, sel, norm="nuc")
        assert r.status is Status.OPTIMAL and r.rank <= 4


def test_single_sequence_equals_frobenius_and_papers_example():
    # n = 1: only p = W z matters and min ||W||_* = min ||W||_F = min ||p|| / ||z|| (rank one)
    p = paper_2d_example()
    glob = att_svm_problem(p, np.array([0]), norm="nuc")
    loc = att_svm_problem(p, np.array([1]), norm="nuc")
    assert 0.5 * glob.objective**2 == pytest.approx(1 / (2 * 1.01), rel=1e-6)  # paper: 0.495
    assert 0.5 * loc.objective**2 == pytest.approx(0.5, rel=1e-6)  # paper: 0.5
    assert glob.rank == 1 and loc.rank == 1


def test_unnormalized_and_degenerate_data():
    # large token norms and two identical competitors (identical constraints, a singular Schur
    # block): neither the normalization nor the degeneracy may change the answer
    rng = np.random.default_rng(5)
    X = 7.0 * rng.standard_normal((10, 6, 5))
    X[:, 5] = X[:, 4]
    Z = 0.3 * rng.standard_normal((10, 5))
    sel = _planted_selection(X[:, :4], Z[:, None], rng)[:, 0]  # never token 4 or 5
    ref = att_svm(X, Z, sel, norm="nuc", method="cvxpy")
    fast = att_svm(X, Z, sel, norm="nuc")
    assert fast.status is Status.OPTIMAL
    assert abs(fast.objective - ref.objective) <= 1e-5 * ref.objective


def test_working_set_rounds(monkeypatch):
    # start from a partial working set (the Frobenius-seeded one): constraints it misses must
    # be added until the certificate holds on the full set
    monkeypatch.setattr(nuclear, "_MAX_WORKING", 20)
    p, sel = planted_problem(10, 10, 6, seed=3)
    ref = att_svm(p.X, p.Z, sel, norm="nuc", method="cvxpy")
    fast = att_svm(p.X, p.Z, sel, norm="nuc")
    assert fast.status is Status.OPTIMAL and fast.certificate <= 1e-7
    assert abs(fast.objective - ref.objective) <= 1e-5 * ref.objective


def test_missing_constraints_admitted_within_one_run(monkeypatch, caplog):
    # a poor starting working set (one constraint per query, no reweighting): the violated
    # constraints enter while the interior-point method runs, without a restart
    monkeypatch.setattr(nuclear, "_MAX_WORKING", 20)
    monkeypatch.setattr(nuclear, "_SEED_IRLS", 0)
    monkeypatch.setattr(nuclear, "_SEED_SLACK", 0.0)
    p, sel = planted_problem(10, 10, 6, seed=3)
    ref = att_svm(p.X, p.Z, sel, norm="nuc", method="cvxpy")
    with caplog.at_level("INFO", logger="attnlens.svm._solvers.nuclear"):
        fast = att_svm(p.X, p.Z, sel, norm="nuc")
    assert fast.status is Status.OPTIMAL and fast.certificate <= 1e-7
    assert abs(fast.objective - ref.objective) <= 1e-5 * ref.objective
    rounds = [r.getMessage() for r in caplog.records if "nuclear ipm round" in r.getMessage()]
    assert len(rounds) == 1 and rounds[0].startswith("nuclear ipm round 0: 10 constraints at start")


def test_working_set_limit_gives_a_feasible_point_and_an_honest_certificate(monkeypatch):
    # the support (23 constraints) does not fit the working-set limit: the returned W must be
    # feasible and the certificate a true bracket of the optimum
    monkeypatch.setattr(nuclear, "_MAX_WORKING", 20)
    monkeypatch.setattr(nuclear, "_WORKING_LIMIT", 15)
    p, sel = planted_problem(10, 10, 6, seed=3)
    ref = att_svm(p.X, p.Z, sel, norm="nuc", method="cvxpy")
    with pytest.warns(InaccurateSolutionWarning):
        r = att_svm(p.X, p.Z, sel, norm="nuc")
    assert r.status is Status.OPTIMAL_INACCURATE and 1e-7 < r.certificate < 1.0
    assert r.margins[np.isfinite(r.margins)].min() >= 1 - 1e-9
    lower = (1 - r.certificate) * r.objective
    assert lower <= ref.objective * (1 + 1e-7) and r.objective >= ref.objective * (1 - 1e-7)


@pytest.mark.parametrize("method", ["interior_point", "auto"])
def test_infeasible_d1_raises_with_dual_ray(method):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((4, 5, 1))
    Z = rng.standard_normal((4, 1))
    sel = np.argsort(X[:, :, 0], axis=1)[:, 2]  # the middle token: not separable in d = 1
    with pytest.raises(InfeasibleError) as err:
        att_svm(X, Z, sel, norm="nuc", method=method)
    ray = err.value.evidence["dual_ray"][:, 0]
    assert np.all(ray >= -1e-12) and ray.sum() > 0
    B = _constraint_matrix_sum(X, Z, sel, "cross", ray)
    assert np.abs(B).max() <= 1e-9 * ray.sum()
    assert err.value.evidence["sequences"]


def test_infeasible_random_selection_many_sequences():
    # n >> d with a random selection: infeasible; the fast method must say so, as cvxpy does
    p = random_problem(40, 6, 3, seed=4)
    sel = np.random.default_rng(4).integers(0, 6, 40)
    with pytest.raises(InfeasibleError):
        att_svm(p.X, p.Z, sel, norm="nuc", method="cvxpy")
    with pytest.raises(InfeasibleError) as err:
        att_svm(p.X, p.Z, sel, norm="nuc")
    ray = err.value.evidence["dual_ray"][:, 0]
    B = _constraint_matrix_sum(p.X, p.Z, sel, "cross", ray)
    assert ray.sum() > 0 and np.linalg.norm(B, 2) <= 1e-7 * ray.sum()


def test_competitor_equal_to_selected_token_is_infeasible():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((3, 4, 3))
    X[1, 2] = X[1, 0]  # sequence 1: a competitor identical to the selected token 0
    with pytest.raises(InfeasibleError) as err:
        att_svm(X, rng.standard_normal((3, 3)), np.zeros(3, int), norm="nuc")
    assert err.value.evidence["sequences"] == [1]


@pytest.mark.parametrize("max_iter", [1, 4])
def test_max_iter_reports_status_and_a_valid_certificate(max_iter):
    # max_iter=1 leaves no feasible interior-point iterate: the best feasible point between it
    # and the Frobenius solution is returned; max_iter=4 returns the interior-point iterate
    p, sel = planted_problem(20, 8, 10, seed=1)
    ref = att_svm(p.X, p.Z, sel, norm="nuc", method="cvxpy")
    with pytest.warns(ConvergenceWarning):
        r = att_svm(p.X, p.Z, sel, norm="nuc", max_iter=max_iter)
    assert r.status is Status.MAX_ITER and r.iterations == max_iter
    assert r.margins[np.isfinite(r.margins)].min() >= 1 - 1e-9  # still a feasible W
    assert r.certificate > 1e-7
    # the certificate is an honest gap: the true optimum lies in [lower, objective]
    lower = (1 - r.certificate) * r.objective
    assert lower <= ref.objective * (1 + 1e-7) and r.objective >= ref.objective * (1 - 1e-7)


def test_status_optimal_only_within_tol():
    p, sel = planted_problem(15, 8, 8, seed=2)
    loose = att_svm(p.X, p.Z, sel, norm="nuc", tol=1e-3)
    assert loose.status is Status.OPTIMAL and loose.certificate <= 1e-3
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tight = att_svm(p.X, p.Z, sel, norm="nuc", tol=1e-15)
    if tight.status is Status.OPTIMAL:
        assert tight.certificate <= 1e-15
    else:  # not reached: it must say so
        assert any(issubclass(w.category, (InaccurateSolutionWarning, ConvergenceWarning))
                   for w in caught)


@pytest.mark.parametrize(("norm", "method"), [("fro", "interior_point"), ("nuc", "active_set")])
def test_method_norm_mismatch_names_the_method(norm, method):
    p, sel = planted_problem(4, 4, 3, seed=0)
    with pytest.raises(ValueError, match=f"method='{method}'"):
        att_svm(p.X, p.Z, sel, norm=norm, method=method)
