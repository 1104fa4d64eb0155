"""``attnlens transfer``: the transfer benchmark of convex attention heads on frozen backbones."""

from __future__ import annotations

import typer

from attnlens.cli.execution import ADDRESS, BACKEND, WORKERS, backend_options
from attnlens.execution import Backend
from attnlens.transfer.heads import HEADS
from attnlens.transfer.summary import print_rows

HEAD_HELP = "Comma-separated heads, or 'all'. Known: " + ", ".join(HEADS) + "."


def _ints(text: str, name: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise typer.BadParameter(f"{name} must be comma-separated integers, got {text!r}.") from None
    if not values:
        raise typer.BadParameter(f"{name} is empty; give e.g. '0,1,2'.")
    return values


def transfer(
    backbone: str = typer.Option("minilm", help="minilm (text) or vit (images)."),
    dataset: str = typer.Option(
        "rotten_tomatoes", help="minilm: rotten_tomatoes, imdb; vit: auto, fashion_mnist, mnist, digits."
    ),
    heads: str = typer.Option("linear_full,linear,mlp,attention_linear,convex_attention_linear",
                              help=HEAD_HELP),
    seeds: str = typer.Option("0,1,2", help="Comma-separated seeds (train/val split and init)."),
    dims: str = typer.Option("32", help="Reduced feature dimensions d, e.g. '16,32,64'."),
    reduce: str = typer.Option("avgpool", help="avgpool (feature groups, as the paper) or pca."),
    n_items: int = typer.Option(0, help="Use a stratified subset of this many items (0: all)."),
    max_train: int = typer.Option(0, help="Cap the training items per seed (0: no cap)."),
    max_tokens: int = typer.Option(64, help="Text: tokens kept per item (truncation)."),
    token_grid: int = typer.Option(4, help="ViT: patch tokens pooled to a grid of this side."),
    image_size: int = typer.Option(224, help="ViT: input size in pixels (112 is 4x faster)."),
    out: str = typer.Option("runs/transfer", help="Run folder (resumed when it exists)."),
    overwrite: bool = typer.Option(False, help="Start over when the run folder's config differs."),
    cache_dir: str = typer.Option("", help="Feature cache root (default $ATTNLENS_CACHE or ~/.cache/attnlens)."),
    device: str = typer.Option(None, "--device", help="Device of the feature extraction and the "
                               "trained heads (default: cuda when a GPU is visible, else cpu)."),
    backend: Backend = BACKEND,
    address: str = ADDRESS,
    workers: int = WORKERS,
) -> None:
    """Fit heads on frozen token features; print per-head accuracy, parameters, certificates."""
    from attnlens.transfer.pipeline import run_benchmark

    names = list(HEADS) if heads.strip() == "all" else [h.strip() for h in heads.split(",") if h.strip()]
    unknown = [h for h in names if h not in HEADS]
    if unknown:
        raise typer.BadParameter(f"unknown head(s) {unknown}; {HEAD_HELP}")
    with backend_options(backend, address, workers):
        metrics = run_benchmark(
            out, backbone=backbone, dataset=dataset, heads=names, seeds=_ints(seeds, "seeds"),
            dims=_ints(dims, "dims"), reduce=reduce, n_items=n_items or None,
            max_train=max_train or None, max_tokens=max_tokens, token_grid=token_grid,
            image_size=image_size, overwrite=overwrite, cache_dir=cache_dir or None,
            device=device,
        )
    for d, part in metrics["per_d"].items():
        print_rows(part["rows"], f"{backbone} / {metrics['features']['dataset']}, d={d}")
        typer.echo(part["verdict"])
    typer.echo(f"report: {out}/report.md")
