"""A unit of a sweep: a key, a module-level function and its keyword arguments.

A unit is idempotent: its result depends only on its arguments (seeds included), so running
it twice, on any backend, gives the same result. The function must be importable by name
(defined at module level, or a :func:`functools.partial` of one) so that worker processes
and Ray workers can load it; objects shared by every unit (feature caches, corpora) are
passed once per worker as ``shared`` keyword arguments, never inside ``kwargs``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Unit:
    """``key``: the unit's file name under ``units/``; ``fn(**kwargs, **shared)`` -> result."""

    key: str
    fn: Callable[..., Mapping[str, Any]]
    kwargs: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Outcome:
    """What a backend hands back for one unit: its result, or the error that stopped it."""

    key: str
    result: dict[str, Any] | None = None
    seconds: float = 0.0  # inside the unit's function, on the worker
    error: BaseException | None = None
    lost: bool = False  # the worker died (killed, node lost): the unit stays pending


def execute(fn: Callable[..., Mapping[str, Any]], kwargs: Mapping[str, Any],
            shared: Mapping[str, Any]) -> tuple[dict[str, Any], float]:
    """Run one unit's function (on whatever worker); return its result and its seconds."""
    start = time.perf_counter()
    result = dict(fn(**kwargs, **shared))
    return result, time.perf_counter() - start
