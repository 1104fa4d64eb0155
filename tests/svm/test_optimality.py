"""Local/global optimality and the search for locally optimal selections, checked against an
independent brute force (own cvxpy formulation, own support sets, the definition verbatim)."""

import itertools

import cvxpy as cp
import numpy as np
import pytest

from attnlens.errors import InfeasibleError
from attnlens.svm import (
    att_svm_problem,
    check_optimality,
    is_globally_optimal,
    is_locally_optimal,
    locally_optimal_selections,
    paper_2d_example,
    random_problem,
    support_sets,
)
from attnlens.svm.dynamics import is_locally_optimal_at


def _wmm_reference(X, Z, sel):
    """min ||W||_F^2 s.t. (x_{i,a} - x_it)^T W z_i >= 1 with cvxpy; None when infeasible."""
    n, T, d = X.shape
    W = cp.Variable((d, d))
    cons = [
        (X[i, sel[i]] - X[i, t]) @ W @ Z[i] >= 1 for i in range(n) for t in range(T) if t != sel[i]
    ]
    prob = cp.Problem(cp.Minimize(cp.sum_squares(W)), cons)
    prob.solve(solver=cp.CLARABEL)
    if prob.status in (cp.INFEASIBLE, cp.INFEASIBLE_INACCURATE):
        return None
    return W.value


def _brute_force(p):
    """Every selection: None (infeasible) or (locally optimal?, ||W^mm||_F)."""
    X, Z, gamma = p.X, p.queries, p.token_scores
    out = {}
    for sel in itertools.product(range(p.T), repeat=p.n):
        W = _wmm_reference(X, Z, np.array(sel))
        if W is None:
            out[sel] = None
            continue
        ok = True
        for i in range(p.n):
            for t in range(p.T):
                margin = (X[i, sel[i]] - X[i, t]) @ W @ Z[i]
                if t != sel[i] and margin <= 1 + 1e-5 and gamma[i, t] >= gamma[i, sel[i]]:
                    ok = False
        out[sel] = (ok, float(np.linalg.norm(W)))
    return out


def test_papers_2d_example():
    # Tarzanagh et al. (NeurIPS 2023): token 0 globally optimal, token 1 locally optimal,
    # token 2 feasible but not locally optimal (its neighbours score higher)
    p = paper_2d_example()
    reps = [check_optimality(p, [a]) for a in range(3)]
    assert [r.locally_optimal for r in reps] == [True, True, False]
    assert [r.globally_optimal for r in reps] == [True, False, False]
    assert [r.support[0].tolist() for r in reps] == [[2], [2], [0, 1]]
    assert reps[2].violations == [(0, 0), (0, 1)]
    assert 0.5 * reps[0].objective**2 == pytest.approx(0.495, abs=5e-4)
    assert 0.5 * reps[1].objective**2 == pytest.approx(0.5, rel=1e-6)
    search = locally_optimal_selections(p)
    assert search.exhausted and search.candidates == 3
    assert search.selections.tolist() == [[0], [1]]
    assert search.not_locally_optimal == 1 and search.infeasible == 0
    assert [f.globally_optimal for f in search.found] == [True, False]


@pytest.mark.parametrize(("n", "T", "d", "seed"), [(3, 4, 2, 1), (2, 4, 2, 7), (3, 3, 2, 4)])
def test_exhaustive_search_matches_brute_force(n, T, d, seed):
    p = random_problem(n, T, d, seed=seed)
    brute = _brute_force(p)
    search = locally_optimal_selections(p, max_candidates=T**n)
    assert search.exhausted and search.candidates == T**n
    expected = {s: v[1] for s, v in brute.items() if v is not None and v[0]}
    got = {tuple(f.selection.tolist()): f.objective for f in search.found}
    assert set(got) == set(expected)
    for s, obj in got.items():
        assert obj == pytest.approx(expected[s], rel=1e-6)
    assert search.infeasible == sum(v is None for v in brute.values())
    assert search.not_locally_optimal == sum(v is not None and not v[0] for v in brute.values())
    # best-first: total scores never increase along the search
    scores = [f.score for f in search.found]
    assert scores == sorted(scores, reverse=True)


def test_bounded_search_finds_definition_satisfying_selections_and_counts_infeasible():
    # n >> d: many selections are infeasible; every one reported must be feasible and local
    p = random_problem(5, 4, 2, seed=1)
    search = locally_optimal_selections(p, max_candidates=40)
    assert not search.exhausted and search.candidates == 40
    assert search.infeasible > 0 and len(search.found) > 0
    assert search.candidates == (search.infeasible + search.not_locally_optimal
                                 + search.unresolved + len(search.found))
    gamma = p.token_scores
    for f in search.found:
        W = _wmm_reference(p.X, p.queries, f.selection)
        assert W is not None
        assert np.linalg.norm(W) == pytest.approx(f.objective, rel=1e-6)
        for i in range(p.n):
            for t in range(p.T):
                m = (p.X[i, f.selection[i]] - p.X[i, t]) @ W @ p.queries[i]
                if t != f.selection[i] and m <= 1 + 1e-5:
                    assert gamma[i, f.selection[i]] > gamma[i, t]


def test_max_found_stops_early_and_self_attention_problems_work():
    p = random_problem(4, 5, 6, seed=2, self_attention=True, query_index=1)
    search = locally_optimal_selections(p, max_candidates=50, max_found=2)
    assert len(search.found) == 2 and not search.exhausted
    for f in search.found:
        res = att_svm_problem(p, f.selection, method="cvxpy")
        assert res.variant == "self"
        assert is_locally_optimal(p, f.selection, method="cvxpy")
        assert f.objective == pytest.approx(res.objective, rel=1e-6)


def test_support_sets_and_the_trackers_path_agree():
    # is_locally_optimal_at (an independent cvxpy W^mm, margins rescaled) vs this module
    rng = np.random.default_rng(3)
    p = random_problem(4, 5, 6, seed=3)
    checked = 0
    for _ in range(12):
        sel = rng.integers(0, 5, size=4)
        try:
            rep = check_optimality(p, sel)
        except InfeasibleError:
            continue
        checked += 1
        W = _wmm_reference(p.X, p.queries, sel)
        assert is_locally_optimal_at(W, p.X, p.queries, p.token_scores, sel) == (
            rep.locally_optimal
        )
        sup = support_sets(p, sel)
        assert [s.tolist() for s in sup] == [s.tolist() for s in rep.result.support]
    assert checked >= 6


def test_global_optimality_needs_no_solve_and_handles_ties():
    p = paper_2d_example()
    assert is_globally_optimal(p, [0]) and not is_globally_optimal(p, [1])
    X = np.array([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]])  # tokens 0 and 1 tie
    from attnlens.svm import TokenSelectionProblem

    q = TokenSelectionProblem(X, np.array([1.0]), np.array([1.0, 0.0]), Z=np.array([[1.0, 0]]))
    assert is_globally_optimal(q, [0]) and is_globally_optimal(q, [1])
    assert not is_globally_optimal(q, [2])


def test_infeasible_selection_raises_and_bad_input_names_the_parameter():
    X = np.array([[[0.0], [1.0], [2.0]]])
    from attnlens.svm import TokenSelectionProblem

    p = TokenSelectionProblem(X, np.array([1.0]), np.array([1.0]), Z=np.ones((1, 1)))
    with pytest.raises(InfeasibleError):
        is_locally_optimal(p, [1])  # the middle token of a 1-D sequence cannot be separated
    with pytest.raises(InfeasibleError):
        support_sets(p, [1])
    q = paper_2d_example()
    with pytest.raises(ValueError, match="selection"):
        is_locally_optimal(q, [3])
    with pytest.raises(ValueError, match="selection"):
        check_optimality(q, [0, 1])
    with pytest.raises(TypeError, match="selection"):
        check_optimality(q, ["a"])
    with pytest.raises(ValueError, match="max_candidates"):
        locally_optimal_selections(q, max_candidates=0)
    with pytest.raises(ValueError, match="norm"):
        locally_optimal_selections(q, norm="l1")
    with pytest.raises(ValueError, match="another selection"):
        support_sets(q, [1], result=att_svm_problem(q, [0]))
