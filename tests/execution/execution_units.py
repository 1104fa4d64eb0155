"""Unit functions for the execution tests (module level, so worker processes can load them)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

#: a local-convergence sweep of 3 units (2 seeds each), seconds long
SWEEP = ["svm", "reproduce", "local-convergence", "--seeds", "6", "--chunk", "2",
         "--steps", "300"]
TIMINGS = ("seconds_train", "seconds_svm")


def numbers(folder: Path) -> tuple[dict, dict]:
    """metrics.json and every unit, without wall-clock fields and the execution record."""
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics.pop("execution")
    for key in TIMINGS:
        metrics.pop(key)
    units = {}
    for path in sorted((folder / "units").glob("*.json")):
        unit = json.loads(path.read_text())
        for param in ("W", "KQ"):
            for key in TIMINGS:
                unit[param].pop(key)
        units[path.name] = unit
    return metrics, units


#: how long a unit waits to be killed before giving up (the test fails if it is not killed)
WAIT_TO_BE_KILLED_S = 60.0


def weighted_sum(seed: int, table: np.ndarray) -> dict:
    """A seeded draw weighted by the shared ``table`` (checks the shared object arrives whole)."""
    w = np.random.default_rng(seed).standard_normal(table.shape[0])
    return {"seed": seed, "value": float(w @ table.sum(axis=1)), "pid": os.getpid()}


def die_on_first_try(seed: int, marker_dir: str) -> dict:
    """First try: write this worker's pid to ``marker_dir/<seed>.pid`` and wait to be killed
    (by the test, from outside); a later try (the marker is there) returns at once."""
    marker = Path(marker_dir) / f"{seed}.pid"
    if not marker.exists():
        marker.write_text(str(os.getpid()))
        time.sleep(WAIT_TO_BE_KILLED_S)
        return {"seed": seed, "killed": False}
    return {"seed": seed, "killed": True}


def quick(seed: int, marker_dir: str) -> dict:
    return {"seed": seed, "killed": False}


def fails(seed: int) -> dict:
    raise ArithmeticError(f"unit {seed} fails on purpose")


def kill_when_started(marker_dir: Path, timeout: float = WAIT_TO_BE_KILLED_S) -> list[int]:
    """Wait for a unit of :func:`die_on_first_try` to write its pid, then SIGKILL that worker
    process from outside (this runs in a thread of the test). Returns the pids killed."""
    import signal

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for marker in Path(marker_dir).glob("*.pid"):
            text = marker.read_text()
            if text:
                os.kill(int(text), signal.SIGKILL)
                return [int(text)]
        time.sleep(0.05)
    return []


def start_killer(marker_dir: Path) -> tuple[object, list[int]]:
    """:func:`kill_when_started` in a daemon thread; returns (thread, the pids it killed)."""
    import threading

    killed: list[int] = []
    thread = threading.Thread(target=lambda: killed.extend(kill_when_started(marker_dir)),
                              daemon=True)
    thread.start()
    return thread, killed


def timeless(unit: dict) -> dict:
    """A stored unit without its wall-clock fields (any key naming seconds, at any depth)."""
    if isinstance(unit, dict):
        return {k: timeless(v) for k, v in unit.items() if "seconds" not in k}
    if isinstance(unit, list):
        return [timeless(v) for v in unit]
    return unit


def blas_threads(seed: int) -> dict:
    """numpy's BLAS threads and torch's threads in this unit (``Unit.threads`` pins both;
    other libraries' BLAS, e.g. SCS's single-threaded OpenBLAS, may cap lower)."""
    import torch
    from threadpoolctl import threadpool_info

    blas = [pool["num_threads"] for pool in threadpool_info()
            if pool["user_api"] == "blas" and "numpy" in pool["filepath"]]
    return {"seed": seed, "blas": blas, "torch": torch.get_num_threads()}
