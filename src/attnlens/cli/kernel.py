"""`attnlens kernel ...` commands."""

from __future__ import annotations

from typing import Any

import typer

from attnlens.cli.execution import ADDRESS, BACKEND, WORKERS, backend_options
from attnlens.execution import Backend

app = typer.Typer(no_args_is_help=True, add_completion=False)


@app.command("reproduce")
def reproduce(
    name: str = typer.Argument(..., help="Experiment: uea, spectrum or time-kernels."),
    seeds: int = typer.Option(5, "--seeds", min=1, help="Number of seeds (0..S-1)."),
    out: str = typer.Option(None, "--out", help="Run folder (default runs/kernel-<NAME>)."),
    epochs: int = typer.Option(None, "--epochs", min=1, help="Training epochs (default: the "
                               "experiment's)."),
    dataset: list[str] = typer.Option(None, "--dataset", help="uea: datasets (repeatable; "
                                      "default JapaneseVowels and BasicMotions)."),
    reverse: bool = typer.Option(False, "--reverse", help="uea: walk the units backwards, so "
                                 "a second process on the same folder shares the sweep."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Discard a stored run with "
                                   "another config."),
    paper_size: bool = typer.Option(False, "--paper-size", help="uea: the official scripts' "
                                    "backbone (d_model 512, FF 2048, 8 heads, 2 layers)."),
    backend: Backend = BACKEND,
    address: str = ADDRESS,
    workers: int = WORKERS,
) -> None:
    """Reproduce a Primal-Attention / kernel-lens experiment into a resumable run folder."""
    from attnlens.experiments import get, load
    from attnlens.report import markdown_table

    known = load("kernel")
    if name not in known:
        typer.echo(f"unknown experiment {name!r}; known: {', '.join(known)}", err=True)
        raise typer.Exit(2)
    kwargs: dict[str, Any] = {"seeds": seeds, "overwrite": overwrite}
    if epochs is not None:
        kwargs["epochs"] = epochs
    if dataset:
        if name != "uea":
            typer.echo("--dataset applies to the uea experiment only.", err=True)
            raise typer.Exit(2)
        kwargs["datasets"] = tuple(dataset)
    if reverse:
        if name != "uea":
            typer.echo("--reverse applies to the uea experiment only.", err=True)
            raise typer.Exit(2)
        kwargs["reverse"] = True
    if paper_size:
        if name != "uea":
            typer.echo("--paper-size applies to the uea experiment only.", err=True)
            raise typer.Exit(2)
        from attnlens.experiments.kernel_uea import PAPER_SIZE

        kwargs.update(PAPER_SIZE)
    folder = out or f"runs/kernel-{name}"
    with backend_options(backend, address, workers):
        metrics = get("kernel", name)(folder, **kwargs)
    table = metrics.get("table")
    if table:
        typer.echo(markdown_table(table))
    typer.echo(f"results written to {folder}")
