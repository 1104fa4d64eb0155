"""The closed vocabulary of solver outcomes and the fields every solver result shares."""

from __future__ import annotations

import enum
import warnings
from dataclasses import dataclass

from attnlens.errors import ConvergenceWarning, InaccurateSolutionWarning


class Status(str, enum.Enum):
    """Outcome of a solve. ``str`` valued so results serialize as plain JSON strings."""

    OPTIMAL = "optimal"
    OPTIMAL_INACCURATE = "optimal_inaccurate"
    INFEASIBLE = "infeasible"
    MAX_ITER = "max_iter"

    def __str__(self) -> str:  # print as the plain word
        return self.value


@dataclass(frozen=True)
class SolveInfo:
    """Fields every solver result carries (solvers subclass or embed this; results are frozen).

    objective: the optimal value reached.
    status: one of :class:`Status`.
    certificate: a nonnegative number that is 0 at an exact optimum (duality gap or
        optimality residual; each solver documents which).
    iterations: iterations of the method used (0 for direct methods).
    seconds: wall time of the solve.
    method: the name of the method that produced the result.
    """

    objective: float
    status: Status
    certificate: float
    iterations: int
    seconds: float
    method: str


def warn_on_status(status: Status, certificate: float, tol: float, what: str) -> None:
    """Warn (never silently pass) when a solve did not reach its tolerance."""
    if status is Status.MAX_ITER:
        warnings.warn(
            f"{what} stopped at the iteration limit with certificate {certificate:.3g} "
            f"(tol={tol:.3g}); raise max_iter or loosen tol.",
            ConvergenceWarning,
            stacklevel=3,
        )
    elif status is Status.OPTIMAL_INACCURATE:
        warnings.warn(
            f"{what} returned optimal_inaccurate: certificate {certificate:.3g} > tol={tol:.3g}.",
            InaccurateSolutionWarning,
            stacklevel=3,
        )
