"""``--backend``, ``--address`` and ``--workers``: the options every sweep command shares.

Each sweep command declares the three options with these defaults and runs its experiment
inside :func:`backend_options`, which makes the execution current (every sweep started
inside runs on it) and turns a backend that cannot run into a one-line error with its fix.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import typer

from attnlens.execution import Backend, Execution, use_execution

BACKEND = typer.Option(
    Backend.serial.value, "--backend", case_sensitive=False,
    help="Where the sweep's units run: serial (this process), processes (a local worker pool) "
         "or ray (a Ray cluster; see docs/scale.md). A stopped sweep resumes on any backend.")
ADDRESS = typer.Option(
    None, "--address", help="ray: a running cluster ('auto' or HEAD:6379 from `ray start "
    "--head`); default: a local cluster started for this run.")
WORKERS = typer.Option(
    None, "--workers", min=1, help="processes: pool size; ray: CPUs of the local cluster "
    "(default: all CPUs).")


@contextlib.contextmanager
def backend_options(backend: Backend | str, address: str | None,
                    workers: int | None) -> Iterator[Execution]:
    """Run the block on the chosen backend; exit 2 with the fix when it cannot run, 1 when
    units were left pending (a rerun resumes them)."""
    from attnlens.errors import BackendUnavailableError, InvalidParameterError, SweepIncompleteError

    try:
        execution = Execution(Backend(backend), address=address, workers=workers)
    except (InvalidParameterError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    try:
        if execution.backend is Backend.ray:  # fail before any work when Ray cannot run
            from attnlens.execution.ray_backend import check_reachable, import_ray

            import_ray()
            if address is not None:
                check_reachable(address)
        with use_execution(execution):
            yield execution
    except BackendUnavailableError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except SweepIncompleteError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
