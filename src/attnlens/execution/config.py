"""Which backend runs a sweep's units: ``serial``, ``processes`` or ``ray``.

An :class:`Execution` is chosen once (the CLI's ``--backend``, ``--address``, ``--workers``)
and made current for a block with :func:`use_execution`; every sweep started inside the block
(:func:`attnlens.execution.run_units`) runs on it, so experiments need no extra argument::

    with use_execution(Execution("ray", address="auto")):
        experiments.get("svm", "local-convergence")("runs/lc", seeds=100)

The backend is not part of a run folder's identity (``config.json``): a sweep started on one
backend resumes on any other.
"""

from __future__ import annotations

import contextlib
import contextvars
import enum
from collections.abc import Iterator
from dataclasses import dataclass

from attnlens._validation import Integral, Interval, Options, validate


class Backend(str, enum.Enum):
    """``--backend``: where the units of a sweep run."""

    serial = "serial"  # in this process, one unit after the other
    processes = "processes"  # a pool of local worker processes
    ray = "ray"  # tasks on a Ray cluster (a local one unless ``address`` is given)


#: retries of a unit whose worker died (a process killed, a node lost) before it is left pending
MAX_RETRIES = 1


@dataclass(frozen=True)
class Execution:
    """How to run the units of a sweep.

    backend : ``"serial"``, ``"processes"`` or ``"ray"`` (:class:`Backend`).
    address : Ray only: a running cluster (``"auto"``, ``"host:6379"`` or ``"ray://host:10001"``);
        ``None`` starts a local cluster for the sweep and stops it afterwards.
    workers : processes: pool size (default: the CPU count); Ray: CPUs of the local cluster
        it starts (default: the CPU count; a running cluster keeps its own size).
    max_retries : how often a unit whose worker died is run again before it is left pending
        (a rerun of the same command then finishes it).
    unit_threads : compute threads of every unit (None: each unit's own, one by default).
        More threads speed up one long unit (a serial run of a d = 64 convex fit on a
        2-core machine), but its float reductions then split differently: its numbers may
        differ in the last bits from the one-thread units of the other backends.
    """

    backend: Backend | str = Backend.serial
    address: str | None = None
    workers: int | None = None
    max_retries: int = MAX_RETRIES
    unit_threads: int | None = None

    _parameter_constraints = {
        "backend": [Options(Backend)],
        "address": [None, str],
        "workers": [None, Interval(Integral, 1, None, closed="left")],
        "max_retries": [Interval(Integral, 0, None, closed="left")],
        "unit_threads": [None, Interval(Integral, 1, None, closed="left")],
    }

    def __post_init__(self) -> None:
        validate(self._parameter_constraints, vars(self), "Execution")
        object.__setattr__(self, "backend", Backend(self.backend))
        if self.address is not None and self.backend is not Backend.ray:
            from attnlens._validation import raise_invalid

            raise_invalid("address", "None unless backend='ray'", self.address,
                          "--address names a Ray cluster; add --backend ray or drop --address.",
                          caller="Execution")


_CURRENT: contextvars.ContextVar[Execution | None] = contextvars.ContextVar(
    "attnlens_execution", default=None)


def current_execution() -> Execution:
    """The execution sweeps use now (serial unless inside :func:`use_execution`)."""
    return _CURRENT.get() or Execution()


@contextlib.contextmanager
def use_execution(execution: Execution) -> Iterator[Execution]:
    """Run every sweep started inside the block on ``execution``."""
    if not isinstance(execution, Execution):
        from attnlens._validation import raise_invalid

        raise_invalid("execution", "an attnlens.execution.Execution", execution,
                      "Build one with Execution(backend='ray', address=...).",
                      caller="use_execution")
    token = _CURRENT.set(execution)
    try:
        yield execution
    finally:
        _CURRENT.reset(token)
