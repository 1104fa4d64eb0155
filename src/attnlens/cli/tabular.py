"""`attnlens tabular ...` commands: fit NPT / the OT classifier on a bundled table, the lookup
probe, the OT lens trajectory."""

from __future__ import annotations

import json

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False)

MODELS = ("npt", "ot-dummy", "transformer")


@app.command("fit")
def fit(
    dataset: str = typer.Argument("breast_cancer", help="breast_cancer, wine, digits, iris, "
                                  "diabetes or penguins."),
    model: str = typer.Option("npt", "--model", help="npt, ot-dummy or transformer."),
    seed: int = typer.Option(0, "--seed", min=0, help="Split and model seed."),
    test_size: float = typer.Option(0.2, "--test-size", min=0.05, max=0.9),
    steps: int = typer.Option(None, "--steps", min=1, help="NPT optimizer steps (default 300)."),
) -> None:
    """Fit one model on a stratified split of a bundled table and print its test score."""
    from sklearn.model_selection import train_test_split

    from attnlens.datasets.tabular import load_tabular
    from attnlens.tabular import (
        NPTClassifier,
        NPTRegressor,
        OTDummyClassifier,
        TabularTransformerClassifier,
    )

    if model not in MODELS:
        typer.echo(f"unknown model {model!r}; known: {', '.join(MODELS)}", err=True)
        raise typer.Exit(2)
    data = load_tabular(dataset)
    regression = data.task == "regression"
    if regression and model != "npt":
        typer.echo(f"{model} is a classifier; {dataset} is a regression set.", err=True)
        raise typer.Exit(2)
    Xtr, Xte, ytr, yte = train_test_split(data.X, data.y, test_size=test_size, random_state=seed,
                                          stratify=None if regression else data.y)
    if model == "npt":
        kw = {"random_state": seed, "categorical_features": list(data.categorical),
              "verbose": True}
        if steps:
            kw["n_steps"] = steps
        est = NPTRegressor(**kw) if regression else NPTClassifier(**kw)
    elif model == "ot-dummy":
        est = OTDummyClassifier(random_state=seed)
    else:
        est = TabularTransformerClassifier(random_state=seed)
    est.fit(Xtr, ytr)
    metric = "R^2" if regression else "accuracy"
    typer.echo(json.dumps({"dataset": dataset, "model": model, "seed": seed,
                           metric: round(float(est.score(Xte, yte)), 4)}))


@app.command("lookup")
def lookup(seed: int = typer.Option(0, "--seed", min=0)) -> None:
    """Run the cross-datapoint lookup probe on breast-cancer rows and print the accuracies."""
    from attnlens.datasets.tabular import load_tabular
    from attnlens.tabular import lookup_probe, make_lookup_table
    from attnlens.tabular.lookup import PROBE_NPT, PROBE_TABLE, LookupNPTClassifier

    data = load_tabular("breast_cancer")
    table = make_lookup_table(data.X[:, : PROBE_TABLE["n_features"]],
                              n_pairs=PROBE_TABLE["n_pairs"], n_query=PROBE_TABLE["n_query"],
                              random_state=seed)
    res = lookup_probe(table, LookupNPTClassifier(random_state=seed, **PROBE_NPT),
                       random_state=seed)
    typer.echo(json.dumps(res.as_dict(), indent=2))
