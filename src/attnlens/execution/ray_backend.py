"""The ``ray`` backend: each unit a Ray task, the shared objects in the object store once.

``address=None`` starts a local cluster (``workers`` CPUs, no dashboard) for the sweep and
stops it afterwards; an address joins a running cluster (``ray start --head`` on the head
node, ``ray start --address=HEAD:6379`` on the others), which must have attnlens and the
unit's dependencies installed on every node. A cluster already initialized in this process
(``ray.init`` by the caller) is used as it is.

Shared objects (feature caches, corpora) are put in the object store once with ``ray.put``
and passed to every task by reference; a worker on the same node maps numpy arrays without a
copy. Results come back to the driver, which writes each unit into the run folder, so the
workers need no shared file system.

A task whose worker dies is retried by Ray (``max_retries``); after that the unit is
reported as pending. A unit that raises is not retried (the error is deterministic).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from attnlens.errors import BackendUnavailableError
from attnlens.execution.config import Execution
from attnlens.execution.unit import Outcome, Unit, execute

logger = logging.getLogger(__name__)

#: seconds to wait for a TCP connection to ``--address`` before calling it unreachable
CONNECT_TIMEOUT_S = 5.0
#: Ray's default port of the head node's GCS (``ray start --head``)
DEFAULT_GCS_PORT = 6379

INSTALL_HINT = ("install it with `pip install 'attnlens[ray]'` (or `pip install "
                "'ray>=2.40,<3'`), or pick --backend serial or --backend processes")


def import_ray() -> Any:
    """``import ray``, or a :class:`BackendUnavailableError` naming the install command."""
    try:
        import ray
    except ImportError as exc:
        raise BackendUnavailableError(
            f"the ray backend needs Ray, which is not installed ({exc}); {INSTALL_HINT}."
        ) from exc
    return ray


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Fail fast, with the fix, when nothing listens at a Ray cluster ``address``."""
    if address == "auto" or address.startswith("local"):
        return
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    host, port = parts.hostname, parts.port or DEFAULT_GCS_PORT
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return
    except (OSError, ValueError) as exc:
        raise BackendUnavailableError(
            f"no Ray cluster reachable at --address {address!r} ({host}:{port}: {exc}); start "
            f"one with `ray start --head --port={port}` on that machine and pass its "
            "address, or drop --address to run on a local cluster."
        ) from exc


def _task(fn: Any, kwargs: Mapping[str, Any], threads: int,
          **shared: Any) -> tuple[dict[str, Any], float, float]:
    return execute(fn, kwargs, shared, threads)


class RayBackend:
    """Units run as Ray tasks (``Unit.threads`` CPUs each) on a local or a running cluster."""

    name = "ray"

    def __init__(self, execution: Execution, shared: Mapping[str, Any]):
        self.execution = execution
        self.shared = dict(shared)
        self.workers = 0
        self._owned = False
        self._ray: Any = None
        self._inflight: list[Any] = []

    def __enter__(self) -> RayBackend:
        ray = self._ray = import_ray()
        address = self.execution.address
        if not ray.is_initialized():
            if address is not None:
                check_reachable(address)
            try:
                ray.init(address=address,
                         num_cpus=None if address else self.execution.workers,
                         include_dashboard=False, log_to_driver=False,
                         logging_level=logging.WARNING)
            except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
                raise BackendUnavailableError(
                    f"could not start or join a Ray cluster (address {address!r}): {exc}; "
                    "check `ray status` on the head node, pass its address with --address, "
                    "or drop --address for a local cluster."
                ) from exc
            self._owned = True
        self.workers = int(ray.cluster_resources().get("CPU", 0))
        self._refs = {name: ray.put(obj) for name, obj in self.shared.items()}
        self._remote = ray.remote(_task)
        return self

    def __exit__(self, *exc: Any) -> None:
        for ref in self._inflight:
            self._ray.cancel(ref, force=True)
        self._inflight = []
        self._refs = {}
        if self._owned:
            self._ray.shutdown()
            self._owned = False

    def run(self, todo: Sequence[Unit]) -> Iterator[Outcome]:
        ray = self._ray
        from ray.exceptions import RayError, RayTaskError

        options = {"max_retries": self.execution.max_retries, "retry_exceptions": False}
        # a task reserves its unit's threads as CPUs (at most the cluster's: never unschedulable)
        keys = {self._remote.options(num_cpus=min(u.threads, max(self.workers, 1)),
                                     **options).remote(
                    u.fn, u.kwargs, u.threads, **self._refs): u.key for u in todo}
        self._inflight = list(keys)
        while self._inflight:
            done, self._inflight = ray.wait(self._inflight, num_returns=1)
            for ref in done:
                key = keys[ref]
                try:
                    result, seconds, cpu = ray.get(ref)
                except RayTaskError as exc:  # the unit raised: not retried
                    yield Outcome(key, error=exc.as_instanceof_cause())
                except RayError as exc:  # worker or node died past retries
                    yield Outcome(key, error=exc, lost=True)
                else:
                    yield Outcome(key, result, seconds, cpu)
