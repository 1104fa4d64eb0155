"""attnlens.svm: Att-SVM (max-margin token selection), its solvers, optimality and Gen-SVM.

Score convention: ``score_t = x_t^T W z`` (``W = K Q^T`` when factorized).
"""

from attnlens.svm.attsvm import AttSVMResult, att_svm, att_svm_problem
from attnlens.svm.gensvm import (
    FinitePartResult,
    GenSVMResult,
    fin_projection,
    finite_part,
    gen_svm,
)
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

__all__ = [
    "AttSVMResult",
    "FinitePartResult",
    "GenSVMResult",
    "LocalOptimum",
    "OptimalityReport",
    "SelectionSearch",
    "TokenSelectionProblem",
    "att_svm",
    "att_svm_problem",
    "check_optimality",
    "fin_projection",
    "finite_part",
    "gen_svm",
    "is_globally_optimal",
    "is_locally_optimal",
    "locally_optimal_selections",
    "support_sets",
    "paper_2d_example",
    "planted_problem",
    "random_problem",
]

# --- implicit-bias dynamics (issue 3) ---
from attnlens.svm.convergence_check import convergence_check  # noqa: E402
from attnlens.svm.dynamics import (  # noqa: E402
    MLPHead,
    ProblemBatch,
    Trajectory,
    loss_and_grad,
    train_attention,
)
from attnlens.svm.regpath import RegPath, regularization_path  # noqa: E402
from attnlens.svm.trackers import (  # noqa: E402
    SVMTrack,
    correlation,
    gen_svm_direction,
    project_out_fin,
    svm_references,
    svm_solution,
    track_svm,
)

__all__ += [
    "MLPHead",
    "ProblemBatch",
    "RegPath",
    "SVMTrack",
    "Trajectory",
    "convergence_check",
    "correlation",
    "gen_svm_direction",
    "loss_and_grad",
    "project_out_fin",
    "regularization_path",
    "svm_references",
    "svm_solution",
    "track_svm",
    "train_attention",
]
