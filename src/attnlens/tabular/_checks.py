"""Input checks shared by the tabular estimators (NaN, single class, feature count).

The messages keep attnlens's one format and also carry the phrases scikit-learn's estimator
checks look for ("Reshape your data", "X has 3 features, but ... is expecting 4", "sparse",
"continuous", "one class", "requires y to be passed"), so the estimators pass ``check_estimator``.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse
from sklearn.exceptions import DataConversionWarning
from sklearn.utils.multiclass import type_of_target

from attnlens._validation import check_array, check_consistent_length, raise_invalid


def check_X_finite(X, caller: str, n_features: int | None = None) -> np.ndarray:
    """A finite (n, d) float array; NaN is refused (impute first, e.g. SimpleImputer)."""
    if scipy.sparse.issparse(X):
        raise_invalid("X", "a dense array", f"got a sparse {type(X).__name__}",
                      "Sparse input is not supported: call X.toarray() first.", caller)
    if hasattr(X, "to_numpy"):
        X = X.to_numpy()
    arr = np.asarray(X) if not hasattr(X, "detach") else X
    if isinstance(arr, np.ndarray):
        if arr.dtype.kind == "c":
            raise_invalid("X", "real-valued", "Complex data not supported", "Pass real numbers.", caller)
        if arr.ndim != 2:
            raise_invalid("X", "a 2-D array (n_samples, n_features)", f"got shape {arr.shape}",
                          "Reshape your data: X.reshape(-1, 1) for a single feature, "
                          "X.reshape(1, -1) for a single sample.", caller)
        if arr.shape[1] == 0:
            raise_invalid("X", "an array with at least one feature",
                          f"0 feature(s) (shape={arr.shape}) while a minimum of 1 is required.",
                          "Pass at least one column.", caller)
    if isinstance(arr, np.ndarray) and arr.dtype.kind == "f" and np.isnan(arr).any():
        raise_invalid("X", "free of NaN", f"got {int(np.isnan(arr).sum())} NaN value(s)",
                      "Impute missing values first (sklearn.impute.SimpleImputer in a Pipeline).",
                      caller)
    X = check_array(X, "X", ndim=2, caller=caller)
    if n_features is not None and X.shape[1] != n_features:
        raise_invalid("X", f"an array with {n_features} features (as in fit)",
                      f"X has {X.shape[1]} features, but {caller} is expecting {n_features} "
                      "features as input", "Pass the columns used in fit.", caller)
    return X


def check_class_labels(y, X: np.ndarray, caller: str) -> tuple[np.ndarray, np.ndarray]:
    """Class labels (any hashable type): (classes, codes); at least two classes."""
    y = _column_y(y, caller)
    if y.ndim != 1:
        raise_invalid("y", "a 1-D array of class labels", f"got shape {y.shape}",
                      "Pass one label per row.", caller)
    check_consistent_length("X", X, "y", y, caller)
    if y.dtype.kind == "f" and not np.all(np.isfinite(y)):
        raise_invalid("y", "finite", "got NaN or inf labels", "Drop unlabelled rows.", caller)
    if y.dtype.kind in "fc" and type_of_target(y) == "continuous":
        raise_invalid("y", "class labels", "got a continuous target (Unknown label type: "
                      "continuous)", "Use the regressor for real-valued targets.", caller)
    classes, codes = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise_invalid("y", "labels of at least two classes",
                      f"got a single class, one class only: {classes[0]!r}",
                      "A classifier needs two classes or more; check the split.", caller)
    return classes, codes.astype(np.int64)


def _column_y(y, caller: str) -> np.ndarray:
    """``y`` as an array; None is refused; a column vector (n, 1) is raveled with a warning."""
    if y is None:
        raise_invalid("y", "an array of targets", None,
                      f"{caller} requires y to be passed, but the target y is None.", caller)
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        warnings.warn("A column-vector y was passed when a 1d array was expected; raveled.",
                      DataConversionWarning, stacklevel=3)
        y = y.ravel()
    return y


def check_regression_target(y, X: np.ndarray, caller: str) -> np.ndarray:
    y = _column_y(y, caller)
    if y.dtype.kind not in "biuf":
        y = check_array(y, "y", ndim=(1, 2), allow_empty=True, finite=False, caller=caller)
    y = y.astype(np.float64)
    if y.ndim != 1:
        raise_invalid("y", "a 1-D array of targets", f"got shape {y.shape}",
                      "Pass one target per row.", caller)
    check_consistent_length("X", X, "y", y, caller)
    if not np.all(np.isfinite(y)):
        raise_invalid("y", "finite", "got NaN or inf targets", "Drop unlabelled rows.", caller)
    return y
