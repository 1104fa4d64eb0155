"""Run a sweep's units on the current backend, storing each result in the run folder.

The driver (this process) hands the units not yet stored to the backend and writes each
result atomically into ``run/units/<key>.json`` as soon as it comes back, so an interrupted
or partly failed sweep resumes, on any backend, without redoing finished units. Nothing a
unit did before it finished is read: a result is stored only once it is whole.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from attnlens.errors import SweepIncompleteError
from attnlens.execution.config import Backend, Execution, current_execution
from attnlens.execution.unit import Unit
from attnlens.report import RunFolder

logger = logging.getLogger(__name__)

#: a result holding this key (true) is handed back but not stored: the unit could not run
#: here for a reason that may go away (a missing optional package), so a later run retries it
NOT_STORED = "_not_stored"


def make_backend(execution: Execution, shared: Mapping[str, Any]) -> Any:
    """The backend object of ``execution`` (a context manager with ``run`` and ``workers``)."""
    if execution.backend is Backend.ray:
        from attnlens.execution.ray_backend import RayBackend

        return RayBackend(execution, shared)
    from attnlens.execution.local import ProcessBackend, SerialBackend

    return (ProcessBackend if execution.backend is Backend.processes else SerialBackend)(
        execution, shared)


def run_units(
    run: RunFolder | None,
    units: Sequence[Unit],
    *,
    desc: str,
    shared: Mapping[str, Any] | None = None,
    progress: bool = True,
    execution: Execution | None = None,
    deadline: float | None = None,
) -> dict[str, dict[str, Any]]:
    """Compute every unit not yet stored in ``run``; return the units' results, in order.

    ``shared`` objects are passed to every unit's function as keyword arguments, sent to each
    worker once. ``execution`` defaults to :func:`current_execution`. One progress bar counts
    the units finished on all workers. The backend, its workers and the timings are recorded
    in ``run`` (:meth:`RunFolder.note_execution`: ``execution.json``, metrics and report).
    ``run=None`` keeps the results in memory only. With a ``deadline`` (a
    :func:`time.monotonic` value) no unit is handed out after it and units still running
    are cancelled: the result then lacks the units that did not finish (a later call
    resumes them). A result with :data:`NOT_STORED` set is returned but not stored.

    Raises the first error of a unit (after storing every unit that finished), or
    :class:`SweepIncompleteError` when workers died and units are left pending.
    """
    execution = current_execution() if execution is None else execution
    keys = [u.key for u in units]
    if len(set(keys)) != len(keys):
        raise ValueError(f"{desc}: unit keys must be unique; got duplicates in {keys}.")
    memory: dict[str, dict[str, Any]] = {}
    todo = [u for u in units if run is None or not run.has_unit(u.key)]
    if execution.unit_threads is not None:
        todo = [dataclasses.replace(u, threads=execution.unit_threads) for u in todo]
    if deadline is not None and time.monotonic() > deadline:
        todo = []
    if len(todo) < len(units):
        logger.info("%s: resuming, %d of %d units already done", desc, len(units) - len(todo),
                    len(units))
    record: dict[str, Any] = {"backend": execution.backend.value, "address": execution.address,
                              "workers": 1, "unit_threads": execution.unit_threads,
                              "units": len(units),
                              "resumed": len(units) - len(todo), "ran": 0, "failed": 0,
                              "wall_seconds": 0.0, "startup_seconds": 0.0, "task_seconds": 0.0,
                              "task_cpu_seconds": 0.0}
    errors: dict[str, BaseException] = {}
    lost: list[str] = []
    if todo:
        from tqdm.auto import tqdm

        start = time.perf_counter()
        backend = make_backend(execution, shared or {})
        with backend, tqdm(total=len(todo), desc=desc, disable=not progress) as bar:
            record["startup_seconds"] = time.perf_counter() - start  # cluster start, ray.put
            record["workers"] = backend.workers
            bar.set_postfix_str(f"{backend.name}, {backend.workers} workers")
            outcomes = backend.run(todo)
            try:
                for outcome in outcomes:
                    if outcome.error is None:
                        result = outcome.result or {}
                        if run is None or result.get(NOT_STORED):
                            memory[outcome.key] = {k: v for k, v in result.items()
                                                   if k != NOT_STORED}
                        else:
                            run.save_unit(outcome.key, result)
                        record["ran"] += 1
                        record["task_seconds"] += outcome.seconds
                        record["task_cpu_seconds"] += outcome.cpu_seconds
                    else:
                        errors[outcome.key] = outcome.error
                        if outcome.lost:
                            lost.append(outcome.key)
                    bar.update(1)
                    if deadline is not None and time.monotonic() > deadline:
                        logger.info("%s: deadline reached, the units left run next time", desc)
                        break
            finally:
                outcomes.close()  # stops handing out units (a pool or cluster is shut down)
        record["wall_seconds"] = time.perf_counter() - start
        record["failed"] = len(errors)
    if run is not None:
        run.note_execution(record)
    where = "memory" if run is None else run.path
    if errors:
        pending = sorted(errors)
        if lost:
            raise SweepIncompleteError(
                f"{desc}: {len(pending)} of {len(units)} units did not finish on the "
                f"{execution.backend.value} backend ({len(lost)} lost with their worker: "
                f"{', '.join(lost[:5])}{', ...' if len(lost) > 5 else ''}); the others are "
                f"stored in {where}. Run the same command again to resume them.",
                pending,
            ) from errors[lost[0]]
        first = next(iter(errors.values()))
        if len(pending) > 1 and hasattr(first, "add_note"):
            first.add_note(f"{desc}: units {pending} raised; finished units are stored in "
                           f"{where}.")
        raise first
    out: dict[str, dict[str, Any]] = {}
    for key in keys:
        if key in memory:
            out[key] = memory[key]
        elif run is not None and run.has_unit(key):
            out[key] = run.load_unit(key)
    return out
