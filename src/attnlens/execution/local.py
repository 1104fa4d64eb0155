"""The local backends: ``serial`` (in this process) and ``processes`` (a pool of workers).

Worker processes are started with ``spawn`` (a forked child of a process that already runs
OpenMP or torch threads can deadlock). The objects shared by every unit are pickled once per
worker, by the pool's initializer, not once per unit. Each worker gets an equal share of the
machine's threads, so ``workers`` processes do not oversubscribe the cores.

Workers die with the driver (Linux: ``PR_SET_PDEATHSIG``), so killing a sweep leaves no
orphan computing. A worker killed mid-unit breaks the pool: the finished units are already handed back, and
the units still pending run again on a fresh pool (at most ``max_retries`` times); after that
they are reported as pending and a rerun of the same command finishes them.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from attnlens.execution.config import Execution
from attnlens.execution.unit import Outcome, Unit, execute

logger = logging.getLogger(__name__)

_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


class WorkerDiedError(RuntimeError):
    """The process running a unit died (killed, out of memory) before handing back a result."""


class SerialBackend:
    """Units run in this process, in order; an error in a unit propagates at once."""

    name = "serial"
    workers = 1

    def __init__(self, execution: Execution, shared: Mapping[str, Any]):
        self.shared = dict(shared)

    def __enter__(self) -> SerialBackend:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def run(self, todo: Sequence[Unit]) -> Iterator[Outcome]:
        for unit in todo:
            result, seconds, cpu = execute(unit.fn, unit.kwargs, self.shared, unit.threads)
            yield Outcome(unit.key, result, seconds, cpu)


# ----------------------------------------------------------------------------- worker side

_SHARED: dict[str, Any] = {}


def _die_with_driver() -> None:
    """Linux: have the kernel send this worker SIGTERM when the driver process dies (killed,
    crashed), so no orphan goes on computing a unit that nobody will collect."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # no prctl here: workers end with the pool as before
        return
    if os.getppid() == 1:  # the driver died before the request was made
        os._exit(1)


def _init_worker(shared: Mapping[str, Any], threads: int) -> None:
    """Pool initializer: die with the driver, keep the shared objects, cap the threads."""
    _die_with_driver()
    for var in _THREAD_VARS:
        os.environ[var] = str(threads)
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    _SHARED.clear()
    _SHARED.update(shared)


def _work(unit: Unit) -> tuple[dict[str, Any], float, float]:
    return execute(unit.fn, unit.kwargs, _SHARED, unit.threads)


# ----------------------------------------------------------------------------- driver side


class ProcessBackend:
    """Units run on a pool of ``execution.workers`` local processes (default: the CPU count)."""

    name = "processes"

    def __init__(self, execution: Execution, shared: Mapping[str, Any]):
        self.shared = dict(shared)
        self.workers = int(execution.workers or os.cpu_count() or 1)
        self.max_retries = execution.max_retries
        self.threads = max(1, (os.cpu_count() or 1) // self.workers)

    def __enter__(self) -> ProcessBackend:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def _pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker, initargs=(self.shared, self.threads),
        )

    def run(self, todo: Sequence[Unit]) -> Iterator[Outcome]:
        pending = {u.key: u for u in todo}
        retries = 0
        while pending:
            pool = self._pool()
            try:
                futures = {pool.submit(_work, u): key for key, u in pending.items()}
                left = set(futures)
                while left:
                    done, left = wait(left, return_when=FIRST_COMPLETED)
                    for fut in done:
                        key = futures[fut]
                        try:
                            result, seconds, cpu = fut.result()
                        except BrokenProcessPool:
                            continue  # stays pending: runs again on a fresh pool
                        except Exception as exc:  # the unit itself raised
                            del pending[key]
                            yield Outcome(key, error=exc)
                            continue
                        del pending[key]
                        yield Outcome(key, result, seconds, cpu)
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
            if pending:
                if retries >= self.max_retries:
                    for key in list(pending):
                        yield Outcome(key, error=WorkerDiedError(
                            f"a worker process died while running unit {key!r} or a unit "
                            f"beside it ({retries} retries spent)"), lost=True)
                    return
                retries += 1
                logger.warning("a worker process died; %d unit(s) run again on a fresh pool "
                               "(retry %d of %d)", len(pending), retries, self.max_retries)
