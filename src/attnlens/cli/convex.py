"""`attnlens convex ...` commands."""

from __future__ import annotations

from enum import Enum

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False)


class Head(str, Enum):
    """The heads of :mod:`attnlens.convex` (``attnlens.convex.heads.HEADS``)."""

    self_attention = "self_attention"
    mixer = "mixer"
    fno = "fno"
    bfno = "bfno"
    mlp = "mlp"


class Activation(str, Enum):
    """``attnlens.convex.heads.ACTIVATIONS``."""

    linear = "linear"
    gated_relu = "gated_relu"
    relu = "relu"


class Solver(str, Enum):
    """``attnlens.convex.solvers.SOLVERS`` (a ReLU head refuses ``bm``)."""

    auto = "auto"
    fista = "fista"
    bm = "bm"
    ssnal = "ssnal"
    cvxpy = "cvxpy"


@app.command("fit-synthetic")
def fit_synthetic(
    head: Head = typer.Option(Head.self_attention, help="the head"),
    activation: Activation = typer.Option(Activation.linear, help="the activation"),
    n: int = typer.Option(500, help="samples"),
    s: int = typer.Option(8, help="tokens per sample"),
    d: int = typer.Option(6, help="features per token"),
    classes: int = typer.Option(3, help="classes"),
    beta: float = typer.Option(1e-2, help="weight decay"),
    solver: Solver = typer.Option(Solver.auto, help="the solver"),
    seed: int = typer.Option(0, help="random seed"),
    bracket_tol: float = typer.Option(None, help="ReLU only: tighten the bracket to this "
                                      "relative width (column generation + cone-aware bound)"),
    bracket_rounds: int = typer.Option(10, help="ReLU only: round budget of --bracket-tol"),
) -> None:
    """Fit a convex head on Gaussian tokens and print objective and certificate."""
    import numpy as np

    from attnlens.convex.estimators import ConvexAttentionClassifier

    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    X = rng.standard_normal((n, s, d)) / np.sqrt(d)
    X[:, :, 0] += y[:, None] / max(classes - 1, 1)
    groups = {"n_groups": 2 if d % 2 == 0 else 1} if head is Head.bfno else {}
    clf = ConvexAttentionClassifier(head=head.value, activation=activation.value, beta=beta,
                                    solver=solver.value, random_state=seed, verbose=True,
                                    bracket_tol=bracket_tol, bracket_rounds=bracket_rounds,
                                    **groups).fit(X, y)
    typer.echo(f"objective {clf.objective_:.8g}  certificate {clf.certificate_:.2e}  "
               f"iterations {clf.n_iter_}  method {clf.result_.method}  "
               f"train accuracy {clf.score(X, y):.3f}")
    if activation is Activation.relu:
        source = ("gated relaxation" if clf.bracket_ is None
                  else "gated relaxation or cone-aware bound, refined")
        typer.echo(f"ReLU program: objective is attained by clf.to_network(); certified lower "
                   f"bound ({source}, same gates) {clf.lower_bound_:.8g}; relative width "
                   f"{(clf.objective_ - clf.lower_bound_) / clf.objective_:.2e}")
        if clf.bracket_ is not None:
            b = clf.bracket_
            typer.echo(f"bracket: {b.initial_width:.2e} -> {b.width:.2e} in {b.rounds} rounds "
                       f"({b.status})")
