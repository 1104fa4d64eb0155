"""The ``attnlens`` command line: the top-level app; one module per pillar under ``attnlens.cli``.

The CLI is the top layer: it may import anything, nothing imports it.
"""

from __future__ import annotations

import logging

import typer

from attnlens import __version__
from attnlens.cli.convex import app as convex_app
from attnlens.cli.inspect import inspect as inspect_command
from attnlens.cli.kernel import app as kernel_app
from attnlens.cli.retrieval import imf as imf_command
from attnlens.cli.retrieval import rerank as rerank_command
from attnlens.cli.svm import app as svm_app
from attnlens.cli.tabular import app as tabular_app
from attnlens.cli.theory import app as theory_app
from attnlens.cli.transfer import transfer as transfer_command

app = typer.Typer(
    help="attnlens: the optimization theory of self-attention, executable.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(svm_app, name="svm", help="Att-SVM: max-margin token selection.")
app.add_typer(convex_app, name="convex", help="Attention heads as convex programs.")
app.add_typer(kernel_app, name="kernel", help="Primal-Attention and the kernel lens.")
app.add_typer(theory_app, name="theory",
              help="Theory made measurable: depth threshold, distributional projection, "
                   "time kernels on real events.")
app.add_typer(tabular_app, name="tabular", help="NPT, the lookup probe, the OT lens on tables.")
app.command(name="transfer")(transfer_command)
app.command(name="rerank")(rerank_command)
app.command(name="imf")(imf_command)
app.command(name="inspect")(inspect_command)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"attnlens {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version and exit."
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details."),
) -> None:
    """attnlens: Att-SVM solvers, convex attention heads, Primal-Attention, on real transformers."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


@app.command()
def demo(
    out: str = typer.Option("reports/demo", help="Report folder to write."),
) -> None:
    """Run the main job and print a results table (see README)."""
    from attnlens.demo import run_demo

    run_demo(out)
