"""Compatibility path: the code lives in :mod:`attnlens.svm.dynamics.trackers`."""

from attnlens.svm.dynamics.trackers import (  # noqa: F401
    DEFAULT_METHOD,
    METHODS,
    NORMS,
    SOLVER_COUNTS,
    SVMTrack,
    correlation,
    gen_svm_direction,
    is_locally_optimal_at,
    project_out_fin,
    svm_references,
    svm_solution,
    track_svm,
)
