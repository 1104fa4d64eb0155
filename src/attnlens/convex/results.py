"""The result of a convex solve: the solution blocks plus the certificate fields."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from attnlens._results import SolveInfo, Status


@dataclass(frozen=True)
class BracketInfo:
    """What :func:`attnlens.convex.relu_bracket.refine_bracket` did to a ReLU program's bracket.

    ``status``: ``optimal`` (relative width <= ``bracket_tol``), ``optimal_inaccurate`` (no
    violated direction left: the width that remains is the lower bound's) or ``max_iter``
    (round budget spent). ``upper`` / ``lower``: the bracket after each round (round 0 is the
    initial dictionary with the cone-aware bound); ``initial_width``: the relative width before
    refinement (attained objective vs the gated relaxation's bound); ``width``: after.
    ``directions_added``: directions added per round (all blocks); ``iterations``: solver
    iterations of the re-solves; ``relaxation_lower_bound``: the gated relaxation's bound.
    """

    status: Status
    rounds: int
    upper: list
    lower: list
    directions_added: list
    initial_width: float
    width: float
    relaxation_lower_bound: float
    iterations: int
    seconds: float


@dataclass(frozen=True)
class ConvexResult(SolveInfo):
    """Solution ``Z`` (one array per block) plus the certificate fields.

    ``certificate`` is the relative duality gap ``(P - D) / max(P, 1e-12)`` between the primal
    value ``P`` (``objective``) and the dual value ``D`` (``dual_objective``) of the scaled dual
    point: a bound on the relative suboptimality. ``grad_ratio = max_j ||grad_j L(Z)||_2 / beta``
    (<= 1 at an optimum); ``duality_gap = P - D``.
    """

    Z: list = field(default_factory=list)
    duality_gap: float = float("nan")
    dual_objective: float = float("nan")
    grad_ratio: float = float("nan")
    #: ReLU programs only: ``(X_j, E_j)`` per block with ``Z_j = X_j E_j^T`` (cone variables)
    cone_factors: list | None = None
    #: ReLU programs only: largest relative cone violation of the iterate before its repair
    constraint_violation: float = float("nan")
    #: ReLU programs only: certified lower bound from the gated-ReLU relaxation (same patterns)
    lower_bound: float = float("nan")
    #: ReLU programs only, after :func:`~attnlens.convex.relu_bracket.refine_bracket`
    bracket: BracketInfo | None = None


def with_tolerance(res: ConvexResult, tol: float) -> ConvexResult:
    """``res``, marked ``optimal_inaccurate`` when its solver said optimal but its certificate
    misses ``tol`` (the cvxpy references stop on their own criteria, not on the certificate)."""
    if res.certificate > tol and res.status is Status.OPTIMAL:
        return dataclasses.replace(res, status=Status.OPTIMAL_INACCURATE)
    return res
