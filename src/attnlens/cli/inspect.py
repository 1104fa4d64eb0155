"""`attnlens inspect`: every lens on a real model's attention, one report folder."""

from __future__ import annotations

from pathlib import Path

import typer


def inspect(
    model: str = typer.Option("minilm", "--model", help="'minilm', 'vit' or a local "
                              "transformers encoder folder."),
    text: list[str] = typer.Option(None, "--text", help="A sentence (repeatable)."),
    file: Path = typer.Option(None, "--file", help="A text file, one sentence per line."),
    image: list[Path] = typer.Option(None, "--image", help="An image (with --model vit)."),
    out: Path = typer.Option(Path("reports/inspect"), "--out", help="Report folder."),
    no_truncate: bool = typer.Option(False, "--no-truncate", help="Refuse texts longer than "
                                     "the model's positions instead of truncating them."),
    no_attsvm: bool = typer.Option(False, "--no-attsvm", help="Skip the Att-SVM lens."),
    no_importance: bool = typer.Option(False, "--no-importance", help="Skip head importance."),
) -> None:
    """Capture a real model's attention and write report.md, report.html and metrics.json."""
    from attnlens.errors import AttnLensError
    from attnlens.inspect import load_image, run_inspect

    texts = list(text or [])
    try:
        if file is not None:
            if not file.is_file():
                raise ValueError(f"--file {file} does not exist.")
            texts += [ln.strip() for ln in file.read_text().splitlines() if ln.strip()]
        if model == "vit":
            if not image:
                raise ValueError("--model vit needs --image PATH.")
            if texts:
                raise ValueError("--model vit reads images; drop --text/--file.")
            images = [load_image(p) for p in image]
            if len({im.shape for im in images}) > 1:
                raise ValueError("--image files must share one size; resize them first.")
            metrics = run_inspect(out, model="vit", images=images)
        else:
            if image:
                raise ValueError("--image needs --model vit.")
            if not texts:
                raise ValueError("pass --text \"...\" or --file sentences.txt (no empty text).")
            metrics = run_inspect(out, model=model, texts=texts, truncate=not no_truncate,
                                  attsvm=not no_attsvm, importance=not no_importance)
    except (AttnLensError, ValueError, ImportError) as exc:
        typer.echo(f"attnlens inspect: {exc}", err=True)
        raise typer.Exit(2) from exc
    sec = metrics["seconds"]
    typer.echo(f"{metrics['model']}: {metrics['n_inputs']} input(s), tokens {metrics['tokens']}")
    svm = metrics.get("attsvm", {}).get("summary")
    if svm:
        typer.echo(f"Att-SVM: {svm['certified']}/{svm['heads']} heads certified, "
                   f"{svm['infeasible_heads']} infeasible")
    typer.echo("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in sec.items()))
    typer.echo(f"report: {out / 'report.html'} (and report.md, metrics.json)")
