"""A unit of a sweep: a key, a module-level function and its keyword arguments.

A unit is idempotent: its result depends only on its arguments (seeds included), so running
it twice, on any backend, gives the same result. The function must be importable by name
(defined at module level, or a :func:`functools.partial` of one) so that worker processes
and Ray workers can load it; objects shared by every unit (feature caches, corpora) are
passed once per worker as ``shared`` keyword arguments, never inside ``kwargs``.

Every unit runs with a fixed number of compute threads (``Unit.threads``, default
:data:`UNIT_THREADS`), set inside the unit and restored afterwards (torch's intra-op threads
and every BLAS/OpenMP pool through threadpoolctl): float reductions split over a different
number of threads round differently, so without the pin a unit's numbers would depend on the
backend (the driver's default threads on ``serial``, one per worker elsewhere).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

#: compute threads of a unit on every backend (one: the backends parallelize over units)
UNIT_THREADS = 1


@dataclass(frozen=True)
class Unit:
    """``key``: the unit's file name under ``units/``; ``fn(**kwargs, **shared)`` -> result,
    computed with ``threads`` torch/BLAS/OpenMP threads whichever backend runs it."""

    key: str
    fn: Callable[..., Mapping[str, Any]]
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    threads: int = UNIT_THREADS

    def __post_init__(self) -> None:
        from attnlens._validation import Integral, Interval, validate

        validate({"threads": [Interval(Integral, 1, None, closed="left")]},
                 {"threads": self.threads}, "Unit")


@dataclass
class Outcome:
    """What a backend hands back for one unit: its result, or the error that stopped it."""

    key: str
    result: dict[str, Any] | None = None
    seconds: float = 0.0  # inside the unit's function, on the worker (wall clock)
    cpu_seconds: float = 0.0  # CPU time of the worker process during the unit
    error: BaseException | None = None
    lost: bool = False  # the worker died (killed, node lost): the unit stays pending


@contextlib.contextmanager
def pinned_threads(threads: int) -> Iterator[None]:
    """Run the block with ``threads`` torch intra-op threads and BLAS/OpenMP threads, then
    restore the process's previous settings."""
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    try:
        with threadpool_limits(limits=threads):
            torch.set_num_threads(threads)
            yield
    finally:
        torch.set_num_threads(before)


def execute(fn: Callable[..., Mapping[str, Any]], kwargs: Mapping[str, Any],
            shared: Mapping[str, Any],
            threads: int = UNIT_THREADS) -> tuple[dict[str, Any], float, float]:
    """Run one unit's function (on whatever worker) with ``threads`` compute threads; return
    its result, its wall seconds and the worker process's CPU seconds during it."""
    with pinned_threads(threads):
        start, cpu = time.perf_counter(), time.process_time()
        result = dict(fn(**kwargs, **shared))
        return result, time.perf_counter() - start, time.process_time() - cpu
