"""`attnlens convex ...` commands."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False)


@app.command("fit-synthetic")
def fit_synthetic(
    head: str = typer.Option("self_attention", help="self_attention|mixer|fno|bfno|mlp"),
    activation: str = typer.Option("linear", help="linear|gated_relu|relu"),
    n: int = typer.Option(500, help="samples"),
    s: int = typer.Option(8, help="tokens per sample"),
    d: int = typer.Option(6, help="features per token"),
    classes: int = typer.Option(3, help="classes"),
    beta: float = typer.Option(1e-2, help="weight decay"),
    solver: str = typer.Option("auto", help="auto|fista|bm|cvxpy"),
    seed: int = typer.Option(0, help="random seed"),
) -> None:
    """Fit a convex head on Gaussian tokens and print objective and certificate."""
    import numpy as np

    from attnlens.convex.estimators import ConvexAttentionClassifier

    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    X = rng.standard_normal((n, s, d)) / np.sqrt(d)
    X[:, :, 0] += y[:, None] / max(classes - 1, 1)
    clf = ConvexAttentionClassifier(head=head, activation=activation, beta=beta, solver=solver,
                                    n_groups=2 if d % 2 == 0 else 1, random_state=seed,
                                    verbose=True).fit(X, y)
    typer.echo(f"objective {clf.objective_:.8g}  certificate {clf.certificate_:.2e}  "
               f"iterations {clf.n_iter_}  method {clf.result_.method}  "
               f"train accuracy {clf.score(X, y):.3f}")
    if activation == "relu":
        typer.echo(f"ReLU program: objective is attained by clf.to_network(); certified lower "
                   f"bound (gated relaxation, same gates) {clf.lower_bound_:.8g}")
