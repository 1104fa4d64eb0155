"""Compare training trajectories with the Att-SVM solutions of the selection they converged to.

Score convention ``score_t = x_t^T W z`` (``W = K Q^T`` when factorized). The correlation of
two matrices is the cosine of their flattened entries,
``corr(A, B) = <A, B>_F / (||A||_F ||B||_F)``; a trajectory "converges in direction" to
``W^mm`` when ``corr(W(k), W^mm) -> 1``.

Tarzanagh, Li, Zhang, Oymak, NeurIPS 2023 (arXiv 2306.13596); Tarzanagh, Li, Thrampoulidis,
Oymak, "Transformers as Support Vector Machines" (arXiv 2308.16898).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from attnlens._results import Status
from attnlens._validation import (
    Array,
    InstanceOf,
    Interval,
    Options,
    Real,
    check_array,
    check_option,
    raise_invalid,
    validate_params,
)
from attnlens.errors import InaccurateSolutionWarning, InfeasibleError
from attnlens.svm._numerics import SUPPORT_TOL
from attnlens.svm.attsvm import att_svm
from attnlens.svm.dynamics.training import ProblemBatch, Trajectory
from attnlens.svm.gensvm import METHODS as GEN_METHODS
from attnlens.svm.gensvm import gen_svm, project_out_fin  # noqa: F401  (re-exported)
from attnlens.svm.optimality import locally_optimal_sequences, support_from_margins

logger = logging.getLogger(__name__)

NORMS = ("fro", "nuc")
METHODS = ("auto", "cvxpy")
_FALLBACK_WARNED: list[str] = []
SOLVER_COUNTS = {"fast": 0, "cvxpy": 0}
# The fast certified solvers of attnlens.svm.att_svm; cvxpy stays the logged fallback.
DEFAULT_METHOD = "auto"


@validate_params({"A": [Array(finite=False)], "B": [Array(finite=False)]})
def correlation(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Cosine of the flattened last two axes of ``A`` and ``B`` (broadcast over the rest).

    NaN where either matrix is zero or NaN (an infeasible SVM has no direction).
    """
    A = np.asarray(A, dtype=np.float64)
    B = np.asarray(B, dtype=np.float64)
    if A.ndim < 2 or B.ndim < 2 or A.shape[-2:] != B.shape[-2:]:
        raise_invalid("B", f"(a stack of) matrices of the shape of A {A.shape[-2:]}",
                      f"got shape {B.shape}", "A and B must be matrices of one shape.",
                      "correlation")
    num = np.sum(A * B, axis=(-2, -1))
    den = np.sqrt(np.sum(A * A, axis=(-2, -1)) * np.sum(B * B, axis=(-2, -1)))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _solve(
    X: np.ndarray, Z: np.ndarray, selection: np.ndarray, norm: str, method: str | None
) -> np.ndarray:
    method = DEFAULT_METHOD if method is None else method
    check_option(method, "method", METHODS)
    if method == "auto":
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = att_svm(X, Z, selection, norm=norm)
            if res.status is Status.OPTIMAL:
                SOLVER_COUNTS["fast"] += 1
                return np.asarray(res.W, dtype=np.float64)
            reason = f"status {res.status}"
        except InfeasibleError as exc:
            reason = f"an infeasibility claim, checked with cvxpy ({type(exc).__name__})"
        except Exception as exc:  # noqa: BLE001 - any failure of the fast path -> reference
            reason = repr(exc)[:200]
        if reason not in _FALLBACK_WARNED:
            logger.warning("fast Att-SVM solver unusable (%s); using the cvxpy formulation",
                           reason)
            _FALLBACK_WARNED.append(reason)
    SOLVER_COUNTS["cvxpy"] += 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InaccurateSolutionWarning)
        return np.asarray(att_svm(X, Z, selection, norm=norm, method="cvxpy").W, dtype=np.float64)


@validate_params({
    "X": [Array(ndim=3)],
    "Z": [Array(ndim=2)],
    "selection": [Array(ndim=1, dtype=None)],
    "norm": [Options(*NORMS)],
    "method": [None, Options(*METHODS)],
})
def svm_solution(
    X: np.ndarray,
    Z: np.ndarray,
    selection: np.ndarray,
    norm: str = "fro",
    method: str | None = None,
) -> np.ndarray:
    """``W^mm`` (``norm="fro"``) or ``W^mm_*`` (``"nuc"``) of a selection; raises
    :class:`InfeasibleError` when the selection cannot be separated.

    ``method="cvxpy"`` solves the cvxpy (Clarabel) reference formulation
    (``attnlens.svm.att_svm(..., method="cvxpy")``). ``"auto"`` tries the fast certified
    solver :func:`attnlens.svm.att_svm` first and falls back to cvxpy, with a logged warning,
    when it fails, is not optimal, or reports an infeasibility (cvxpy then decides). ``None``
    uses ``DEFAULT_METHOD``. ``SOLVER_COUNTS`` records which solver produced each solution.
    The returned ``W`` has minimum margin exactly 1.
    """
    return _solve(X, Z, np.asarray(selection), norm, method)


@validate_params({
    "W_mm": [Array(ndim=2)],
    "X": [Array(ndim=3)],
    "Z": [Array(ndim=2)],
    "gamma": [Array(ndim=2)],
    "selection": [Array(ndim=1, dtype=None)],
    "support_tol": [Interval(Real, 0, None)],
})
def is_locally_optimal_at(
    W_mm: np.ndarray,
    X: np.ndarray,
    Z: np.ndarray,
    gamma: np.ndarray,
    selection: np.ndarray,
    support_tol: float = SUPPORT_TOL,
) -> bool:
    """Local optimality of a selection, read off its already solved ``W^mm`` (no solve).

    The margins ``(x_{i,a_i} - x_it)^T W_mm z_i`` are scaled to minimum 1; the support sets
    are the tokens with margin ``<= 1 + support_tol`` (as in
    :func:`attnlens.svm.optimality.support_from_margins`), and the test is
    :func:`attnlens.svm.optimality.locally_optimal_sequences`. To solve and test in one call
    use :func:`attnlens.svm.is_locally_optimal`.
    """
    n = X.shape[0]
    sel = np.asarray(selection)
    x_sel = X[np.arange(n), sel]  # (n, d)
    margins = np.einsum("id,de,ie->i", x_sel, W_mm, Z)[:, None] - np.einsum(
        "itd,de,ie->it", X, W_mm, Z
    )  # (n, T)
    margins[np.arange(n), sel] = np.inf
    margins = margins / margins.min()
    support = support_from_margins(margins, support_tol)
    return bool(locally_optimal_sequences(gamma, sel, support).all())


@dataclass(frozen=True)
class SVMTrack:
    """Per seed: the SVM solutions of the converged selection and the correlation path.

    W_mm: {"fro": (S, d, d), "nuc": (S, d, d)} (NaN where infeasible); feasible: {norm: (S,)};
    corr: {norm: (S, L)} corr(W(k), W^mm_norm) at the logged steps; final: {norm: (S,)};
    globally_optimal, locally_optimal: (S,) booleans of the converged selection.
    """

    W_mm: dict[str, np.ndarray]
    feasible: dict[str, np.ndarray]
    corr: dict[str, np.ndarray]
    final: dict[str, np.ndarray]
    globally_optimal: np.ndarray
    locally_optimal: np.ndarray

    def mean_final(self, norm: str) -> float:
        """Mean final correlation over the seeds whose SVM is feasible."""
        vals = self.final[norm][self.feasible[norm]]
        return float(np.mean(vals)) if vals.size else float("nan")


@validate_params({
    "batch": [InstanceOf(ProblemBatch)],
    "selection": [Array(ndim=2, dtype=None)],
    "norms": [InstanceOf(list, tuple, name="a list of norms ('fro', 'nuc')")],
    "progress": ["boolean"],
})
def svm_references(
    batch: ProblemBatch,
    selection: np.ndarray,
    norms: Sequence[str] = NORMS,
    progress: bool = False,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Per seed, the Att-SVM solutions of ``selection`` (S, n) for each norm.

    Returns ``(W_mm, feasible, globally_optimal, locally_optimal)``: ``W_mm[norm]`` (S, d, d),
    NaN where infeasible; ``feasible[norm]`` (S,); two (S,) boolean arrays.
    """
    for nm in norms:
        check_option(nm, "norms", NORMS)
    S, n, T, d = batch.shape
    sel = check_array(selection, "selection", shape=(S, n), dtype=None).astype(np.int64)
    gamma = batch.token_scores  # (S, n, T)
    W_mm = {nm: np.full((S, d, d), np.nan) for nm in norms}
    feasible = {nm: np.zeros(S, dtype=bool) for nm in norms}
    local = np.zeros(S, dtype=bool)
    it: Any = range(S)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="Att-SVM per seed", leave=False)
    for s in it:
        for nm in norms:
            try:
                W_mm[nm][s] = svm_solution(batch.X[s], batch.Z[s], sel[s], norm=nm)
                feasible[nm][s] = True
            except InfeasibleError:
                logger.info("seed %d: selection infeasible for norm %s", s, nm)
        ref = "fro" if "fro" in norms else norms[0]
        if feasible[ref][s]:
            local[s] = is_locally_optimal_at(W_mm[ref][s], batch.X[s], batch.Z[s], gamma[s], sel[s])
    glob = np.all(sel == gamma.argmax(axis=-1), axis=-1)
    return W_mm, feasible, glob, local


@validate_params({
    "batch": [InstanceOf(ProblemBatch)],
    "trajectory": [InstanceOf(Trajectory)],
    "norms": [InstanceOf(list, tuple, name="a list of norms ('fro', 'nuc')")],
    "selection": [None, Array(ndim=2, dtype=None)],
    "progress": ["boolean"],
})
def track_svm(
    batch: ProblemBatch,
    trajectory: Trajectory,
    norms: Sequence[str] = NORMS,
    selection: np.ndarray | None = None,
    progress: bool = False,
) -> SVMTrack:
    """Solve the Att-SVM(s) of each seed's converged selection and correlate the trajectory.

    ``selection`` (S, n) overrides the trajectory's converged selection.
    """
    for nm in norms:
        check_option(nm, "norms", NORMS)
    S = batch.shape[0]
    if len(trajectory) != S:
        raise_invalid("trajectory", f"a run of the batch's {S} seeds",
                      f"got {len(trajectory)} seeds", "Pass the batch it was trained on.",
                      "track_svm")
    sel = trajectory.selection if selection is None else selection
    W_mm, feasible, glob, local = svm_references(batch, sel, norms, progress)
    corr = {nm: correlation(trajectory.W, W_mm[nm][:, None]) for nm in norms}
    final = {nm: correlation(trajectory.W_final, W_mm[nm]) for nm in norms}
    return SVMTrack(W_mm, feasible, corr, final, glob, local)


# multi-token selections (non-linear heads): Gen-SVM, see attnlens.svm.gensvm
@validate_params({
    "X": [Array(ndim=3)],
    "Z": [Array(ndim=2)],
    "sets": [InstanceOf(list, tuple, np.ndarray, name="a list of n token-index collections")],
    "method": [Options(*GEN_METHODS)],
})
def gen_svm_direction(
    X: np.ndarray, Z: np.ndarray, sets: list[list[int]], method: str = "auto"
) -> np.ndarray:
    """The Gen-SVM direction (Frobenius) of selected sets: :func:`attnlens.svm.gensvm.gen_svm`.

    The official multi-token figure labels it ``W^mm``; its ``W^SVMeq`` is
    ``W^fin + R W^dir`` (:func:`attnlens.svm.svm_eq`).

    Raises :class:`InfeasibleError` when no W separates the sets.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InaccurateSolutionWarning)
        res = gen_svm(X, Z, sets, method=method)
    return np.asarray(res.W, dtype=np.float64)
