"""Att-SVM public surface, the cases of issue 2 that tests/svm/test_attsvm.py leaves out:
the infeasibility certificate itself, the 2-D example through every method, and the rest of
the bad-input list (inf, wrong shapes, empty arrays, negative/non-integer selections, ...)."""

import numpy as np
import pytest

from attnlens.errors import InfeasibleError
from attnlens.svm import att_svm, att_svm_problem, paper_2d_example


@pytest.mark.parametrize("method", ["cvxpy", "active_set"])
def test_infeasible_d1_T5_evidence_is_a_dual_ray(method):
    # d = 1, T = 5, the middle token selected: (x_a - x_t) W z >= 1 for tokens on both sides
    # of x_a is impossible. The evidence must prove it: alpha >= 0, sum alpha_c A_c = 0.
    rng = np.random.default_rng(1)
    X = rng.standard_normal((4, 5, 1))
    Z = rng.standard_normal((4, 1))
    sel = np.argsort(X[:, :, 0], axis=1)[:, 2]
    with pytest.raises(InfeasibleError) as err:
        att_svm(X, Z, sel, method=method)
    ev = err.value.evidence
    ray = ev["dual_ray"][:, 0] if ev["dual_ray"].ndim == 3 else ev["dual_ray"]  # (n, T)
    assert np.all(ray >= -1e-12) and ray.sum() > 0
    comb = sum(ray[i, t] * (X[i, sel[i]] - X[i, t]) * Z[i] for i in range(4) for t in range(5))
    assert abs(float(comb[0])) <= 1e-9 * ray.sum()
    assert set(ev["sequences"]) <= set(range(4)) and ev["sequences"]
    assert "infeasible" in str(err.value) and "locally optimal" in str(err.value)


@pytest.mark.parametrize("method", ["cvxpy", "active_set", "auto"])
def test_papers_2d_example_every_method(method):
    p = paper_2d_example()
    glob = att_svm_problem(p, np.array([0]), method=method)
    loc = att_svm_problem(p, np.array([1]), method=method)
    p_glob = glob.W @ p.Z[0]  # the paper's prompt p = W z
    assert 0.5 * p_glob @ p_glob == pytest.approx(0.495, abs=5e-4)  # paper: 0.495
    assert 0.5 * loc.objective**2 == pytest.approx(0.5, rel=1e-6)  # paper: 0.5
    assert glob.support[0].tolist() == [2] and loc.support[0].tolist() == [2]


def _args():
    return {
        "X": np.eye(3)[None].repeat(2, 0)[:, :, :2].copy(),
        "Z": np.ones((2, 2)),
        "selection": np.array([0, 1]),
    }


@pytest.mark.parametrize(
    ("change", "exc", "match"),
    [
        ({"X": "inf"}, ValueError, "X must be finite"),
        ({"Z": "nan"}, ValueError, "Z must be finite"),
        ({"Z": np.ones((2, 3))}, ValueError, r"Z must be an array of shape \(2, 2\)"),
        ({"Z": np.ones((3, 2))}, ValueError, "Z must be an array of shape"),
        ({"Z": None}, ValueError, "Z"),
        ({"X": np.zeros((0, 3, 2)), "Z": np.zeros((0, 2)), "selection": np.zeros(0, int)},
         ValueError, "X must be non-empty"),
        ({"selection": np.zeros(0, int)}, ValueError, "selection must be non-empty"),
        ({"selection": np.array([[0, 1]])}, ValueError, r"selection must be an array of shape \(2,\)"),
        ({"selection": np.array([-1, 0])}, ValueError, r"selection must be token indices in \[0, "),
        ({"selection": np.array([0.5, 1.0])}, TypeError, "selection must be integer token indices"),
        ({"selection": None}, TypeError, "selection"),
        ({"X": np.ones((2, 1, 2))}, ValueError, "at least 2 tokens"),
        ({"X": [["a"]]}, TypeError, "X must be numeric"),
        ({"variant": "diag"}, ValueError, "variant"),
        ({"tol": 0.0}, ValueError, "tol"),
        ({"max_iter": 0}, ValueError, "max_iter"),
        ({"norm": "l1"}, ValueError, "norm must be one of"),
        ({"method": "magic"}, ValueError, "method must be one of"),
    ],
)
def test_bad_input_gets_an_error_naming_the_parameter(change, exc, match):
    args = _args()
    kw = {}
    for key, val in change.items():
        if key in args:
            if isinstance(val, str):
                arr = args[key].astype(float)
                arr.flat[0] = np.inf if val == "inf" else np.nan
                val = arr
            args[key] = val
        else:
            kw[key] = val
    with pytest.raises(exc, match=match):
        att_svm(args["X"], args["Z"], args["selection"], **kw)


def test_unknown_options_report_the_value_got():
    a = _args()
    with pytest.raises(ValueError, match="'l1'"):
        att_svm(a["X"], a["Z"], a["selection"], norm="l1")
    with pytest.raises(ValueError, match=r"\[-1\]"):
        att_svm(a["X"], a["Z"], np.array([-1, 0]))
