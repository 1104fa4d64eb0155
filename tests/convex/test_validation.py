"""Convex input checks (issue 17, point 4): named errors, ignored parameters, loss objects.

The table-driven test in tests/test_entry_points.py feeds every public convex entry point
wrong types, NaN/inf, wrong ranks, empty arrays and unknown options; here are the cases it
cannot derive from the declarations (values computed from other inputs, the twin estimators'
shared checks, the loss objects against independent implementations).
"""

import dataclasses
import warnings

import cvxpy as cp
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from attnlens.cli import app
from attnlens.cli.convex import Activation, Head, Solver
from attnlens.convex import (
    ConvexAttentionClassifier,
    NonConvexAttentionClassifier,
    build_program,
    certify,
    sample_gates,
    solve,
)
from attnlens.convex._reference import solve_cvxpy
from attnlens.convex.heads import ACTIVATIONS, HEADS
from attnlens.convex.losses import LOSSES, get_loss
from attnlens.convex.nuclear import fista
from attnlens.convex.solvers import SOLVERS
from attnlens.errors import IgnoredParameterWarning, InvalidParameterError


def _data(n=24, s=4, d=4, c=2, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % c
    X = rng.standard_normal((n, s, d))
    X[:, :, 0] += y[:, None]
    return X, y, np.eye(c)[y], rng


def _raises(param, match=None):
    """InvalidParameterError whose message starts the named-parameter format for ``param``."""
    return pytest.raises(InvalidParameterError, match=rf"\b{param} must be" + (match or ""))


@pytest.mark.parametrize("beta", [0, 0.0, -1e-3, float("nan"), float("inf")])
def test_solve_refuses_a_non_positive_or_non_finite_beta(beta):
    """beta = 0 used to end in a ZeroDivisionError inside the certificate."""
    X, _, Y, _ = _data()
    prog = build_program(X, "self_attention", "linear", 2)
    with _raises("beta"):
        solve(prog, Y, beta)
    with _raises("beta"):
        certify(prog, prog.zeros(), Y, beta, "squared")


def test_unknown_loss_is_refused_everywhere_it_can_enter():
    """An unknown loss name used to become cross-entropy silently (losses.py, _reference.py)."""
    X, y, Y, _ = _data()
    prog = build_program(X, "mlp", "linear", 2)
    for call in (lambda: solve(prog, Y, 0.1, "hinge"),
                 lambda: fista(prog, Y, 0.1, "hinge"),
                 lambda: solve_cvxpy(prog, Y, 0.1, "hinge"),
                 lambda: certify(prog, prog.zeros(), Y, 0.1, "hinge"),
                 lambda: get_loss("hinge"),
                 lambda: ConvexAttentionClassifier(loss="hinge").fit(X, y),
                 lambda: NonConvexAttentionClassifier(loss="hinge").fit(X, y)):
        with _raises("loss", ".*'hinge'"):
            call()


def test_nan_and_wrong_shapes_are_named():
    X, y, Y, rng = _data()
    prog = build_program(X, "self_attention", "linear", 2)
    Yn = Y.copy()
    Yn[3, 1] = np.nan
    with _raises("Y", "( finite)"):
        solve(prog, Yn, 0.1)
    with _raises("Y", r".*\(24, 2\).*\(25, 2\)"):  # one row too many: the program has 24
        solve(prog, np.vstack([Y, Y[:1]]), 0.1)
    Xn = X.copy()
    Xn[0, 1, 2] = np.inf
    with _raises("X"):
        build_program(Xn, "mixer", "linear", 2)
    with _raises("X", ".*3 dimensions"):
        build_program(X[:, 0], "mixer", "linear", 2)
    gates = sample_gates("mixer", 2, 4, 4, rng)
    with _raises("gates", r".*\(\*, 3, 3\).*\(2, 4, 4\)"):  # gates for s=4, tokens of s=3
        build_program(X[:, :3], "mixer", "gated_relu", 2, gates=gates)
    with _raises("gates", ".*None"):
        build_program(X, "mixer", "gated_relu", 2)
    with _raises("groups", ".*divisor"):
        build_program(X, "bfno", "linear", 2, groups=3)
    for est in (ConvexAttentionClassifier(), NonConvexAttentionClassifier(max_epochs=1)):
        with _raises("X", ".*NaN"):
            est.fit(np.where(np.arange(X.size).reshape(X.shape) == 5, np.nan, X), y)


@pytest.mark.parametrize(("kwargs", "fit", "param"), [
    ({"beta": 0.0}, {}, "beta"),
    ({"head": "lstm"}, {}, "head"),
    ({"activation": "tanh"}, {}, "activation"),
    ({"loss": "hinge"}, {}, "loss"),
    ({"random_state": -1}, {}, "random_state"),
    ({"n_groups": 0}, {}, "n_groups"),
    ({"verbose": "yes"}, {}, "verbose"),
    ({"head": "bfno", "n_groups": 3}, {}, "n_groups"),  # 3 does not divide d = 4
    ({}, {"X": "X[:, 0]"}, "X"),
    ({}, {"y": "y[:-1]"}, "y"),
    ({}, {"y": "np.zeros(len(y))"}, "y"),
    ({}, {"y": "y[:, None]"}, "y"),
])
@pytest.mark.parametrize("cls", [ConvexAttentionClassifier, NonConvexAttentionClassifier])
def test_the_twins_make_the_same_checks(cls, kwargs, fit, param):
    X, y, _, _ = _data()
    args = {"X": X, "y": y}
    args.update({k: eval(v, {"np": np}, {"X": X, "y": y}) for k, v in fit.items()})
    with _raises(param) as info:
        cls(**kwargs).fit(**args)
    assert str(info.value).startswith(f"{cls.__name__}: {param} must be")


def test_relu_with_burer_monteiro_is_refused_before_any_work():
    X, y, _, _ = _data()
    clf = ConvexAttentionClassifier(activation="relu", solver="bm", n_gates=1)
    with _raises("solver", ".*cone"):
        clf.fit(X, y)
    assert not hasattr(clf, "gates_")  # refused before the gates were drawn


def test_ignored_parameters_warn_and_defaults_do_not():
    X, y, _, rng = _data()
    with pytest.warns(IgnoredParameterWarning, match="'n_gates'=3 is ignored"):
        ConvexAttentionClassifier(activation="linear", n_gates=3, beta=0.1).fit(X, y)
    with pytest.warns(IgnoredParameterWarning, match="'n_groups'=2 is ignored"):
        NonConvexAttentionClassifier(head="mixer", n_groups=2, max_epochs=1).fit(X, y)
    with pytest.warns(IgnoredParameterWarning, match="'gates'.*is ignored"):
        build_program(X, "mlp", "linear", 2, gates=sample_gates("mlp", 2, 4, 4, rng))
    with warnings.catch_warnings():
        warnings.simplefilter("error", IgnoredParameterWarning)
        ConvexAttentionClassifier(head="bfno", n_groups=2, beta=0.1).fit(X, y)
        NonConvexAttentionClassifier(activation="gated_relu", max_epochs=1).fit(X, y)


def test_solver_chosen_by_program_type_and_results_are_frozen():
    X, _, Y, rng = _data(n=16, s=3, d=3)
    lin = solve(build_program(X, "mlp", "linear", 2), Y, 0.1, solver="fista")
    gates = sample_gates("mlp", 2, 3, 3, rng)
    relu = solve(build_program(X, "mlp", "relu", 2, gates=gates), Y, 0.1, solver="fista")
    assert lin.method == "fista" and relu.method == "relu-fista"
    assert np.isnan(lin.lower_bound) and relu.lower_bound <= relu.objective
    with pytest.raises(dataclasses.FrozenInstanceError):
        lin.objective = 0.0
    with _raises("program"):
        solve(X, Y, 0.1)


@pytest.mark.parametrize("name", list(LOSSES))
def test_loss_objects_agree_with_cvxpy_and_torch(name):
    """value == cvxpy expression == torch value; gradient == torch autograd; dual <= primal."""
    rng = np.random.default_rng(1)
    Y = np.eye(3)[rng.integers(0, 3, 7)]
    yhat = rng.standard_normal((7, 3))
    loss = get_loss(name)
    v = loss.value(yhat, Y)
    assert abs(loss.cvxpy_value(cp.Constant(yhat), Y).value - v) <= 1e-12 * max(1, abs(v))
    t = torch.tensor(yhat, requires_grad=True)
    tv = loss.torch_value(t, torch.as_tensor(Y))
    tv.backward()
    assert abs(tv.item() - v) <= 1e-12 * max(1, abs(v))
    np.testing.assert_allclose(loss.gradient(yhat, Y), t.grad.numpy(), rtol=1e-10, atol=1e-14)
    # weak duality at the dual point -t grad f(0) for t in [0, 1]: f(0) >= -f*(t grad)
    g0 = loss.gradient(np.zeros_like(yhat), Y)
    for s in (0.0, 0.3, 1.0):
        assert loss.dual_value(g0, Y, s) <= loss.value(np.zeros_like(yhat), Y) + 1e-12
    np.testing.assert_allclose(loss.proba(yhat).sum(axis=1), 1.0)


def test_cli_choices_are_enums_of_the_library_vocabulary():
    assert [h.value for h in Head] == list(HEADS)
    assert [a.value for a in Activation] == list(ACTIVATIONS)
    assert [s.value for s in Solver] == list(SOLVERS)
    result = CliRunner().invoke(app, ["convex", "fit-synthetic", "--head", "lstm"])
    assert result.exit_code == 2 and "lstm" in result.output
    result = CliRunner().invoke(app, ["convex", "fit-synthetic", "--head", "bfno", "--n", "60",
                                      "--s", "4", "--d", "4", "--classes", "2"])
    assert result.exit_code == 0, result.output
    assert "certificate" in result.output
