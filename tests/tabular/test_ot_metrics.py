"""OT metrics against independent paths: the Kantorovich LP solved by scipy's HiGHS, a 1-D
closed form (sorted matching), and a Monge gap worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import linprog

from attnlens.errors import InvalidParameterError
from attnlens.tabular.ot_metrics import ot_metrics, path_efficiency


def _lp_wasserstein(C: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """min <C, P> s.t. P 1 = a, P^T 1 = b, P >= 0, as a plain LP (HiGHS)."""
    n, m = C.shape
    A_eq = np.vstack([np.kron(np.eye(n), np.ones(m)), np.kron(np.ones(n), np.eye(m))])
    res = linprog(C.ravel(), A_eq=A_eq, b_eq=np.concatenate([a, b]), bounds=(0, None),
                  method="highs")
    assert res.status == 0
    return float(res.fun)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_wasserstein_of_an_attention_coupling_equals_the_lp(seed):
    rng = np.random.default_rng(seed)
    X, Y = rng.normal(size=(7, 3)), rng.normal(size=(5, 3)) + 1.0
    logits = rng.normal(size=(7, 5))
    A = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)  # row-stochastic attention
    P = A / 7
    m = ot_metrics(X, Y, P)
    C = ((X[:, None, :] - Y[None, :, :]) ** 2).sum(-1)
    W = _lp_wasserstein(C, P.sum(1), P.sum(0))
    assert m.wasserstein == pytest.approx(W, rel=1e-7, abs=1e-9)
    assert m.transport_cost == pytest.approx(float((C * P).sum()), rel=1e-12)
    assert m.monge_gap == pytest.approx(m.transport_cost - W, rel=1e-6, abs=1e-9)
    assert m.monge_gap > 0  # a softmax coupling is dense, hence not an extreme optimal plan here
    assert 0 < m.optimality < 1


def test_one_dimensional_closed_form_and_a_hand_computed_monge_gap():
    # 1-D, uniform weights: the optimal map matches sorted points; W_2^2 = mean (x_(i) - y_(i))^2.
    x = np.array([[0.0], [1.0], [3.0]])
    y = np.array([[4.0], [0.5], [2.0]])
    # the map x_i -> y_i: costs (0-4)^2 + (1-0.5)^2 + (3-2)^2 = 16 + 0.25 + 1 = 17.25, /3
    # sorted matching: (0,0.5), (1,2), (3,4): 0.25 + 1 + 1 = 2.25, /3
    m = ot_metrics(x, y)
    assert m.transport_cost == pytest.approx(17.25 / 3)
    assert m.wasserstein == pytest.approx(2.25 / 3)
    assert m.monge_gap == pytest.approx(15.0 / 3)
    assert m.optimality == pytest.approx(2.25 / 17.25)
    # the map shares no pair with the optimal permutation
    assert m.efficiency == pytest.approx(0.0)
    # permuting the targets into sorted order makes the map optimal
    opt = ot_metrics(x, y[[1, 2, 0]])
    assert opt.monge_gap == pytest.approx(0.0, abs=1e-12)
    assert opt.optimality == pytest.approx(1.0) and opt.efficiency == pytest.approx(1.0)


def test_euclidean_metric_against_the_lp():
    rng = np.random.default_rng(3)
    X, Y = rng.normal(size=(6, 2)), rng.normal(size=(6, 2))
    m = ot_metrics(X, Y, metric="euclidean")
    C = np.sqrt(((X[:, None] - Y[None]) ** 2).sum(-1))
    assert m.wasserstein == pytest.approx(_lp_wasserstein(C, np.full(6, 1 / 6), np.full(6, 1 / 6)),
                                          rel=1e-7)


def test_path_efficiency_straight_and_detour():
    base = np.array([[0.0, 0.0], [1.0, 0.0]])
    straight = [base, base + [1.0, 0.0], base + [2.0, 0.0]]
    assert path_efficiency(straight) == pytest.approx(1.0)
    detour = [base, base + [1.0, 1.0], base + [2.0, 0.0]]  # W_1 legs sqrt2 each, direct 2
    assert path_efficiency(detour) == pytest.approx(2.0 / (2 * np.sqrt(2.0)))


def test_bad_couplings_are_named():
    X = np.zeros((3, 2))
    with pytest.raises(InvalidParameterError, match="coupling"):
        ot_metrics(X, X, np.ones((3, 3)))  # mass 9
    with pytest.raises(InvalidParameterError, match="coupling"):
        ot_metrics(X, np.zeros((4, 2)))  # no coupling for n != m
    with pytest.raises(InvalidParameterError, match="target"):
        ot_metrics(X, np.zeros((3, 5)), np.eye(3) / 3)
