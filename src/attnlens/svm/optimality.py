r"""Local and global optimality of token selections, and a search for locally optimal ones.

Score convention: ``score_t = x_t^T W z`` (``W = K Q^T`` when factorized). For a problem with
token scores ``gamma_it = Y_i v^T x_it`` and a selection ``a`` (one token per sequence) whose
Att-SVM is feasible, with solution ``W^mm``:

* the support (neighbour) set of sequence ``i`` is
  :math:`\mathcal T_i = \{t \ne a_i : (x_{i,a_i} - x_{it})^\top W^{mm} z_i = 1\}`;
* ``a`` is *locally optimal* when :math:`\gamma_{i,a_i} > \gamma_{it}` for every
  :math:`t \in \mathcal T_i` and every ``i``;
* ``a`` is *globally optimal* when :math:`a_i = \mathrm{opt}_i = \arg\max_t \gamma_{it}` for
  every ``i`` (read as :math:`\gamma_{i,a_i} = \max_t \gamma_{it}`, so ties count).

Gradient descent on ``W`` converges in direction to ``W^mm`` of a locally optimal selection
(locally), and of the globally optimal one under the papers' conditions.

Tarzanagh, Li, Zhang, Oymak, "Max-Margin Token Selection in Attention Mechanism", NeurIPS 2023
(arXiv 2306.13596), Definition of locally optimal tokens and Theorem on local convergence;
Tarzanagh, Li, Thrampoulidis, Oymak, "Transformers as Support Vector Machines"
(arXiv 2308.16898), Definition 2 (support / neighbour sets).
"""

from __future__ import annotations

import heapq
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from attnlens._results import Status
from attnlens._validation import (
    Array,
    InstanceOf,
    Integral,
    Interval,
    Options,
    Real,
    check_array,
    raise_invalid,
    validate_params,
)
from attnlens.errors import InfeasibleError
from attnlens.svm._numerics import SUPPORT_TOL, support_mask
from attnlens.svm._solvers.constraints import _check_selection
from attnlens.svm.attsvm import METHODS, NORMS, AttSVMResult, att_svm_problem
from attnlens.svm.problems import TokenSelectionProblem

logger = logging.getLogger(__name__)

__all__ = [
    "LocalOptimum",
    "OptimalityReport",
    "SelectionSearch",
    "check_optimality",
    "is_globally_optimal",
    "is_locally_optimal",
    "locally_optimal_selections",
    "locally_optimal_sequences",
    "support_from_margins",
    "support_sets",
]

# ----------------------------------------------------------------------------------------
# pure functions (no solve)
# ----------------------------------------------------------------------------------------
@validate_params({
    "margins": [Array(ndim=2, finite=False)],
    "tol": [Interval(Real, 0, None)],
})
def support_from_margins(margins: np.ndarray, tol: float = SUPPORT_TOL) -> list[np.ndarray]:
    """Support sets ``T_i = {t : margin_it <= 1 + tol}`` of margins (n, T) of a feasible
    ``W^mm`` scaled to minimum margin 1; ``inf`` marks tokens that do not compete."""
    M = np.asarray(margins, dtype=np.float64)
    return [np.flatnonzero(row) for row in support_mask(M, tol)]


@validate_params({
    "gamma": [Array(ndim=2)],
    "selection": [Array(ndim=1, dtype=None)],
    "support": [InstanceOf(list, tuple, name="a list of n integer arrays")],
})
def locally_optimal_sequences(
    gamma: np.ndarray, selection: np.ndarray, support: list[np.ndarray]
) -> np.ndarray:
    """Per sequence, whether ``gamma_{i,a_i} > gamma_it`` for all ``t`` in ``support[i]``.

    gamma: (n, T) token scores; selection: (n,); support: n integer arrays. Returns (n,) bool.
    A sequence with an empty support set satisfies the condition.
    """
    gamma = np.asarray(gamma, dtype=np.float64)
    sel = np.asarray(selection, dtype=np.int64)
    n = gamma.shape[0]
    if sel.shape != (n,) or len(support) != n:
        raise_invalid("selection", f"of shape ({n},) with {n} support sets (gamma has n={n})",
                      f"got selection {sel.shape} and {len(support)} support sets",
                      "Describe the same n sequences.", "locally_optimal_sequences")
    out = np.ones(n, dtype=bool)
    for i, T_i in enumerate(support):
        T_i = np.asarray(T_i, dtype=np.int64)
        T_i = T_i[T_i != sel[i]]
        if T_i.size:
            out[i] = bool(np.all(gamma[i, sel[i]] > gamma[i, T_i]))
    return out


def _selection(problem: Any, selection: Any) -> np.ndarray:
    sel = problem.optimal_tokens if selection is None else selection
    return _check_selection(sel, (problem.n,), problem.T)


@validate_params({
    "problem": [InstanceOf(TokenSelectionProblem, name="a TokenSelectionProblem")],
    "selection": [None, Array(ndim=1, dtype=None)],
})
def is_globally_optimal(problem: Any, selection: Any) -> bool:
    """``gamma_{i,a_i} = max_t gamma_it`` for every sequence (no solve needed)."""
    sel = _selection(problem, selection)
    gamma = problem.token_scores
    return bool(np.all(gamma[np.arange(problem.n), sel] >= gamma.max(axis=1)))


# ----------------------------------------------------------------------------------------
# with a solve
# ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OptimalityReport:
    """Local/global optimality of one selection.

    selection: (n,); support: the support sets ``T_i`` of ``W^mm``; per_sequence: (n,) bool,
    the local condition per sequence; violations: ``(i, t)`` pairs with ``t in T_i`` and
    ``gamma_it >= gamma_{i,a_i}``; locally_optimal, globally_optimal: the verdicts;
    result: the Att-SVM solve they rest on.
    """

    selection: np.ndarray
    support: list[np.ndarray]
    per_sequence: np.ndarray
    violations: list[tuple[int, int]]
    locally_optimal: bool
    globally_optimal: bool
    result: AttSVMResult = field(repr=False)

    @property
    def objective(self) -> float:
        return self.result.objective


# the parameters of the functions that solve a selection's Att-SVM before testing it
_SOLVE_PARAMS = {
    "problem": [InstanceOf(TokenSelectionProblem, name="a TokenSelectionProblem")],
    "selection": [None, Array(ndim=1, dtype=None)],
    "norm": [Options(*NORMS)],
    "method": [Options(*METHODS)],
    "tol": [Interval(Real, 0, None, closed="neither")],
    "support_tol": [Interval(Real, 0, None)],
}


def _solve(problem: Any, sel: np.ndarray, norm: str, method: str, tol: float) -> AttSVMResult:
    return att_svm_problem(problem, sel, norm=norm, method=method, tol=tol)


@validate_params({**_SOLVE_PARAMS, "result": [None, InstanceOf(AttSVMResult)]})
def support_sets(
    problem: Any,
    selection: Any = None,
    *,
    norm: str = "fro",
    method: str = "auto",
    tol: float = 1e-7,
    support_tol: float = SUPPORT_TOL,
    result: AttSVMResult | None = None,
) -> list[np.ndarray]:
    """Support sets ``T_i`` of the Att-SVM solution of ``selection`` (default: optimal tokens).

    Solves :func:`attnlens.svm.att_svm` (``norm``, ``method``, ``tol``) unless ``result``, a
    solve of the same selection, is given. Raises :class:`~attnlens.errors.InfeasibleError`
    when the selection cannot be separated (there is no ``W^mm``, hence no support set).
    """
    sel = _selection(problem, selection)
    res = result if result is not None else _solve(problem, sel, norm, method, tol)
    if result is not None and not np.array_equal(np.asarray(result.selection), sel):
        raise_invalid("result", "a solve of the given selection",
                      "got one solved for another selection", "Drop result or match it.",
                      "support_sets")
    return support_from_margins(res.margins, support_tol)


@validate_params({**_SOLVE_PARAMS, "result": [None, InstanceOf(AttSVMResult)]})
def check_optimality(
    problem: Any,
    selection: Any = None,
    *,
    norm: str = "fro",
    method: str = "auto",
    tol: float = 1e-7,
    support_tol: float = SUPPORT_TOL,
    result: AttSVMResult | None = None,
) -> OptimalityReport:
    """Local and global optimality of ``selection`` with the evidence (support sets,
    violating pairs). ``norm="fro"`` (``W^mm``, the papers' definition) by default."""
    sel = _selection(problem, selection)
    res = result if result is not None else _solve(problem, sel, norm, method, tol)
    support = support_sets(problem, sel, result=res, support_tol=support_tol)
    gamma = problem.token_scores
    per = locally_optimal_sequences(gamma, sel, support)
    viol = [
        (int(i), int(t))
        for i in np.flatnonzero(~per)
        for t in support[i]
        if gamma[i, t] >= gamma[i, sel[i]]
    ]
    return OptimalityReport(
        selection=sel,
        support=support,
        per_sequence=per,
        violations=viol,
        locally_optimal=bool(per.all()),
        globally_optimal=is_globally_optimal(problem, sel),
        result=res,
    )


@validate_params(_SOLVE_PARAMS)
def is_locally_optimal(
    problem: Any,
    selection: Any = None,
    *,
    norm: str = "fro",
    method: str = "auto",
    tol: float = 1e-7,
    support_tol: float = SUPPORT_TOL,
) -> bool:
    """Whether ``selection`` is locally optimal (see the module docstring).

    Raises :class:`~attnlens.errors.InfeasibleError` when the selection's Att-SVM is
    infeasible: local optimality is not defined without ``W^mm``.
    """
    return check_optimality(
        problem, selection, norm=norm, method=method, tol=tol, support_tol=support_tol
    ).locally_optimal


# ----------------------------------------------------------------------------------------
# search
# ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LocalOptimum:
    """A locally optimal selection found by the search: selection (n,), the Att-SVM
    objective of its ``W^mm`` (``||W||`` in the searched norm), its total score
    ``sum_i gamma_{i,a_i}``, global optimality and support sets."""

    selection: np.ndarray
    objective: float
    score: float
    globally_optimal: bool
    support: list[np.ndarray]


@dataclass(frozen=True)
class SelectionSearch:
    """Outcome of :func:`locally_optimal_selections`.

    found: the locally optimal selections, in the order examined (non-increasing total score).
    candidates: selections solved; infeasible: of those, how many had no feasible Att-SVM
    (skipped, never reported as solutions); not_locally_optimal: feasible but failing the
    definition; unresolved: solves that did not reach ``status="optimal"`` (skipped).
    exhausted: True when every one of the ``T^n`` selections was examined, so ``found`` is
    the complete list; False when ``max_candidates`` or ``max_found`` stopped the search.
    """

    found: list[LocalOptimum]
    candidates: int
    infeasible: int
    not_locally_optimal: int
    unresolved: int
    exhausted: bool
    max_candidates: int
    norm: str
    method: str
    seconds: float

    @property
    def selections(self) -> np.ndarray:
        """(k, n) the found selections (k may be 0)."""
        if not self.found:
            return np.zeros((0, 0), dtype=np.int64)
        return np.stack([f.selection for f in self.found])

    @property
    def objectives(self) -> np.ndarray:
        """(k,) the Att-SVM objectives of the found selections."""
        return np.array([f.objective for f in self.found], dtype=np.float64)

    def summary(self) -> dict[str, Any]:
        """JSON-ready counts and the found selections."""
        return {
            "found": len(self.found),
            "candidates": self.candidates,
            "infeasible": self.infeasible,
            "not_locally_optimal": self.not_locally_optimal,
            "unresolved": self.unresolved,
            "exhausted": self.exhausted,
            "norm": self.norm,
            "method": self.method,
            "seconds": self.seconds,
            "selections": [f.selection.tolist() for f in self.found],
            "objectives": [f.objective for f in self.found],
            "globally_optimal": [f.globally_optimal for f in self.found],
        }


@validate_params({
    "problem": [InstanceOf(TokenSelectionProblem, name="a TokenSelectionProblem")],
    "max_candidates": [Interval(Integral, 1, None)],
    "max_found": [None, Interval(Integral, 1, None)],
    "norm": [Options(*NORMS)],
    "method": [Options(*METHODS)],
    "tol": [Interval(Real, 0, None, closed="neither")],
    "support_tol": [Interval(Real, 0, None)],
    "progress": ["boolean"],
})
def locally_optimal_selections(
    problem: Any,
    *,
    max_candidates: int = 200,
    max_found: int | None = None,
    norm: str = "fro",
    method: str = "auto",
    tol: float = 1e-7,
    support_tol: float = SUPPORT_TOL,
    progress: bool = False,
) -> SelectionSearch:
    r"""Find locally optimal selections of ``problem``, best total score first.

    Best-first enumeration over single-token moves: start from the optimal tokens
    (``a_i = opt_i``), and repeatedly examine the unexamined selection with the largest total
    score :math:`\sum_i \gamma_{i,a_i}`, queueing its neighbours (one sequence's token
    changed). Every selection is reachable from the optimum through moves that never raise
    the total score, so the examination order is exactly non-increasing total score, and a
    search that runs out of candidates (``exhausted=True``) has examined all ``T^n``
    selections. Each examined selection costs one Att-SVM solve (``norm``, ``method``):
    infeasible ones are counted in ``infeasible`` and skipped; feasible ones are tested with
    the definition (support sets of ``W^mm`` with ``support_tol``).

    Parameters
    ----------
    problem : a :class:`~attnlens.svm.problems.TokenSelectionProblem` (cross or self).
    max_candidates : number of selections to solve at most (bounded work).
    max_found : stop after this many locally optimal selections (default: no limit).
    norm, method, tol : passed to :func:`attnlens.svm.att_svm`. The papers' definition uses
        ``norm="fro"``.
    progress : show a progress bar.

    Returns
    -------
    :class:`SelectionSearch`
    """
    max_candidates = int(max_candidates)
    gamma = check_array(problem.token_scores, "problem.token_scores", ndim=2)
    n, T = gamma.shape
    start_time = time.perf_counter()
    opt = tuple(int(a) for a in np.argmax(gamma, axis=1))
    rows = np.arange(n)

    def score(sel: tuple[int, ...]) -> float:
        return float(gamma[rows, list(sel)].sum())

    heap: list[tuple[float, tuple[int, ...]]] = [(-score(opt), opt)]
    seen = {opt}
    found: list[LocalOptimum] = []
    counts = {"candidates": 0, "infeasible": 0, "not_local": 0, "unresolved": 0}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=max_candidates, desc="locally optimal selections", leave=False)
    try:
        while heap and counts["candidates"] < max_candidates:
            if max_found is not None and len(found) >= max_found:
                break
            neg_score, sel_t = heapq.heappop(heap)
            # queue the neighbours first: completeness does not depend on feasibility
            for i in range(n):
                for t in range(T):
                    if t != sel_t[i]:
                        nb = sel_t[:i] + (t,) + sel_t[i + 1 :]
                        if nb not in seen:
                            seen.add(nb)
                            heapq.heappush(heap, (-score(nb), nb))
            counts["candidates"] += 1
            if bar is not None:
                bar.update(1)
            sel = np.array(sel_t, dtype=np.int64)
            try:
                res = _solve(problem, sel, norm, method, tol)
            except InfeasibleError:
                counts["infeasible"] += 1
                continue
            if res.status is not Status.OPTIMAL:
                counts["unresolved"] += 1
                logger.info("selection %s: Att-SVM status %s; skipped", sel_t, res.status)
                continue
            rep = check_optimality(problem, sel, result=res, support_tol=support_tol)
            if rep.locally_optimal:
                found.append(
                    LocalOptimum(
                        selection=sel,
                        objective=res.objective,
                        score=-neg_score,
                        globally_optimal=rep.globally_optimal,
                        support=rep.support,
                    )
                )
            else:
                counts["not_local"] += 1
    finally:
        if bar is not None:
            bar.close()
    return SelectionSearch(
        found=found,
        candidates=counts["candidates"],
        infeasible=counts["infeasible"],
        not_locally_optimal=counts["not_local"],
        unresolved=counts["unresolved"],
        exhausted=not heap,
        max_candidates=max_candidates,
        norm=norm,
        method=method,
        seconds=time.perf_counter() - start_time,
    )
