"""Input checks, declared as data.

Every public function and estimator of attnlens declares the constraints of its parameters, in
the style of scikit-learn's ``_parameter_constraints``::

    @validate_params({
        "beta": [Interval(Real, 0, None, closed="neither")],
        "loss": [Options("squared", "cross_entropy")],
        "X": [Array(ndim=3)],
        "seed": [None, Interval(Integral, 0, None)],
    })
    def solve(X, beta, loss="squared", seed=None): ...

A parameter is valid when it satisfies any constraint of its list (``None`` in the list admits
``None``). Every failure raises :class:`attnlens.errors.InvalidParameterError` (a ``ValueError``
and a ``TypeError``) with one message format::

    <caller>: <name> must be <what is allowed>; got <value>. <what to try>

Estimators declare ``_parameter_constraints`` as a class attribute and call
``self._check_params()`` (from :class:`ParamsValidatedMixin`) at the top of ``fit``.
A parameter that has no effect in the chosen mode warns through :func:`warn_ignored`.

The ``check_*`` helpers below are the imperative forms for values computed inside a function
(they raise the same error with the same format).
"""

from __future__ import annotations

import enum
import functools
import inspect
import numbers
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NoReturn

import numpy as np

from attnlens.errors import IgnoredParameterWarning, InvalidParameterError

Real = numbers.Real
Integral = numbers.Integral


def describe(value: Any) -> str:
    """A short description of a value for error messages."""
    if isinstance(value, np.ndarray):
        return f"array of shape {value.shape} and dtype {value.dtype}"
    if hasattr(value, "shape") and hasattr(value, "dtype"):  # torch tensors and friends
        return f"{type(value).__name__} of shape {tuple(value.shape)} and dtype {value.dtype}"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def raise_invalid(name: str, must: str, value: Any, hint: str = "", caller: str = "") -> NoReturn:
    """Raise :class:`InvalidParameterError` in the one message format.

    ``"{caller}: {name} must be {must}; got {value}. {hint}"``, for checks no constraint expresses.
    """
    prefix = f"{caller}: " if caller else ""
    got = value if isinstance(value, str) and value.startswith("got ") else f"got {describe(value)}"
    text = f"{prefix}{name} must be {must}; {got}."
    if hint:
        text += f" {hint}"
    raise InvalidParameterError(text)



# ----------------------------------------------------------------------------- constraints


class Constraint:
    """One admissible form of a parameter: ``satisfied(value)``, a description and a hint."""

    hint: str = ""

    def satisfied(self, value: Any) -> bool:  # pragma: no cover - interface
        raise NotImplementedError

    def __str__(self) -> str:  # pragma: no cover - interface
        raise NotImplementedError


class Interval(Constraint):
    """A number of ``kind`` (``Integral`` or ``Real``) in an interval; bounds may be ``None``.

    ``closed`` is one of "both", "left", "right", "neither". Booleans are never numbers here,
    and a ``Real`` interval refuses NaN and inf.
    """

    def __init__(
        self, kind: type, low: float | None, high: float | None, *, closed: str = "both"
    ) -> None:
        if closed not in ("both", "left", "right", "neither"):
            raise ValueError(f"closed must be both, left, right or neither; got {closed!r}")
        self.kind, self.low, self.high, self.closed = kind, low, high, closed

    def _type_ok(self, value: Any) -> bool:
        return isinstance(value, self.kind) and not isinstance(value, bool)

    def satisfied(self, value: Any) -> bool:
        if not self._type_ok(value):
            return False
        if not np.isfinite(float(value)):
            return False
        left = self.closed in ("both", "left")
        right = self.closed in ("both", "right")
        if self.low is not None and (value < self.low or (value == self.low and not left)):
            return False
        if self.high is not None and (value > self.high or (value == self.high and not right)):
            return False
        return True

    def __str__(self) -> str:
        kind = "an int" if self.kind is Integral else "a finite number"
        if self.low is None and self.high is None:
            return kind
        if self.high is None:
            return f"{kind} {'>=' if self.closed in ('both', 'left') else '>'} {self.low!r}"
        if self.low is None:
            return f"{kind} {'<=' if self.closed in ('both', 'right') else '<'} {self.high!r}"
        lo, hi = repr(self.low), repr(self.high)
        lb = "[" if self.closed in ("both", "left") and self.low is not None else "("
        rb = "]" if self.closed in ("both", "right") and self.high is not None else ")"
        return f"{kind} in {lb}{lo}, {hi}{rb}"


class Options(Constraint):
    """One of a closed set of values (strings or Enum members; an Enum's value is accepted)."""

    def __init__(self, *values: Any) -> None:
        if len(values) == 1 and isinstance(values[0], type) and issubclass(values[0], enum.Enum):
            values = tuple(values[0])
        self.values = tuple(values)
        self.hint = "Pick one of the listed options."

    def satisfied(self, value: Any) -> bool:
        try:
            return value in self.values or any(
                isinstance(v, enum.Enum) and v.value == value for v in self.values
            )
        except TypeError:  # unhashable / incomparable values
            return False

    def __str__(self) -> str:
        shown = [v.value if isinstance(v, enum.Enum) else v for v in self.values]
        return "one of " + ", ".join(repr(v) for v in shown)


class InstanceOf(Constraint):
    """An instance of one of the given types."""

    def __init__(self, *types: type, name: str | None = None) -> None:
        self.types = types
        self.name = name

    def satisfied(self, value: Any) -> bool:
        return isinstance(value, self.types) and not (
            isinstance(value, bool) and bool not in self.types
        )

    def __str__(self) -> str:
        return self.name or "an instance of " + " or ".join(t.__name__ for t in self.types)


class Boolean(InstanceOf):
    """``True`` or ``False`` (numpy booleans accepted)."""

    def __init__(self) -> None:
        super().__init__(bool, np.bool_, name="a bool")


class RandomState(Constraint):
    """``None``, a non-negative int seed or a ``numpy.random.Generator``."""

    def satisfied(self, value: Any) -> bool:
        if value is None or isinstance(value, np.random.Generator):
            return True
        return isinstance(value, Integral) and not isinstance(value, bool) and value >= 0

    def __str__(self) -> str:
        return "None, a non-negative int seed or a numpy Generator"


class Callable_(Constraint):
    """Any callable."""

    def satisfied(self, value: Any) -> bool:
        return callable(value)

    def __str__(self) -> str:
        return "a callable"


class Array(Constraint):
    """Numeric array-like (numpy array, torch tensor, nested lists) with declared checks.

    Unlike the other constraints an ``Array`` checks itself with :func:`check_array`, so the
    message says exactly what is wrong (type, rank, shape, emptiness, NaN/inf).
    """

    def __init__(
        self,
        *,
        ndim: int | tuple[int, ...] | None = None,
        shape: tuple[int | None, ...] | None = None,
        allow_empty: bool = False,
        finite: bool = True,
        dtype: Any = np.float64,
    ) -> None:
        self.kw = dict(ndim=ndim, shape=shape, allow_empty=allow_empty, finite=finite, dtype=dtype)
        self.finite = finite

    def satisfied(self, value: Any) -> bool:
        try:
            check_array(value, "value", **self.kw)
        except InvalidParameterError:
            return False
        return True

    def check(self, value: Any, name: str, caller: str = "") -> np.ndarray:
        return check_array(value, name, caller=caller, **self.kw)

    def __str__(self) -> str:
        nd = self.kw["ndim"]
        return "a numeric array" + (f" with {nd} dimensions" if nd is not None else "")


def _is_tensor(value: Any) -> bool:
    """A torch tensor, recognised without importing torch (the base layer stays light)."""
    return type(value).__module__.startswith("torch") and hasattr(value, "ndim")


class Tensor(Constraint):
    """A torch tensor, checked on its own device without a copy to numpy.

    ``ndim`` (an int or a tuple of allowed ranks), non-empty unless ``allow_empty``, and
    finite (floating tensors) unless ``finite=False``. Reading finiteness synchronizes with an
    accelerator, so hot paths (a module's ``forward``) check their tensors themselves.
    """

    def __init__(
        self, *, ndim: int | tuple[int, ...] | None = None, allow_empty: bool = False,
        finite: bool = True,
    ) -> None:
        self.ndim, self.allow_empty, self.finite = ndim, allow_empty, finite

    def satisfied(self, value: Any) -> bool:
        try:
            self.check(value, "value")
        except InvalidParameterError:
            return False
        return True

    def check(self, value: Any, name: str, caller: str = "") -> Any:
        if not _is_tensor(value):
            raise_invalid(name, "a torch.Tensor", type(value).__name__,
                   "Convert with torch.as_tensor(...).", caller)
        if self.ndim is not None:
            allowed = (self.ndim,) if isinstance(self.ndim, int) else tuple(self.ndim)
            if value.ndim not in allowed:
                raise_invalid(name, f"a tensor with {' or '.join(map(str, allowed))} dimensions",
                       f"got shape {tuple(value.shape)}",
                       "Reshape the input (see the docstring for the axis order).", caller)
        if not self.allow_empty and value.numel() == 0:
            raise_invalid(name, "non-empty", f"got shape {tuple(value.shape)}",
                   "Pass at least one element.", caller)
        if self.finite and value.is_floating_point():
            import torch  # only reached with a tensor, so torch is already imported

            if not bool(torch.isfinite(value.detach()).all()):
                raise_invalid(name, "finite", f"got NaN or inf values in a tensor of shape "
                       f"{tuple(value.shape)}", "Clean or impute the input first.", caller)
        return value

    def __str__(self) -> str:
        return "a torch.Tensor" + (f" with {self.ndim} dimensions" if self.ndim is not None else "")


def _as_constraint(c: Any) -> Constraint | None:
    if c is None:
        return None
    if isinstance(c, Constraint):
        return c
    if c == "boolean":
        return Boolean()
    if c == "random_state":
        return RandomState()
    if c == "callable":
        return Callable_()
    if isinstance(c, type):
        return InstanceOf(c)
    raise TypeError(f"unknown constraint {c!r}")


def check_param(name: str, value: Any, allowed: Sequence[Any], caller: str = "") -> None:
    """Raise :class:`InvalidParameterError` unless ``value`` satisfies one of ``allowed``."""
    if value is None and any(c is None for c in allowed):
        return
    constraints = [_as_constraint(c) for c in allowed if c is not None]
    arrays = [c for c in constraints if isinstance(c, (Array, Tensor))]
    if len(constraints) == 1 and arrays:  # an array parameter: the precise message of its check
        arrays[0].check(value, name, caller)
        return
    if any(c.satisfied(value) for c in constraints):
        return
    musts = [str(c) for c in constraints] + (["None"] if any(c is None for c in allowed) else [])
    hints = [c.hint for c in constraints if c.hint]
    hint = hints[0] if hints else ""
    if not hint and any(isinstance(c, Interval) for c in constraints):
        hint = "Pass a value inside the range."
    raise_invalid(name, " or ".join(musts), value, hint, caller)


def validate(
    constraints: Mapping[str, Sequence[Any]], params: Mapping[str, Any], caller: str = ""
) -> None:
    """Check every parameter of ``params`` that has declared constraints."""
    for name, allowed in constraints.items():
        if name in params:
            check_param(name, params[name], allowed, caller)


def validate_params(constraints: Mapping[str, Sequence[Any]]) -> Callable:
    """Decorator: validate a function's arguments against declared ``constraints``.

    The constraints stay attached to the function as ``__attnlens_constraints__`` so tests can
    enumerate every declared public entry point and feed it bad input.
    """

    def decorate(func: Callable) -> Callable:
        sig = inspect.signature(func)
        unknown = set(constraints) - set(sig.parameters)
        if unknown:
            raise TypeError(f"{func.__qualname__}: constraints for unknown parameters {unknown}")

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            bound = sig.bind(*args, **kwargs)
            bound.apply_defaults()
            validate(constraints, bound.arguments, func.__qualname__)
            return func(*args, **kwargs)

        wrapper.__attnlens_constraints__ = dict(constraints)  # type: ignore[attr-defined]
        return wrapper

    return decorate


class ParamsValidatedMixin:
    """For estimators: declare ``_parameter_constraints`` and call ``_check_params()`` in fit."""

    _parameter_constraints: dict[str, list[Any]] = {}

    def _check_params(self) -> None:
        params = {name: getattr(self, name) for name in self._parameter_constraints}
        validate(self._parameter_constraints, params, type(self).__name__)


def warn_ignored(name: str, value: Any, reason: str, *, stacklevel: int = 3) -> None:
    """Warn that ``name`` was set to ``value`` but is ignored (``reason`` says why)."""
    warnings.warn(
        f"parameter {name!r}={describe(value)} is ignored: {reason}.",
        IgnoredParameterWarning,
        stacklevel=stacklevel,
    )


# ----------------------------------------------------------------------------- imperative checks


def check_array(
    value: Any,
    name: str,
    *,
    ndim: int | tuple[int, ...] | None = None,
    shape: tuple[int | None, ...] | None = None,
    dtype: Any = np.float64,
    allow_empty: bool = False,
    finite: bool = True,
    caller: str = "",
) -> np.ndarray:
    """Convert ``value`` to an ndarray of ``dtype`` and check its rank, shape, size and finiteness.

    ``shape`` may hold ``None`` for free axes.
    """
    if value is None:
        raise_invalid(name, "an array", None, "Pass a numeric array.", caller)
    if isinstance(value, (str, bytes)):
        raise_invalid(name, "a numeric array", value, "Pass numbers, not text.", caller)
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # torch tensors
        value = value.detach().cpu().numpy()
    try:
        arr = np.asarray(value, dtype=dtype) if dtype is not None else np.asarray(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise_invalid(name, "numeric array-like", value, f"It could not be converted ({exc}).", caller)
    if arr.dtype == object:
        raise_invalid(name, "numeric array-like", value, "Pass a regular numeric array.", caller)
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if arr.ndim not in allowed:
            raise_invalid(
                name,
                f"an array with {' or '.join(map(str, allowed))} dimensions",
                f"got shape {arr.shape}",
                "Reshape the input (see the docstring for the axis order).",
                caller,
            )
    if shape is not None:
        if arr.ndim != len(shape) or any(
            s is not None and s != a for s, a in zip(shape, arr.shape, strict=False)
        ):
            want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
            raise_invalid(
                name,
                f"an array of shape {want}",
                f"got shape {arr.shape}",
                "Check the axis order and the sizes of the other inputs.",
                caller,
            )
    if not allow_empty and arr.size == 0:
        raise_invalid(name, "non-empty", f"got shape {arr.shape}", "Pass at least one element.", caller)
    if finite and arr.dtype.kind in "fc" and not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise_invalid(
            name,
            "finite",
            f"got {bad} NaN or inf value(s) in an array of shape {arr.shape}",
            "Clean or impute the input first.",
            caller,
        )
    return arr


def check_option(value: Any, name: str, options: Iterable[Any], caller: str = "") -> Any:
    """Check that ``value`` is one of ``options``."""
    check_param(name, value, [Options(*tuple(options))], caller)
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
    caller: str = "",
) -> Any:
    """Check a scalar's type and range (bounds optional)."""
    if isinstance(value, bool) or not isinstance(value, kind):
        kname = getattr(kind, "__name__", str(kind))
        raise_invalid(name, f"a {kname}", value, "Pass a number.", caller)
    closed = {(True, True): "both", (True, False): "left", (False, True): "right"}.get(
        (low_inclusive, high_inclusive), "neither"
    )
    base = kind if isinstance(kind, type) else numbers.Real
    check_param(name, value, [Interval(base, low, high, closed=closed)], caller)
    return value


def check_positive(value: Any, name: str, *, strict: bool = True, caller: str = "") -> float:
    """A real number > 0 (or >= 0 when ``strict`` is False)."""
    return check_scalar(value, name, low=0.0, low_inclusive=not strict, caller=caller)


def check_int(
    value: Any, name: str, *, low: int | None = None, high: int | None = None, caller: str = ""
) -> int:
    """An integer (numpy integers accepted) within optional bounds."""
    return int(check_scalar(value, name, kind=numbers.Integral, low=low, high=high, caller=caller))


def check_random_state(seed: Any, name: str = "random_state") -> np.random.Generator:
    """``None`` (fresh entropy), an int seed, or a ``numpy.random.Generator``."""
    check_param(name, seed, [RandomState()])
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def check_consistent_length(name_a: str, a: Any, name_b: str, b: Any, caller: str = "") -> None:
    """Two arrays share their first axis."""
    if len(a) != len(b):
        raise_invalid(
            name_b,
            f"as long as {name_a} ({len(a)})",
            f"got length {len(b)}",
            "Pass one entry per row.",
            caller,
        )


def resolve_device(device: str | None = None, caller: str = "") -> str:
    """The torch device to compute on: ``device`` when given, else ``"cuda"`` when a GPU is
    visible (``torch.cuda.is_available()``), else ``"cpu"``.

    A malformed name, or a CUDA device on a machine where no GPU is visible, raises
    :class:`InvalidParameterError` naming ``device`` (torch is imported only here, so the base
    layer stays light).
    """
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise_invalid("device", "a torch device name such as 'cpu' or 'cuda'", device,
                      caller=caller)
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise_invalid("device", "'cpu' on a machine without a visible GPU", device,
                      "torch.cuda.is_available() is False here; use device='cpu'.", caller)
    return device
