"""What a private Att-SVM / Gen-SVM solver hands back, before the public layer certifies it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class SolverOutput:
    """The raw answer of one solve.

    W: (d, d) solution, or None when there is none (a dual ray was found, or the method
        stopped without one).
    duals: multipliers of the margin constraints, in the layout the caller asked for (the
        (n, K, T) constraint mask for Att-SVM, the flat inequality list for Gen-SVM), or None.
    iterations: the method's iteration count.
    converged: False only when the iteration budget ran out.
    ray: a dual ray (nonnegative, sums to 1, ``sum ray_c A_c = 0``) proving infeasibility, in
        the layout of ``duals``; None otherwise.
    eq_duals: multipliers of the equality constraints (Gen-SVM), or None.
    status: the backend's own word for the outcome where it has one (cvxpy), else "".
    stats: counters of the method (Frobenius: Newton steps, CG steps, ...).
    """

    W: np.ndarray | None
    duals: np.ndarray | None
    iterations: int = 0
    converged: bool = True
    ray: np.ndarray | None = None
    eq_duals: np.ndarray | None = None
    status: str = ""
    stats: Mapping[str, float] = field(default_factory=dict)

    @property
    def solved(self) -> bool:
        """A solution is present (no ray)."""
        return self.W is not None and self.ray is None
