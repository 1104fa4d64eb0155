"""`attnlens svm ...` commands."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False)

from attnlens.svm.cli_reproduce import reproduce  # noqa: E402
from attnlens.svm.cli_solve import solve  # noqa: E402

app.command("reproduce")(reproduce)
app.command("solve")(solve)
