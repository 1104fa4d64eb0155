"""Gradient dynamics of one-layer attention and their Att-SVM limits.

* :mod:`~attnlens.svm.dynamics.training`: ``train_attention`` (normalized GD on ``W`` or
  ``(K, Q)``, batched over seeds), ``loss_and_grad``, ``ProblemBatch``, ``Trajectory``;
* :mod:`~attnlens.svm.dynamics.reference_loop`: ``reference_train``, the official notebook's
  per-seed torch-autograd loop (separate K/Q normalization), the like-for-like baseline;
* :mod:`~attnlens.svm.dynamics.trackers`: the Att-SVM solutions of the selection a run
  converged to, and the correlation of the trajectory with them;
* :mod:`~attnlens.svm.dynamics.regpath`: the regularization path ``argmin_{||W|| <= R} L(W)``;
* :mod:`~attnlens.svm.dynamics.convergence`: ``convergence_check``, the one-call demo check.

Score convention ``score_t = x_t^T W z`` (``W = K Q^T`` when factorized). Tarzanagh, Li,
Zhang, Oymak, NeurIPS 2023 (arXiv 2306.13596); Tarzanagh, Li, Thrampoulidis, Oymak,
"Transformers as Support Vector Machines" (arXiv 2308.16898).
"""

from attnlens.svm._heads import MLPHead
from attnlens.svm._numerics import numerical_rank
from attnlens.svm.dynamics.convergence import ConvergenceCheck, convergence_check
from attnlens.svm.dynamics.reference_loop import ReferenceRun, reference_train
from attnlens.svm.dynamics.regpath import RegPath, regularization_path
from attnlens.svm.dynamics.trackers import (
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
from attnlens.svm.dynamics.training import (
    ProblemBatch,
    Trajectory,
    loss_and_grad,
    train_attention,
)

__all__ = [
    "ConvergenceCheck",
    "MLPHead",
    "ProblemBatch",
    "ReferenceRun",
    "RegPath",
    "SOLVER_COUNTS",
    "SVMTrack",
    "Trajectory",
    "convergence_check",
    "correlation",
    "gen_svm_direction",
    "is_locally_optimal_at",
    "loss_and_grad",
    "numerical_rank",
    "project_out_fin",
    "reference_train",
    "regularization_path",
    "svm_references",
    "svm_solution",
    "track_svm",
    "train_attention",
]
