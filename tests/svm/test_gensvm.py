"""Gen-SVM: the NNLS fast path against the cvxpy reference, KKT, S_fin projections,
infeasibility evidence, the finite part W^fin, bad input."""

import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from attnlens.errors import InfeasibleError
from attnlens.svm import (
    MLPHead,
    att_svm,
    fin_projection,
    finite_part,
    gen_svm,
    project_out_fin,
    random_problem,
)
from attnlens.svm.dynamics import gen_svm_direction
from attnlens.svm.gensvm import _layout, _restricted_loss


def _instance(seed):
    rng = np.random.default_rng(seed)
    n, T, d = int(rng.integers(2, 5)), int(rng.integers(4, 7)), int(rng.integers(4, 8))
    p = random_problem(n, T, d, seed=seed)
    sets = [sorted(rng.choice(T, size=int(rng.integers(1, 4)), replace=False).tolist())
            for _ in range(n)]
    return p, sets


def _kkt_W(p, res):
    """sum alpha_c A_c + sum mu_j E_j built from the result's duals, term by term."""
    W = np.zeros((p.d, p.d))
    for i, s in enumerate(res.sets):
        o = s[0]
        for t in range(p.T):
            if t not in s:
                W += res.duals[i, t] * np.outer(p.X[i, o] - p.X[i, t], p.queries[i])
            elif t != o:
                W += res.equality_duals[i, t] * np.outer(p.X[i, t] - p.X[i, o], p.queries[i])
    return W


@pytest.mark.parametrize("seed", range(10))
def test_nnls_matches_cvxpy_and_satisfies_kkt(seed):
    p, sets = _instance(seed)
    try:
        ref = gen_svm(p.X, p.queries, sets, method="cvxpy")
    except InfeasibleError:
        with pytest.raises(InfeasibleError):
            gen_svm(p.X, p.queries, sets)
        return
    fast = gen_svm(p.X, p.queries, sets)
    assert fast.method == "nnls" and str(fast.status) == "optimal"
    assert abs(fast.objective - ref.objective) <= 1e-6 * ref.objective
    np.testing.assert_allclose(fast.W, ref.W, atol=1e-5 * np.abs(ref.W).max())
    assert fast.certificate <= 1e-7
    for res, slack_tol in ((fast, 0.0), (ref, 1e-5)):  # interior point: duals only ~0
        scores = np.einsum("itd,id->it", p.X, p.queries @ res.W.T)
        for i, s in enumerate(sets):
            inside, outside = scores[i, s], np.delete(scores[i], s)
            assert np.ptp(inside) <= 1e-9 * max(1.0, np.abs(scores).max())  # equalities
            assert outside.size == 0 or inside[0] - outside.max() >= 1 - 1e-9  # margins
        assert np.all(res.duals >= 0)
        inactive = np.isfinite(res.margins) & (res.margins > 1 + 1e-6)
        assert np.all(res.duals[inactive] <= slack_tol * res.duals.max())
    np.testing.assert_allclose(_kkt_W(p, fast), fast.W, atol=1e-9 * np.abs(fast.W).max())
    np.testing.assert_allclose(_kkt_W(p, ref), ref.W, atol=1e-5 * np.abs(ref.W).max())


def test_singleton_sets_give_the_one_token_att_svm():
    p = random_problem(4, 5, 6, seed=11)
    sel = p.optimal_tokens
    one = att_svm(p.X, p.queries, sel, method="cvxpy")
    gen = gen_svm(p.X, p.queries, sel)  # (n,) integer array = singletons
    assert gen.fin_dim == 0
    assert gen.objective == pytest.approx(one.objective, rel=1e-6)
    np.testing.assert_allclose(gen.W, one.W, atol=1e-5 * np.abs(one.W).max())
    np.testing.assert_allclose(gen_svm_direction(p.X, p.queries, [[a] for a in sel]), gen.W)


def test_fin_projection_is_an_orthogonal_projector_onto_the_span():
    p = random_problem(3, 5, 6, seed=5)
    sets = [[0, 2], [1], [3, 1, 4]]
    rng = np.random.default_rng(0)
    W = rng.standard_normal((6, 6))
    Pf = fin_projection(W, p.X, p.queries, sets)
    Po = project_out_fin(W, p.X, p.queries, sets)
    np.testing.assert_allclose(Pf + Po, W, atol=1e-12)
    # the generators, built here from the definition
    gens = [np.outer(p.X[i, t] - p.X[i, s[0]], p.queries[i]) for i, s in enumerate(sets)
            for t in s[1:]]
    G = np.array([g.ravel() for g in gens])
    for g in gens:
        assert abs(np.sum(Po * g)) < 1e-10
    coef, *_ = np.linalg.lstsq(G.T, Pf.ravel(), rcond=None)  # Pf lies in the span
    np.testing.assert_allclose(G.T @ coef, Pf.ravel(), atol=1e-10)
    np.testing.assert_allclose(fin_projection(Pf, p.X, p.queries, sets), Pf, atol=1e-10)
    res = gen_svm(p.X, p.queries, sets)
    assert res.fin_dim == np.linalg.matrix_rank(G) == 3
    np.testing.assert_allclose(res.fin_component(W), Pf, atol=1e-12)
    np.testing.assert_allclose(res.project_out_fin(res.W), res.W, atol=1e-9)


@pytest.mark.parametrize("method", ["nnls", "cvxpy"])
def test_infeasible_sets_raise_with_a_dual_ray(method):
    # 1-D tokens 0, 1, 2: keeping {0, 2} at equal score forces W = 0; selecting 1 alone is
    # the middle token. Both cannot be separated.
    X = np.array([[[0.0], [1.0], [2.0]], [[0.0], [1.0], [3.0]]])
    Z = np.ones((2, 1))
    for sets in ([[0, 2], [2]], [[1], [2]]):
        with pytest.raises(InfeasibleError) as err:
            gen_svm(X, Z, sets, method=method)
        ev = err.value.evidence
        assert ev["sequences"] == [0]
        ray = ev["dual_ray"]
        assert np.all(ray >= 0) and ray.sum() > 0
        lay = _layout(X, Z, sets)
        comb = sum(ray[i, u] * np.outer(lay.X[i, sets[i][0]] - lay.X[i, u], Z[i])
                   for i, u in zip(lay.ia, lay.ua, strict=True))
        assert np.abs(project_out_fin(comb, X, Z, sets)).max() < 1e-9  # combination in S_fin


def test_finite_part_matches_a_one_dimensional_minimization():
    # one sequence, set {0, 1}: S_fin is one-dimensional and the restricted attention is
    # p = sigmoid((x_1 - x_0)^T W z); minimize the loss over p directly and compare
    p = random_problem(1, 3, 4, seed=3)
    mlp = MLPHead.random(1, 4, 8, 103, "tanh")

    def loss_of_p(q):
        r = (1 - q) * p.X[0, 0] + q * p.X[0, 1]
        return np.logaddexp(0.0, -p.Y[0] * (mlp.v2[0] @ np.tanh(mlp.V1[0] @ r)))

    best = minimize_scalar(loss_of_p, bounds=(0, 1), method="bounded",
                           options={"xatol": 1e-12})
    assert 0.01 < best.x < 0.99  # an interior minimum: a genuine two-token selection
    res = finite_part(p.X, p.queries, [[0, 1]], p.Y, mlp=mlp)
    assert str(res.status) == "optimal" and res.fin_dim == 1 and res.certificate <= 1e-8
    s = p.X[0] @ res.W_fin @ p.queries[0]
    q = 1.0 / (1.0 + np.exp(-(s[1] - s[0])))
    assert q == pytest.approx(best.x, abs=1e-6)
    assert res.objective == pytest.approx(best.fun, abs=1e-10)
    np.testing.assert_allclose(project_out_fin(res.W_fin, p.X, p.queries, [[0, 1]]), 0,
                               atol=1e-12)


def test_finite_part_gradient_and_a_starved_token_warning():
    p = random_problem(3, 4, 5, seed=8)
    sets = [[0, 1], [2, 3], [1, 2, 3]]
    lay = _layout(p.X, p.queries, sets)
    mlp = MLPHead.random(1, 5, 6, 1, "tanh")
    rng = np.random.default_rng(2)
    W = rng.standard_normal((5, 5))
    E = rng.standard_normal((5, 5))
    _, G, _ = _restricted_loss(W, lay, p.Y, None, mlp, "logistic")
    h = 1e-6
    fd = (_restricted_loss(W + h * E, lay, p.Y, None, mlp, "logistic")[0]
          - _restricted_loss(W - h * E, lay, p.Y, None, mlp, "logistic")[0]) / (2 * h)
    assert np.sum(G * E) == pytest.approx(fd, rel=1e-6)
    # a linear head prefers one token of a pair: no finite minimizer, said out loud
    q = random_problem(1, 3, 4, seed=0)
    with pytest.warns(RuntimeWarning, match="drop it"):
        res = finite_part(q.X, q.queries, [[0, 1]], q.Y, v=q.v)
    assert str(res.status) != "optimal" and res.min_probability < 1e-6


def test_bad_input_names_the_parameter():
    p = random_problem(2, 4, 3, seed=0)
    X, Z = p.X, p.queries
    cases = [
        (dict(sets=[[0]]), ValueError, "sets"),
        (dict(sets=[[0], []]), ValueError, r"sets\[1\]"),
        (dict(sets=[[0], [7]]), ValueError, r"sets\[1\]"),
        (dict(sets=[[0], ["a"]]), TypeError, r"sets\[1\]"),
        (dict(sets=None), TypeError, "sets"),
        (dict(sets=np.ones((2, 3), dtype=bool)), ValueError, "mask"),
        (dict(sets=[[0, 1, 2, 3], [0, 1, 2, 3]]), ValueError, "every token"),
        (dict(method="magic"), ValueError, "method"),
        (dict(tol=-1.0), ValueError, "tol"),
        (dict(X=np.full((2, 4, 3), np.nan)), ValueError, "X"),
        (dict(Z=np.ones((2, 4))), ValueError, "Z"),
    ]
    for kwargs, exc, match in cases:
        args = {"X": X, "Z": Z, "sets": [[0], [1, 2]], **kwargs}
        with pytest.raises(exc, match=match):
            gen_svm(args.pop("X"), args.pop("Z"), args.pop("sets"), **args)
    with pytest.raises(ValueError, match="exactly one head"):
        finite_part(X, Z, [[0], [1, 2]], p.Y)
    with pytest.raises(ValueError, match="Y"):
        finite_part(X, Z, [[0], [1, 2]], np.array([1.0, 0.5]), v=p.v)


def test_sets_accept_lists_ragged_arrays_and_masks():
    p = random_problem(2, 4, 3, seed=0)
    mask = np.zeros((2, 4), dtype=bool)
    mask[0, [0, 1]] = True
    mask[1, 2] = True
    ref = gen_svm(p.X, p.queries, [[1, 0, 1], [2]], method="cvxpy")  # duplicates collapse
    for sets in ([[0, 1], [2]], np.array([[0, 1], [2]], dtype=object), mask):
        res = gen_svm(p.X, p.queries, sets)
        assert [s.tolist() for s in res.sets] == [[0, 1], [2]]
        assert res.objective == pytest.approx(ref.objective, rel=1e-6)
