"""Att-SVM: fast solver vs the cvxpy reference, the papers' 2-D example, infeasibility, bad input."""

import numpy as np
import pytest

from attnlens.errors import InfeasibleError
from attnlens.svm import att_svm, att_svm_problem, paper_2d_example, planted_problem


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("variant", ["cross", "self"])
def test_frobenius_active_set_matches_cvxpy(seed, variant):
    p, sel = planted_problem(12, 8, 10, seed=seed)
    Z = p.Z if variant == "cross" else None
    if variant == "self":
        W0 = np.random.default_rng(seed).standard_normal((10, 10))
        sel = np.argmax(np.einsum("itd,id->it", p.X, p.X[:, 0] @ W0.T), axis=1)
    ref = att_svm(p.X, Z, sel, variant=variant, method="cvxpy")
    fast = att_svm(p.X, Z, sel, variant=variant, method="active_set")
    assert abs(fast.objective - ref.objective) <= 1e-6 * ref.objective
    assert fast.certificate <= 1e-7
    # KKT: feasibility, W = sum alpha_c A_c with alpha >= 0, complementary slackness
    m = fast.margins[np.isfinite(fast.margins)]
    assert m.min() >= 1 - 1e-9
    assert np.all(fast.duals >= 0)
    assert np.all(fast.duals[fast.margins > 1 + 1e-6] == 0)
    assert fast.rank <= 12


def test_paper_2d_example_objectives():
    p = paper_2d_example()
    glob = att_svm_problem(p, np.array([0]), method="active_set")
    loc = att_svm_problem(p, np.array([1]), method="cvxpy")
    assert 0.5 * glob.objective**2 == pytest.approx(1 / (2 * 1.01), rel=1e-8)  # paper: 0.495
    assert 0.5 * loc.objective**2 == pytest.approx(0.5, rel=1e-6)  # paper: 0.5


@pytest.mark.parametrize("method", ["cvxpy", "active_set"])
def test_infeasible_raises_with_evidence(method):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((6, 5, 1))
    Z = np.ones((6, 1))
    sel = np.argsort(X[:, :, 0], axis=1)[:, 2]  # a middle token: not separable in d=1
    with pytest.raises(InfeasibleError) as err:
        att_svm(X, Z, sel, method=method)
    assert err.value.evidence["sequences"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"norm": "l1"}, "norm"),
        ({"method": "magic"}, "method"),
        ({"selection": np.array([0, 9])}, "selection"),
        ({"X": np.full((2, 3, 2), np.nan)}, "X"),
        ({"X": np.zeros((2, 3))}, "X"),
    ],
)
def test_bad_input_names_parameter(kwargs, match):
    args = {
        "X": np.eye(3)[None].repeat(2, 0)[:, :, :2],
        "Z": np.ones((2, 2)),
        "selection": np.array([0, 1]),
    }
    args.update(kwargs)
    X, Z, sel = args.pop("X"), args.pop("Z"), args.pop("selection")
    with pytest.raises((ValueError, TypeError), match=match):
        att_svm(X, Z, sel, **args)
