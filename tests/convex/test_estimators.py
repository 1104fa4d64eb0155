"""Estimators: recovery, global optimality vs the non-convex trainer, bad input."""

import numpy as np
import pytest
import torch

from attnlens.convex import ConvexAttentionClassifier, NonConvexAttentionClassifier
from attnlens.errors import NotFittedError


def _data(n=60, s=4, d=3, c=2, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    X = rng.standard_normal((n, s, d))
    X[:, :, 0] += y[:, None]
    return X, y


@pytest.mark.parametrize("head,activation", [("self_attention", "linear"),
                                             ("self_attention", "gated_relu"),
                                             ("mixer", "linear"), ("fno", "gated_relu"),
                                             ("mlp", "gated_relu")])
def test_recovered_network_attains_convex_optimum(head, activation):
    X, y = _data()
    gates = {"n_gates": 2} if activation != "linear" else {}
    clf = ConvexAttentionClassifier(head=head, activation=activation, beta=0.05, **gates,
                                    tol=1e-8, max_iter=20000, random_state=0).fit(X, y)
    net = clf.to_network()
    Xt = torch.as_tensor(X)
    with torch.no_grad():
        out = net(Xt).numpy()
        pen = float(net.penalty())
    np.testing.assert_allclose(out, clf.decision_function(X), rtol=1e-7, atol=1e-9)
    Y = np.eye(2)[y]
    obj = 0.5 * np.sum((out - Y) ** 2) / len(y) + 0.05 * pen
    assert abs(obj - clf.objective_) <= 1e-7 * clf.objective_
    assert clf.certificate_ <= 1e-8
    assert clf.score(X, y) > 0.5


@pytest.mark.parametrize("loss", ["squared", "cross_entropy"])
def test_convex_optimum_below_nonconvex_training(loss):
    X, y = _data(n=50)
    beta = 0.05
    cvx = ConvexAttentionClassifier(beta=beta, loss=loss, tol=1e-8, max_iter=20000).fit(X, y)
    for seed in range(4):
        nc = NonConvexAttentionClassifier(beta=beta, loss=loss, n_heads=4, lr=0.02,
                                          max_epochs=150, random_state=seed).fit(X, y)
        assert nc.objective_ >= cvx.objective_ * (1 - 1e-6)
    # training gets close: the bound is tight, not vacuous
    assert nc.objective_ <= 1.5 * cvx.objective_


def test_gated_nonconvex_above_convex_with_same_gates():
    X, y = _data(n=50)
    nc = NonConvexAttentionClassifier(head="mlp", activation="gated_relu", beta=0.05,
                                      n_heads=3, max_epochs=100, random_state=0).fit(X, y)
    cvx = ConvexAttentionClassifier(head="mlp", activation="gated_relu", beta=0.05,
                                    tol=1e-8, max_iter=20000)
    cvx.classes_ = np.array([0, 1])
    # same gates as the trained network: the convex program on them lower-bounds it
    from attnlens.convex.programs import build_program
    from attnlens.convex.solvers import solve

    gates = nc.network_.gates.numpy()
    prog = build_program(X, "mlp", "gated_relu", 2, gates=gates)
    res = solve(prog, np.eye(2)[y], 0.05, "squared", tol=1e-8, max_iter=20000)
    assert nc.objective_ >= res.objective * (1 - 1e-6)


@pytest.mark.parametrize("head", ["self_attention", "mixer", "fno"])
def test_same_random_state_gives_the_convex_twin_its_gates(head):
    X, y = _data(n=50)
    cvx = ConvexAttentionClassifier(head=head, activation="gated_relu", beta=0.05, n_gates=3,
                                    tol=1e-8, max_iter=20000, random_state=7).fit(X, y)
    nc = NonConvexAttentionClassifier(head=head, activation="gated_relu", beta=0.05,
                                      n_heads=3, max_epochs=60, random_state=7).fit(X, y)
    np.testing.assert_array_equal(nc.network_.gates.numpy(), cvx.gates_)
    assert nc.objective_ >= cvx.objective_ * (1 - 1e-6)


@pytest.mark.parametrize("kwargs,match", [({"beta": 0.0}, "beta"), ({"beta": -1.0}, "beta"),
                                          ({"head": "lstm"}, "head"),
                                          ({"solver": "adam"}, "solver"),
                                          ({"activation": "tanh"}, "activation"),
                                          ({"loss": "hinge"}, "loss")])
def test_bad_parameters(kwargs, match):
    X, y = _data()
    with pytest.raises(ValueError, match=match):
        ConvexAttentionClassifier(**kwargs).fit(X, y)


def test_bad_data():
    X, y = _data()
    with pytest.raises(ValueError, match="3 dimensions"):
        ConvexAttentionClassifier().fit(X[:, 0], y)
    Xn = X.copy()
    Xn[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        ConvexAttentionClassifier().fit(Xn, y)
    with pytest.raises(ValueError, match="single class"):
        ConvexAttentionClassifier().fit(X, np.zeros(len(y)))
    with pytest.raises(ValueError, match="must be as long as"):
        ConvexAttentionClassifier().fit(X, y[:-1])
    with pytest.raises(NotFittedError):
        ConvexAttentionClassifier().predict(X)
    clf = ConvexAttentionClassifier(beta=0.1).fit(X, y)
    with pytest.raises(ValueError, match="features per token"):
        clf.predict(X[:, :, :2])
    proba = clf.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)


def test_dense_features_over_the_memory_budget_are_refused(monkeypatch):
    """A gated head whose dense features exceed the budget is refused with the sizes and the
    alternatives, before anything large is allocated; gated self-attention (matrix-free, issue
    16.2) and linear heads still fit under that budget."""
    import attnlens.convex.operators as operators

    assert operators.dense_budget() >= operators.MAX_DENSE_ENTRIES
    X, y = _data()
    n, s, d = X.shape
    budget = n * s * s * d  # one mixer gate; below the n m d^3 of two dense attention gates
    assert n * 2 * d**3 > budget
    monkeypatch.setattr(operators, "dense_budget", lambda: budget)
    with pytest.raises(MemoryError, match=rf"{2 * budget:,} float64 entries.*activation='linear'"):
        ConvexAttentionClassifier(head="mixer", activation="gated_relu", n_gates=2).fit(X, y)
    ConvexAttentionClassifier(head="mixer", activation="gated_relu", n_gates=1).fit(X, y)
    ConvexAttentionClassifier(activation="gated_relu", n_gates=2).fit(X, y)  # matrix-free
    ConvexAttentionClassifier(activation="linear").fit(X, y)
