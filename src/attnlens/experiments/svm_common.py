"""Shared plumbing of the ``svm`` experiments: seed chunks, resumable sweeps, figure helpers.

Experiments train many seeds at once (vectorized, :mod:`attnlens.svm.dynamics`); a sweep is
split into *units* (chunks of seeds, or one grid point), each stored in the run folder as soon
as it is finished, so an interrupted sweep resumes without redoing finished units. The units
run on the current backend of :mod:`attnlens.execution` (serial, processes or Ray), so each
unit's callable is a :func:`functools.partial` of a module-level function (picklable).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from attnlens._validation import check_int
from attnlens.report import RunFolder


def seed_chunks(seeds: int, chunk: int, first: int = 0) -> list[list[int]]:
    """Seeds ``first .. first+seeds-1`` cut into chunks of at most ``chunk``."""
    seeds = check_int(seeds, "seeds", low=1)
    chunk = check_int(chunk, "chunk", low=1)
    all_seeds = list(range(first, first + seeds))
    return [all_seeds[i : i + chunk] for i in range(0, seeds, chunk)]


def chunk_key(chunk: Sequence[int]) -> str:
    return f"seeds-{chunk[0]}-{chunk[-1]}"


def sweep(
    run: RunFolder,
    units: Sequence[tuple[str, Callable[[], dict[str, Any]]]],
    desc: str,
    progress: bool = True,
) -> dict[str, dict[str, Any]]:
    """Compute every unit not yet stored in ``run`` (saving each at once); return all units.

    Runs on the current backend (:func:`attnlens.execution.use_execution`)."""
    from attnlens.execution import Unit, run_units

    return run_units(run, [Unit(key, fn) for key, fn in units], desc=desc, progress=progress)


def concat(units: dict[str, dict[str, Any]], field: str) -> np.ndarray:
    """Concatenate one per-seed field over the units, in unit order."""
    return np.concatenate([np.asarray(u[field], dtype=np.float64) for u in units.values()])


def band(ax: Any, x: np.ndarray, curves: np.ndarray, label: str, color: str | None = None) -> None:
    """Mean curve with a 10-90 % band over seeds (rows of ``curves``)."""
    mean = np.nanmean(curves, axis=0)
    lo, hi = np.nanpercentile(curves, [10, 90], axis=0)
    (line,) = ax.plot(x, mean, label=label, color=color)
    ax.fill_between(x, lo, hi, alpha=0.2, color=line.get_color())


def summary(values: np.ndarray) -> dict[str, float]:
    """Mean, std, min, median and count of the finite values."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"mean": float("nan"), "std": float("nan"), "min": float("nan"),
                "median": float("nan"), "count": 0}
    return {"mean": float(v.mean()), "std": float(v.std()), "min": float(v.min()),
            "median": float(np.median(v)), "count": int(v.size)}
