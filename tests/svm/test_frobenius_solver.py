"""The fast Frobenius Att-SVM solver (augmented Lagrangian + semismooth Newton + polish).

Independent paths: the cvxpy reference (Clarabel) on every variant, and scipy's Lawson-Hanson
NNLS (``scipy.optimize.nnls``) on the least-distance form of a larger instance.
"""

import numpy as np
import pytest
from scipy.optimize import nnls

from attnlens.errors import InfeasibleError
from attnlens.svm import att_svm, planted_problem
from attnlens.svm._solvers import frobenius as frob
from attnlens.svm._solvers.constraints import build_constraints

TOL = 1e-7


def _planted(variant: str, n: int, T: int, d: int, seed: int):
    """A feasible instance of ``variant``: select the top token under a random ``W0``."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, T, d))
    X /= np.linalg.norm(X, axis=-1, keepdims=True)
    W0 = rng.standard_normal((d, d))
    if variant == "cross":
        Z = rng.standard_normal((n, d))
        Z /= np.linalg.norm(Z, axis=-1, keepdims=True)
        return X, Z, np.argmax(np.einsum("itd,id->it", X, Z @ W0.T), axis=1)
    if variant == "self":
        return X, None, np.argmax(np.einsum("itd,id->it", X, X[:, 0] @ W0.T), axis=1)
    S = np.einsum("itd,ikd->ikt", X, X @ W0.T)  # (n, K=T, T): score of token t for query k
    if variant == "causal":
        S = np.where(np.arange(T)[None, None, :] <= np.arange(T)[None, :, None], S, -np.inf)
    return X, None, np.argmax(S, axis=2)


def _check_kkt(res, X, Z, sel, variant):
    """Feasibility, alpha >= 0, complementary slackness and W = sum alpha_c A_c."""
    cs = build_constraints(X, Z, sel, variant)
    duals = res.duals if res.duals.ndim == 3 else res.duals[:, None, :]
    margins = res.margins if res.margins.ndim == 3 else res.margins[:, None, :]
    assert margins[cs.mask].min() >= 1 - 1e-9
    assert np.all(duals >= 0)
    # W returned is scaled to min margin 1; the duals belong to the unscaled W = sum alpha_c A_c
    i, k, t = cs.index()
    U, V = cs.vectors(i, k, t)
    B = np.einsum("c,ca,cb->ab", duals[i, k, t], U, V)
    assert np.linalg.norm(B - res.W) <= 1e-6 * np.linalg.norm(res.W)
    a = duals[cs.mask]
    assert np.all(np.abs(a * (margins[cs.mask] - 1)) <= 1e-7 * max(a.max(), 1e-300))


CASES = {
    "cross": (12, 8, 10),
    "self": (12, 8, 10),
    "seq2seq": (5, 6, 6),
    "causal": (6, 7, 6),
}


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("variant", list(CASES))
def test_matches_cvxpy_and_satisfies_kkt(variant, seed):
    n, T, d = CASES[variant]
    X, Z, sel = _planted(variant, n, T, d, seed)
    ref = att_svm(X, Z, sel, variant=variant, method="cvxpy")
    fast = att_svm(X, Z, sel, variant=variant, tol=TOL)
    assert fast.method == "active_set"
    assert str(fast.status) == "optimal"
    assert fast.certificate <= TOL
    assert abs(fast.objective - ref.objective) <= 1e-6 * ref.objective
    _check_kkt(fast, X, Z, sel, variant)


@pytest.mark.parametrize("variant", ["cross", "seq2seq"])
def test_iterative_path_matches_direct_path(monkeypatch, variant):
    """Forcing the preconditioned-CG Newton and polish solves gives the same optimum."""
    n, T, d = (150, 12, 16) if variant == "cross" else (20, 8, 12)
    X, Z, sel = _planted(variant, n, T, d, 7)
    direct = att_svm(X, Z, sel, variant=variant)
    monkeypatch.setattr(frob, "DIRECT_MAX", 8)
    iterative = att_svm(X, Z, sel, variant=variant)
    assert iterative.certificate <= TOL and direct.certificate <= TOL
    assert abs(iterative.objective - direct.objective) <= 1e-7 * direct.objective
    _check_kkt(iterative, X, Z, sel, variant)


def test_larger_instance_matches_scipy_nnls():
    """(200, 16, 32) against Lawson-Hanson NNLS on ``min ||[A; 1^T] u - e||`` (scipy).

    Lawson & Hanson (1974, ch. 23): ``alpha = u / (1 - 1^T u)`` solves the least-distance dual.
    """
    p, sel = planted_problem(200, 16, 32, seed=3)
    cs = build_constraints(p.X, p.Z, sel, "cross")
    i, k, t = cs.index()
    U, V = cs.vectors(i, k, t)
    A = np.einsum("ca,cb->cab", U, V).reshape(i.size, -1)  # rows vec(A_c)
    E = np.vstack([A.T, np.ones((1, i.size))])
    f = np.zeros(E.shape[0])
    f[-1] = 1.0
    u, _ = nnls(E, f, maxiter=50 * E.shape[1])
    W_ref = (A.T @ (u / (1.0 - u.sum()))).reshape(32, 32)
    M_ref = cs.margins(W_ref)[cs.mask]
    obj_ref = np.linalg.norm(W_ref) / M_ref.min()
    fast = att_svm(p.X, p.Z, sel)
    assert fast.certificate <= TOL
    assert abs(fast.objective - obj_ref) <= 1e-6 * obj_ref
    assert np.linalg.norm(fast.W - W_ref / M_ref.min()) <= 1e-5 * np.linalg.norm(fast.W)
    _check_kkt(fast, p.X, p.Z, sel, "cross")


def test_saturated_support_n_much_larger_than_d():
    """n >> d: about d^2 constraints are active, G_FF is ill-conditioned; still exact."""
    p, sel = planted_problem(600, 8, 8, seed=1)
    ref = att_svm(p.X, p.Z, sel, method="cvxpy")
    fast = att_svm(p.X, p.Z, sel)
    assert np.count_nonzero(fast.duals) >= 0.9 * 8 * 8
    assert fast.certificate <= TOL
    assert abs(fast.objective - ref.objective) <= 1e-6 * ref.objective
    _check_kkt(fast, p.X, p.Z, sel, "cross")


def test_degenerate_duplicated_sequences():
    """Every sequence twice: the dual is not unique and G is singular; still certified."""
    X, Z, sel = _planted("cross", 40, 6, 5, 11)
    X2, Z2, sel2 = np.concatenate([X, X]), np.concatenate([Z, Z]), np.concatenate([sel, sel])
    ref = att_svm(X2, Z2, sel2, method="cvxpy")
    fast = att_svm(X2, Z2, sel2)
    assert fast.certificate <= TOL
    assert abs(fast.objective - ref.objective) <= 1e-6 * ref.objective
    _check_kkt(fast, X2, Z2, sel2, "cross")


@pytest.mark.parametrize(("n", "T", "d", "seed"), [(200, 8, 4, 0), (60, 5, 3, 1), (500, 16, 16, 0)])
def test_random_selection_with_n_much_larger_than_d_is_infeasible(n, T, d, seed):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, T, d))
    Z = rng.standard_normal((n, d))
    sel = rng.integers(0, T, size=n)
    with pytest.raises(InfeasibleError) as err:
        att_svm(X, Z, sel)
    ev = err.value.evidence
    ray = ev["dual_ray"]
    assert np.all(ray >= 0) and ray.sum() > 0
    # sum r_c A_c ~ 0 with r >= 0: no W can give every constraint a positive margin
    assert ev["ray_residual"] <= 1e-6
    assert ev["sequences"]


def test_competitor_equal_to_selected_token_is_infeasible():
    """A competitor identical to the selected token has margin 0 for every W."""
    p, sel = planted_problem(20, 6, 5, seed=0)
    X = p.X.copy()
    X[3, (sel[3] + 1) % 6] = X[3, sel[3]]
    with pytest.raises(InfeasibleError) as err:
        att_svm(X, p.Z, sel)
    assert err.value.evidence["sequences"] == [3]
    assert err.value.evidence["ray_residual"] == 0.0


def test_result_reports_effort():
    p, sel = planted_problem(30, 8, 8, seed=5)
    res = att_svm(p.X, p.Z, sel)
    assert res.iterations > 0 and res.seconds > 0
    cs = build_constraints(p.X, p.Z, sel, "cross")
    out = frob.solve_frobenius(cs, tol=TOL, max_iter=1000)
    st = out.stats
    assert out.converged and st["support"] == np.count_nonzero(out.duals)
    assert st["gap"] <= TOL and out.iterations == st["newton"] + st["polish"]


def test_max_iter_is_respected():
    p, sel = planted_problem(100, 8, 8, seed=2)
    cs = build_constraints(p.X, p.Z, sel, "cross")
    out = frob.solve_frobenius(cs, tol=1e-12, max_iter=2)
    assert out.iterations <= 2
    assert not out.converged and out.W is not None
