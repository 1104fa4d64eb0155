"""`attnlens rerank ...` and `attnlens imf ...`: the retrieval pillar's experiments."""

from __future__ import annotations

from typing import Any

import typer

from attnlens.cli.execution import ADDRESS, BACKEND, WORKERS, backend_options
from attnlens.execution import Backend


def _echo_table(metrics: dict[str, Any], folder: str) -> None:
    from attnlens.report import markdown_table

    typer.echo(markdown_table(metrics["table"]))
    typer.echo(f"report: {folder}/report.md")


def rerank(
    backbone: str = typer.Option("vit", "--backbone", help="vit (images), minilm (Rotten "
                                 "Tomatoes sentences) or pixels (raw pixels, no model)."),
    dataset: str = typer.Option("auto", "--dataset", help="Image set (fashion_mnist, mnist, "
                                "digits, auto) or text set (rotten_tomatoes, imdb)."),
    method: str = typer.Option("csa,kreciprocal,qe,alpha_qe,diffusion", "--method",
                               help="Comma-separated: csa, kreciprocal, qe, alpha_qe, "
                               "diffusion (no re-ranking is always included)."),
    seeds: int = typer.Option(3, "--seeds", min=1, help="Seeds 0..S-1."),
    k: int = typer.Option(100, "--k", min=1, help="Shortlist length K."),
    l: int = typer.Option(32, "--l", min=1, help="CSA anchors L."),  # noqa: E741
    epochs: int = typer.Option(10, "--epochs", min=1, help="CSA training epochs."),
    queries: int = typer.Option(1000, "--queries", min=1, help="Queries per seed."),
    out: str = typer.Option(None, "--out", help="Report folder (default runs/rerank-"
                            "<backbone>-<dataset>)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Discard a stored run with "
                                   "another config."),
    backend: Backend = BACKEND,
    address: str = ADDRESS,
    workers: int = WORKERS,
) -> None:
    """Re-rank a first-stage retrieval with CSA and the classic re-rankers; mAP, mP@10, time."""
    from attnlens.experiments import get, load

    load("retrieval")
    methods = tuple(m.strip() for m in method.split(",") if m.strip())
    folder = out or f"runs/rerank-{backbone}-{dataset}"
    try:
        with backend_options(backend, address, workers):
            metrics = get("retrieval", "rerank")(
                folder, seeds=seeds, overwrite=overwrite, backbone=backbone, dataset=dataset,
                methods=methods, k=k, l=l, epochs=epochs, n_queries=queries)
    except ValueError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from exc
    _echo_table(metrics, folder)


def imf(
    dataset: str = typer.Option("auto", "--dataset", help="Labelled image set for the "
                                "captions (fashion_mnist, mnist, digits, auto)."),
    seeds: int = typer.Option(3, "--seeds", min=1, help="Seeds 0..S-1."),
    epochs: int = typer.Option(12, "--epochs", min=1, help="Most training epochs (each model "
                               "stops once its validation ITM accuracy reaches 90 %)."),
    n_train: int = typer.Option(2000, "--train", min=1, help="Training images."),
    n_test: int = typer.Option(500, "--test", min=1, help="Held-out images."),
    out: str = typer.Option("runs/imf", "--out", help="Report folder."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Discard a stored run with "
                                   "another config."),
    backend: Backend = BACKEND,
    address: str = ADDRESS,
    workers: int = WORKERS,
) -> None:
    """Inter-modality flow per fusion layer: self-attention visual parsing vs a local encoder."""
    from attnlens.experiments import get, load

    load("retrieval")
    try:
        with backend_options(backend, address, workers):
            metrics = get("retrieval", "imf")(out, seeds=seeds, overwrite=overwrite,
                                              dataset=dataset, epochs=epochs,
                                              n_train=n_train, n_test=n_test)
    except ValueError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from exc
    _echo_table(metrics, out)
