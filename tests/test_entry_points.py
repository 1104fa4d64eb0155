"""Every public entry point refuses bad input with a named error (issue 17, point 4).

For each row of :mod:`entry_points` (a public function or estimator and one valid call) and
each parameter it declares, the test feeds: a wrong type, a NaN/inf array (hypothesis draws
the array and where the bad value goes), a wrong shape, an empty array and an unknown option,
one at a time with the other arguments valid, and asserts an
:class:`attnlens.errors.InvalidParameterError` whose message names the parameter. The number
of inputs tried is attached to each test report and summed in the terminal summary (see
``conftest.py``).
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import is_dataclass
from enum import Enum

import numpy as np
import pytest
import torch
from entry_points import Entry, all_entries
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attnlens._validation import Array, Interval, Options, Tensor
from attnlens.errors import InvalidParameterError

ENTRIES = all_entries()
PILLARS = ("svm", "convex", "kernel", "lenses", "tabular", "retrieval")


def _expect(entry: Entry, param: str, value, record) -> None:
    kwargs = entry.valid()
    kwargs[param] = value
    with pytest.raises(InvalidParameterError) as info:
        entry.call(**kwargs)
    assert param in str(info.value), f"{entry.name}: the error does not name {param!r}"
    record()


def _array_kind(allowed) -> Array | Tensor | None:
    kinds = [c for c in allowed if isinstance(c, (Array, Tensor))]
    return kinds[0] if kinds else None


def _allowed_ndims(kind: Array | Tensor) -> tuple[int, ...] | None:
    ndim = kind.kw["ndim"] if isinstance(kind, Array) else kind.ndim
    if isinstance(kind, Array) and kind.kw["shape"] is not None:
        ndim = len(kind.kw["shape"])
    return None if ndim is None else ((ndim,) if isinstance(ndim, int) else tuple(ndim))


def _wrong_shape(value, kind: Array | Tensor):
    """A rank the constraint does not allow (leading axes added), or None if any rank is."""
    allowed = _allowed_ndims(kind)
    if allowed is None:
        return None
    target = max(allowed) + 1
    return value.reshape((1,) * (target - value.ndim) + tuple(value.shape))


def _empty(value):
    return value[:0] if value.ndim else value.reshape(0)


@pytest.fixture
def tried(record_property):
    counter = {"n": 0}

    def record() -> None:
        counter["n"] += 1

    yield record
    record_property("inputs_tried", counter["n"])


def _params(kind) -> list[tuple[Entry, str]]:
    out = []
    for entry in ENTRIES:
        for name, allowed in entry.constraints.items():
            if kind(allowed):
                out.append((entry, name))
    return out


def _ids(cases):
    return [f"{e.name}-{p}" for e, p in cases]


ARRAYS = _params(lambda allowed: _array_kind(allowed) is not None)
OPTIONS = _params(lambda allowed: any(isinstance(c, Options) for c in allowed))
NUMBERS = _params(lambda allowed: any(isinstance(c, Interval) for c in allowed)
                  and None not in allowed)


@pytest.mark.parametrize(("entry", "param"), ARRAYS, ids=_ids(ARRAYS))
def test_wrong_type_shape_and_empty_arrays(entry, param, tried):
    value = entry.valid().get(param)
    if value is None:
        pytest.skip(f"the table's valid call of {entry.name} leaves {param} unset")
    value = value if hasattr(value, "ndim") else np.asarray(value)
    _expect(entry, param, "not an array", tried)
    wrong = _wrong_shape(value, _array_kind(entry.constraints[param]))
    if wrong is not None:
        _expect(entry, param, wrong, tried)
    _expect(entry, param, _empty(value), tried)


@pytest.mark.parametrize(("entry", "param"), ARRAYS, ids=_ids(ARRAYS))
@settings(max_examples=15, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_nan_and_inf_arrays(entry, param, tried, data):
    value = entry.valid().get(param)
    kind = _array_kind(entry.constraints[param])
    if value is None or not kind.finite or (isinstance(kind, Array) and kind.kw["dtype"] is bool):
        pytest.skip(f"{param} is unset in the table's valid call, boolean, or may be non-finite")
    is_tensor = isinstance(value, torch.Tensor)
    arr = np.array(value.detach().numpy() if is_tensor else value, dtype=np.float64)
    flat = arr.reshape(-1)
    where = data.draw(st.integers(0, flat.size - 1), label="index")
    flat[where] = data.draw(st.sampled_from([np.nan, np.inf, -np.inf]), label="bad value")
    bad = arr.reshape(np.shape(value))
    if is_tensor:
        bad = torch.as_tensor(bad, dtype=value.dtype)
    _expect(entry, param, bad, tried)


@pytest.mark.parametrize(("entry", "param"), OPTIONS, ids=_ids(OPTIONS))
def test_unknown_option(entry, param, tried):
    _expect(entry, param, "no-such-option", tried)


@pytest.mark.parametrize(("entry", "param"), NUMBERS, ids=_ids(NUMBERS))
@settings(max_examples=10, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=st.one_of(st.text(max_size=3), st.just(float("nan")), st.just(float("inf")),
                       st.lists(st.integers(), max_size=2)))
def test_wrong_type_or_non_finite_number(entry, param, tried, value):
    _expect(entry, param, value, tried)


def _public(pillar: str) -> list[tuple[str, object]]:
    try:
        mod = importlib.import_module(f"attnlens.{pillar}")
    except ModuleNotFoundError:
        return []
    return [(name, getattr(mod, name)) for name in getattr(mod, "__all__", [])]


def _is_entry_point(obj) -> bool:
    """Functions and estimators/modules; result dataclasses, enums and constants are not."""
    if inspect.isclass(obj):
        if is_dataclass(obj) or issubclass(obj, Enum):
            return False
        return hasattr(obj, "fit") or issubclass(obj, torch.nn.Module)
    return inspect.isfunction(obj)


@pytest.mark.parametrize("pillar", PILLARS)
def test_every_public_entry_point_declares_its_constraints(pillar):
    missing = [
        name for name, obj in _public(pillar) if _is_entry_point(obj)
        and not (getattr(obj, "__attnlens_constraints__", None)
                 or getattr(obj, "_parameter_constraints", None)
                 or (inspect.isfunction(obj) and not inspect.signature(obj).parameters))
    ]
    assert not missing, f"attnlens.{pillar}: no declared parameter constraints on {missing}"


@pytest.mark.parametrize(("pillar", "exempt"), [
    ("kernel", {"PrimalPlusTransformer", "Transformer"}),
    ("svm", {"paper_2d_example"}),  # takes no parameter
])
def test_the_table_covers_the_declared_entry_points(pillar, exempt):
    """Every declared entry point of a pillar with rows has one (new pillars add theirs)."""
    rows = {e.target for e in ENTRIES}
    mod = importlib.import_module(f"attnlens.{pillar}")
    declared = [name for name, obj in _public(pillar) if _is_entry_point(obj)]
    absent = [n for n in declared if getattr(mod, n) not in rows and n not in exempt]
    assert not absent, f"no table row for {absent}"


def test_the_table_covers_the_convex_entry_points():
    """Every public convex function and estimator has a row."""
    rows = {e.target for e in ENTRIES}
    absent = [name for name, obj in _public("convex") if _is_entry_point(obj)
              and obj not in rows]
    assert not absent, f"no table row for {absent}"
