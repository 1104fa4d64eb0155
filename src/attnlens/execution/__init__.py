"""One execution layer for every sweep and grid: ``serial``, ``processes`` or ``ray``.

A sweep is a list of :class:`Unit` (a key, a module-level function, its keyword arguments);
:func:`run_units` runs those not yet stored in the run folder on the current backend
(:func:`use_execution`, the CLI's ``--backend``/``--address``/``--workers``) and stores each
result atomically as it arrives, so any sweep resumes on any backend. Results do not depend
on the backend: a unit's result depends on its arguments only (seeds included), and every
unit computes with the same number of threads (``Unit.threads``) on every backend.

This is an application-layer package: experiments and the transfer runner use it; pillars
never do.
"""

from attnlens._validation import resolve_device  # one device rule for the whole library
from attnlens.execution.config import (
    MAX_RETRIES,
    Backend,
    Execution,
    current_execution,
    use_execution,
)
from attnlens.execution.sweep import NOT_STORED, run_units
from attnlens.execution.unit import UNIT_THREADS, Unit

__all__ = ["MAX_RETRIES", "NOT_STORED", "UNIT_THREADS", "Backend", "Execution", "Unit",
           "current_execution", "resolve_device", "run_units", "use_execution"]
