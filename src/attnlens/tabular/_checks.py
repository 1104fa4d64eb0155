"""Input checks shared by the tabular estimators (NaN, single class, feature count)."""

from __future__ import annotations

import numpy as np

from attnlens._validation import check_array, check_consistent_length, raise_invalid


def check_X_finite(X, caller: str, n_features: int | None = None) -> np.ndarray:
    """A finite (n, d) float array; NaN is refused (impute first, e.g. SimpleImputer)."""
    if hasattr(X, "to_numpy"):
        X = X.to_numpy()
    arr = np.asarray(X) if not hasattr(X, "detach") else X
    if isinstance(arr, np.ndarray) and arr.dtype.kind == "f" and np.isnan(arr).any():
        raise_invalid("X", "free of NaN", f"got {int(np.isnan(arr).sum())} NaN value(s)",
                      "Impute missing values first (sklearn.impute.SimpleImputer in a Pipeline).",
                      caller)
    X = check_array(X, "X", ndim=2, caller=caller)
    if n_features is not None and X.shape[1] != n_features:
        raise_invalid("X", f"an array with {n_features} features (as in fit)",
                      f"got {X.shape[1]} features", "Pass the columns used in fit.", caller)
    return X


def check_class_labels(y, X: np.ndarray, caller: str) -> tuple[np.ndarray, np.ndarray]:
    """Class labels (any hashable type): (classes, codes); at least two classes."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y.ravel()
    if y.ndim != 1:
        raise_invalid("y", "a 1-D array of class labels", f"got shape {y.shape}",
                      "Pass one label per row.", caller)
    check_consistent_length("X", X, "y", y, caller)
    if y.dtype.kind == "f" and not np.all(np.isfinite(y)):
        raise_invalid("y", "finite", "got NaN or inf labels", "Drop unlabelled rows.", caller)
    classes, codes = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise_invalid("y", "labels of at least two classes", f"got the single class {classes[0]!r}",
                      "A classifier needs two classes or more; check the split.", caller)
    return classes, codes.astype(np.int64)


def check_regression_target(y, X: np.ndarray, caller: str) -> np.ndarray:
    y = np.asarray(y, dtype=np.float64)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y.ravel()
    if y.ndim != 1:
        raise_invalid("y", "a 1-D array of targets", f"got shape {y.shape}",
                      "Pass one target per row.", caller)
    check_consistent_length("X", X, "y", y, caller)
    if not np.all(np.isfinite(y)):
        raise_invalid("y", "finite", "got NaN or inf targets", "Drop unlabelled rows.", caller)
    return y
