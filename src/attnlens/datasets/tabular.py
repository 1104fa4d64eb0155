"""Tabular data sets that install offline, as numeric arrays for :mod:`attnlens.tabular`.

- scikit-learn's bundled tables: ``breast_cancer`` (569 x 30, 2 classes; the UCI Wisconsin
  diagnostic set, the "Breast Cancer" of the NPT paper), ``wine`` (178 x 13, 3 classes),
  ``digits`` (1797 x 64, 10 classes), ``iris`` (150 x 4, 3 classes), ``diabetes``
  (442 x 10, regression).
- ``penguins`` (PyPI ``palmerpenguins``, its CSV ships in the package): 333 complete rows of
  bill length/depth, flipper length, body mass (numerical), island and sex (categorical codes,
  listed in ``categorical``), 3 species. Rows with a missing value are dropped (11 rows) and the
  count is recorded in ``notes``; NaN handling is the caller's choice, the estimators refuse NaN.

pydataset (R data sets) is not used: it extracts a 16 MB archive into ``~/.pydataset`` on first
import (a write outside the project at import time) and is unmaintained since 2016.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from attnlens._validation import check_option
from attnlens.errors import DatasetNotAvailableError

SKLEARN_SETS = ("breast_cancer", "wine", "digits", "iris", "diabetes")
NAMES = SKLEARN_SETS + ("penguins",)


@dataclass(frozen=True)
class TabularData:
    """X (n, d) float64; y (n,) int class codes or float targets; task "classification" or
    "regression"; categorical: column indices holding category codes."""

    name: str
    X: np.ndarray
    y: np.ndarray
    task: str
    feature_names: list[str]
    classes: list[str] = field(default_factory=list)
    categorical: tuple[int, ...] = ()
    notes: str = ""


def _sklearn(name: str) -> TabularData:
    from sklearn import datasets

    bunch = getattr(datasets, f"load_{name}")()
    task = "regression" if name == "diabetes" else "classification"
    classes = [str(c) for c in getattr(bunch, "target_names", [])] if task != "regression" else []
    y = bunch.target.astype(np.float64 if task == "regression" else np.int64)
    return TabularData(name=name, X=np.asarray(bunch.data, dtype=np.float64), y=y, task=task,
                       feature_names=[str(f) for f in bunch.feature_names], classes=classes)


def _penguins() -> TabularData:
    try:
        import palmerpenguins
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise DatasetNotAvailableError(
            "the penguins table needs the PyPI package palmerpenguins: "
            "pip install 'palmerpenguins>=0.1.4,<0.2'") from exc
    df = palmerpenguins.load_penguins()
    n_all = len(df)
    df = df.dropna().reset_index(drop=True)
    num = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]
    cat = ["island", "sex"]
    cols = [df[c].to_numpy(dtype=np.float64) for c in num]
    for c in cat:
        cols.append(df[c].astype("category").cat.codes.to_numpy(dtype=np.float64))
    species = df["species"].astype("category")
    return TabularData(name="penguins", X=np.stack(cols, 1), y=species.cat.codes.to_numpy(
        dtype=np.int64), task="classification", feature_names=num + cat,
        classes=[str(c) for c in species.cat.categories],
        categorical=(len(num), len(num) + 1),
        notes=f"dropped {n_all - len(df)} of {n_all} rows with a missing value")


def load_tabular(name: str) -> TabularData:
    """Load one of :data:`NAMES`."""
    check_option(name, "name", NAMES, "load_tabular")
    return _penguins() if name == "penguins" else _sklearn(name)
