"""Shared input checks. Every failure names the parameter, the value got and what to try next."""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from typing import Any

import numpy as np


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"array of shape {value.shape} and dtype {value.dtype}"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_array(
    value: Any,
    name: str,
    *,
    ndim: int | tuple[int, ...] | None = None,
    shape: tuple[int | None, ...] | None = None,
    dtype: Any = np.float64,
    allow_empty: bool = False,
    finite: bool = True,
) -> np.ndarray:
    """Convert ``value`` to an ndarray of ``dtype`` and check its rank, shape, size and finiteness.

    ``shape`` may hold ``None`` for free axes. Raises ``TypeError`` when the value is not
    numeric and ``ValueError`` for everything else.
    """
    if value is None:
        raise TypeError(f"{name} must be an array, got None.")
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # torch tensors
        value = value.detach().cpu().numpy()
    try:
        arr = np.asarray(value, dtype=dtype) if dtype is not None else np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"{name} must be numeric array-like, got {_describe(value)} ({exc})."
        ) from exc
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if arr.ndim not in allowed:
            raise ValueError(
                f"{name} must have {' or '.join(map(str, allowed))} dimensions, "
                f"got shape {arr.shape}."
            )
    if shape is not None:
        if arr.ndim != len(shape) or any(
            s is not None and s != a for s, a in zip(shape, arr.shape, strict=False)
        ):
            want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
            raise ValueError(f"{name} must have shape {want}, got {arr.shape}.")
    if not allow_empty and arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape}); pass at least one element.")
    if finite and arr.dtype.kind in "fc" and not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(
            f"{name} contains {bad} NaN or inf value(s); clean or impute the input first."
        )
    return arr


def check_option(value: Any, name: str, options: Iterable[Any]) -> Any:
    """Check that ``value`` is one of ``options``."""
    options = tuple(options)
    if value not in options:
        raise ValueError(
            f"{name} must be one of {', '.join(repr(o) for o in options)}; got {value!r}."
        )
    return value


def check_scalar(
    value: Any,
    name: str,
    *,
    kind: type | tuple[type, ...] = numbers.Real,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> Any:
    """Check a scalar's type and range (bounds optional)."""
    if isinstance(value, bool) or not isinstance(value, kind):
        raise TypeError(f"{name} must be a {getattr(kind, '__name__', kind)}, got {value!r}.")
    if isinstance(value, numbers.Real) and not np.isfinite(float(value)):
        raise ValueError(f"{name} must be finite, got {value!r}.")
    if low is not None and (value < low or (value == low and not low_inclusive)):
        op = ">=" if low_inclusive else ">"
        raise ValueError(f"{name} must be {op} {low}, got {value!r}.")
    if high is not None and (value > high or (value == high and not high_inclusive)):
        op = "<=" if high_inclusive else "<"
        raise ValueError(f"{name} must be {op} {high}, got {value!r}.")
    return value


def check_positive(value: Any, name: str, *, strict: bool = True) -> float:
    """A real number > 0 (or >= 0 when ``strict`` is False)."""
    return check_scalar(value, name, low=0.0, low_inclusive=not strict)


def check_int(value: Any, name: str, *, low: int | None = None, high: int | None = None) -> int:
    """An integer (numpy integers accepted) within optional bounds."""
    return int(check_scalar(value, name, kind=numbers.Integral, low=low, high=high))


def check_random_state(seed: Any, name: str = "random_state") -> np.random.Generator:
    """``None`` (fresh entropy), an int seed, or a ``numpy.random.Generator``."""
    if seed is None or isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
        return np.random.default_rng(seed)
    if isinstance(seed, np.random.Generator):
        return seed
    raise TypeError(f"{name} must be None, an int or a numpy Generator, got {seed!r}.")


def check_consistent_length(name_a: str, a: Any, name_b: str, b: Any) -> None:
    """Two arrays share their first axis."""
    if len(a) != len(b):
        raise ValueError(
            f"{name_a} and {name_b} must have the same length; got {len(a)} and {len(b)}."
        )
