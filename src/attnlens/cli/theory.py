"""`attnlens theory ...`: the theory papers made measurable (depth threshold, projection, events)."""

from __future__ import annotations

from typing import Any

import typer

from attnlens.cli.execution import ADDRESS, BACKEND, WORKERS, backend_options
from attnlens.execution import Backend

app = typer.Typer(no_args_is_help=True, add_completion=False)

EXPERIMENTS = "depth (Levine et al. 2020), projection (Mehta 2025) or events (Xu et al. 2019)"


@app.command("threshold")
def threshold(
    width: list[int] = typer.Option(None, "--width", help="Widths to tabulate (repeatable; "
                                    "default: the common models' table)."),
) -> None:
    """Levine et al.'s depth threshold log_3(width), for given widths or common models."""
    from attnlens.lenses import depth_threshold, threshold_table
    from attnlens.report import markdown_table

    if width:
        rows = [{"width": w, "threshold log3(width)": round(depth_threshold(w), 3)}
                for w in width]
    else:
        rows = threshold_table()
    typer.echo(markdown_table(rows))


@app.command("reproduce")
def reproduce(
    name: str = typer.Argument(..., help=f"Experiment: {EXPERIMENTS}."),
    seeds: int = typer.Option(None, "--seeds", min=1, help="Number of seeds (0..S-1; default: "
                              "the experiment's)."),
    out: str = typer.Option(None, "--out", help="Run folder (default runs/theory-<NAME>)."),
    steps: int = typer.Option(None, "--steps", min=1, help="Training steps (depth, projection) "
                              "or epochs (events)."),
    quick: bool = typer.Option(False, "--quick", help="A seconds-long run (smoke test)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Discard a stored run with "
                                   "another config."),
    backend: Backend = BACKEND,
    address: str = ADDRESS,
    workers: int = WORKERS,
) -> None:
    """Reproduce a theory experiment into a resumable run folder (JSON + PNG + report.md)."""
    from attnlens.experiments import get, load
    from attnlens.report import markdown_table

    known = load("theory")
    if name not in known:
        typer.echo(f"unknown experiment {name!r}; known: {', '.join(known)}", err=True)
        raise typer.Exit(2)
    kwargs: dict[str, Any] = {"overwrite": overwrite, "quick": quick}
    if seeds is not None:
        kwargs["seeds"] = seeds
    if steps is not None:
        kwargs["epochs"] = steps
    folder = out or f"runs/theory-{name}"
    with backend_options(backend, address, workers):
        metrics = get("theory", name)(folder, **kwargs)
    if metrics.get("table"):
        typer.echo(markdown_table(metrics["table"]))
    typer.echo(f"results written to {folder}")
