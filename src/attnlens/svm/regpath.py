"""Compatibility path: the code lives in :mod:`attnlens.svm.dynamics.regpath`."""

from attnlens.svm.dynamics.regpath import (  # noqa: F401
    NORMS,
    RegPath,
    project_ball,
    project_simplex_ball,
    regularization_path,
)
