"""attnlens.svm: Att-SVM (max-margin token selection), its solvers, optimality, Gen-SVM and the
gradient dynamics that converge to them.

Score convention: ``score_t = x_t^T W z`` (``W = K Q^T`` when factorized).

Layout: the public programs in :mod:`~attnlens.svm.attsvm`, :mod:`~attnlens.svm.gensvm`,
:mod:`~attnlens.svm.svmeq` (``W^SVMeq`` of multi-token runs), :mod:`~attnlens.svm.optimality`
and :mod:`~attnlens.svm.problems`; the dynamics
(``train_attention``, the official-style ``reference_train``, trackers, regularization path)
in :mod:`attnlens.svm.dynamics`; the official notebooks' data in
:mod:`~attnlens.svm.official_data`; the
private solvers in ``attnlens.svm._solvers``; the shared tolerances (support, rank) and
``matrix_norm`` in ``attnlens.svm._numerics``.
"""

from attnlens.svm.attsvm import AttSVMResult, att_svm, att_svm_problem
from attnlens.svm.dynamics import (
    ConvergenceCheck,
    MLPHead,
    ProblemBatch,
    ReferenceRun,
    RegPath,
    SVMTrack,
    Trajectory,
    convergence_check,
    correlation,
    gen_svm_direction,
    loss_and_grad,
    project_out_fin,
    reference_train,
    regularization_path,
    svm_references,
    svm_solution,
    track_svm,
    train_attention,
)
from attnlens.svm.gensvm import (
    FinitePartResult,
    GenSVMResult,
    fin_projection,
    finite_part,
    gen_svm,
)
from attnlens.svm.official_data import official_problem
from attnlens.svm.optimality import (
    LocalOptimum,
    OptimalityReport,
    SelectionSearch,
    check_optimality,
    is_globally_optimal,
    is_locally_optimal,
    locally_optimal_selections,
    support_sets,
)
from attnlens.svm.problems import (
    TokenSelectionProblem,
    paper_2d_example,
    planted_problem,
    random_problem,
)
from attnlens.svm.svmeq import SVMEqResult, log_ratio_fin, svm_eq

__all__ = [
    "AttSVMResult",
    "ConvergenceCheck",
    "FinitePartResult",
    "GenSVMResult",
    "LocalOptimum",
    "MLPHead",
    "OptimalityReport",
    "ProblemBatch",
    "ReferenceRun",
    "RegPath",
    "SVMTrack",
    "SVMEqResult",
    "SelectionSearch",
    "TokenSelectionProblem",
    "Trajectory",
    "att_svm",
    "att_svm_problem",
    "check_optimality",
    "convergence_check",
    "correlation",
    "fin_projection",
    "finite_part",
    "gen_svm",
    "gen_svm_direction",
    "is_globally_optimal",
    "is_locally_optimal",
    "locally_optimal_selections",
    "log_ratio_fin",
    "loss_and_grad",
    "official_problem",
    "paper_2d_example",
    "planted_problem",
    "project_out_fin",
    "random_problem",
    "reference_train",
    "regularization_path",
    "support_sets",
    "svm_references",
    "svm_eq",
    "svm_solution",
    "track_svm",
    "train_attention",
]
