"""A one-call check of the implicit bias: normalized GD on W lines up with W^mm.

Score convention ``score_t = x_t^T W z``. Tarzanagh, Li, Thrampoulidis, Oymak, "Transformers
as Support Vector Machines" (arXiv 2308.16898).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from attnlens._validation import Integral, Interval, Real, validate_params
from attnlens.svm.dynamics.trackers import track_svm
from attnlens.svm.dynamics.training import ProblemBatch, train_attention


@dataclass(frozen=True)
class ConvergenceCheck:
    """Outcome of :func:`convergence_check`.

    correlation: corr(W_GD, W^mm) of the final direction with the max-margin solution of the
        selection GD converged to (NaN if that selection's Att-SVM is infeasible).
    selection: the selected token per sequence; globally_optimal / locally_optimal: whether
        that selection is the globally / locally optimal one; prob_selected: mean softmax
        mass on it at the last step; norm: ||W|| at the last step; seconds: wall time.
    """

    correlation: float
    selection: list[int]
    globally_optimal: bool
    locally_optimal: bool
    prob_selected: float
    norm: float
    n: int
    T: int
    d: int
    steps: int
    seed: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serializable fields."""
        return asdict(self)


@validate_params({
    "seed": [Interval(Integral, 0, None)],
    "n": [Interval(Integral, 1, None)],
    "T": [Interval(Integral, 2, None)],
    "d": [Interval(Integral, 1, None)],
    "steps": [Interval(Integral, 1, None)],
    "lr": [Interval(Real, 0, None, closed="neither")],
})
def convergence_check(
    seed: int = 0, *, n: int = 6, T: int = 8, d: int = 10, steps: int = 2000, lr: float = 0.1
) -> ConvergenceCheck:
    """Train W by normalized GD on ``random_problem(n, T, d, seed)`` and correlate the final
    direction with ``W^mm`` of the selection it converged to.

    Returns a :class:`ConvergenceCheck`; its ``correlation`` is NaN if that selection's
    Att-SVM is infeasible (it never is for a converged run).
    """
    seed = int(seed)
    start = time.perf_counter()
    batch = ProblemBatch.random([seed], n, T, d)
    traj = train_attention(batch, "W", steps=steps, lr=lr, random_state=seed)
    track = track_svm(batch, traj, norms=("fro",))
    return ConvergenceCheck(
        correlation=float(track.final["fro"][0]),
        selection=[int(i) for i in traj.selection[0]],
        globally_optimal=bool(track.globally_optimal[0]),
        locally_optimal=bool(track.locally_optimal[0]),
        prob_selected=float(traj.prob_selected[0, -1]),
        norm=float(traj.norm[0, -1]),
        n=int(n), T=int(T), d=int(d), steps=int(steps), seed=seed,
        seconds=time.perf_counter() - start,
    )
