"""``attnlens svm reproduce NAME --seeds S --out DIR``: run one reproduced experiment."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

import typer


def load_experiments() -> list[str]:
    """Import every ``attnlens.experiments.svm_*`` module (registering it); return the names."""
    import attnlens.experiments as pkg
    from attnlens.experiments import names

    for mod in pkgutil.iter_modules(pkg.__path__):
        if mod.name.startswith("svm_") and mod.name != "svm_common":
            importlib.import_module(f"{pkg.__name__}.{mod.name}")
    return names("svm")


def reproduce(
    name: str = typer.Argument(..., help="Experiment name (see `--list`)."),
    seeds: int = typer.Option(100, "--seeds", min=1, help="Number of seeds (0..S-1)."),
    out: str = typer.Option(None, "--out", help="Run folder (default runs/<NAME>)."),
    steps: int = typer.Option(None, "--steps", min=1, help="Training steps (experiment default)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Discard a stored run with "
                                   "another config."),
) -> None:
    """Reproduce an Att-SVM dynamics experiment; writes config.json, metrics.json and PNGs and
    resumes an interrupted sweep in the same folder."""
    from attnlens.experiments import get
    from attnlens.report import markdown_table

    known = load_experiments()
    if name not in known:
        typer.echo(f"unknown experiment {name!r}; known: {', '.join(known)}", err=True)
        raise typer.Exit(2)
    kwargs: dict[str, Any] = {"seeds": seeds, "overwrite": overwrite}
    if steps is not None:
        kwargs["steps"] = steps
    folder = out or f"runs/{name}"
    try:
        metrics = get("svm", name)(folder, **kwargs)
    except TypeError as exc:
        if "steps" in str(exc):
            typer.echo(f"experiment {name!r} does not take --steps; drop it.", err=True)
            raise typer.Exit(2) from exc
        raise
    rows = [{"metric": k, "value": v} for k, v in _flatten(metrics)]
    typer.echo(markdown_table(rows))
    typer.echo(f"results written to {folder}")


def _flatten(metrics: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Scalar leaves of nested metrics (means only for summaries; lists and paper values
    are left to metrics.json)."""
    out: list[tuple[str, Any]] = []
    for key, val in metrics.items():
        name = f"{prefix}{key}"
        if key == "paper" or isinstance(val, list):
            continue
        if isinstance(val, dict):
            if "mean" in val:
                out.append((f"{name}.mean", val["mean"]))
            else:
                out.extend(_flatten(val, f"{name}."))
        elif isinstance(val, int | float):
            out.append((name, val))
    return out
