r"""Tightening the ReLU program's bracket: column generation plus a cone-aware dual bound.

Sahiner et al., "Unraveling Attention via Convex Duality", ICML 2022 (arXiv 2205.08078);
Pilanci & Ergen, ICML 2020; Sahiner et al., ICLR 2021 (vector outputs: the cone-constrained
nuclear norm). For a fixed set ``S`` of sampled gate patterns :func:`attnlens.convex.relu.solve_relu`
returns a bracket ``lower_bound <= P_relu(S) <= objective``: ``objective = P_dict`` is attained by
a ReLU network whose units use a fixed dictionary of right directions, ``lower_bound`` is the
certified dual value of the gated relaxation (cones dropped). :func:`refine_bracket` narrows it
**for the same target** ``P_relu(S)`` (the patterns are not changed: adding patterns would lower
the target itself).

Dual. For a residual ``R = grad f`` at any point, block ``j``'s dual constraint is the
cone-restricted operator norm of ``H_j = -A_j^*(R)`` (p x q c),

.. math::  \gamma_j = \max_{w \in \mathcal K_j, \|w\| \le 1,\ \|v\| \le 1} w^\top H_j v
   = \max_{w \in \mathcal K_j, \|w\| \le 1} \|H_j^\top w\|,

and ``t = min(1, beta / max_j gamma_j)`` makes ``-t R`` dual feasible, so ``loss.dual_value(R,
Y, t) <= P_relu(S)``. Any *upper bound* on ``gamma_j`` keeps this valid; the gated relaxation
uses ``||H_j||_2``, loose on narrow cones.

* **Lower end** (:func:`cone_norm_upper`): with ``H = sum_k sigma_k u_k v_k^T`` (SVD) and
  ``c_k = max_{w in K, ||w|| <= 1} |u_k^T w|`` -- computed as ``max(||u_k + C^T mu||, ||-u_k +
  C^T mu'||)`` for the non-negative multipliers ``mu`` of the exact projection, an upper bound
  whatever the projection's accuracy, since ``u^T w <= (u + C^T mu)^T w`` on the cone --
  every unit ``w`` in the cone has
  ``||H^T w||^2 <= sigma_{r+1}^2 + sum_{k<=r} (sigma_k^2 - sigma_{r+1}^2) c_k^2`` for every
  ``r``; the minimum over ``r`` is the bound (``r = 0`` is the spectral norm). The dual point
  is the residual at the current dictionary solution (and the gated relaxation's value is
  kept: the reported lower bound is the larger one).
* **Upper end** (column generation): a direction ``v`` with
  ``max(||Pi_K(H v)||, ||Pi_K(-H v)||) > beta`` is a column of negative reduced cost; it is
  found by alternating ``w <- Pi_K(H v)/||.||``, ``v <- H^T w/||.||`` (a local maximizer, from
  the top singular pairs and the cone-projected left singular vectors), added to the block's
  dictionary, and the restricted program is re-solved warm-started from the previous cone
  variables (padded with zeros: the same network). The attained objective never increases.

Stopping rule: stop when the relative width ``(objective - lower) / objective <= bracket_tol``
(status ``optimal``), when no block has a violated direction (``optimal_inaccurate``: the
dictionary solution is locally optimal, the remaining width is the lower bound's), or after
``max_rounds`` re-solves (``max_iter``). Both ends are monotone over the rounds. Re-solves run
to a certificate ``max(tol, min(bracket_tol / 10, width / 100))`` (both ends are valid at any
accuracy); a last warm-started solve brings the reported certificate to ``tol`` (its bracket
replaces the last round's when it is better).
"""

from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np

from attnlens._results import Status
from attnlens._validation import (
    Array,
    InstanceOf,
    Integral,
    Interval,
    Options,
    Real,
    raise_invalid,
    validate_params,
)
from attnlens.convex._linalg import DEFAULT_SEED
from attnlens.convex.cones import ConeBlock
from attnlens.convex.losses import LOSSES, Loss, get_loss
from attnlens.convex.operators import check_targets
from attnlens.convex.relu import RELU_SOLVERS, check_relu_solver, solve_relu
from attnlens.convex.relu_program import ReluProgram
from attnlens.convex.results import BracketInfo, ConvexResult

logger = logging.getLogger(__name__)

__all__ = ["cone_norm_upper", "cone_norm_search", "relu_lower_bound", "refine_bracket",
           "solve_relu_bracket"]

#: relative safety factor on the upper bound of a cone-restricted norm (float rounding)
_SAFETY = 1e-10
#: cutting-plane rounds spent on each ``c_k`` bound (any round's multipliers give a valid one)
BOUND_ROUNDS = 64


def _projection_bound(cone: ConeBlock, U: np.ndarray) -> np.ndarray:
    """``max_{w in K, ||w|| <= 1} u^T w`` bounded from above, for every column ``u`` of ``U``.

    ``cone.project_or_bound`` returns ``u + C^T mu`` with ``mu >= 0``; its norm bounds
    ``u^T w`` on the unit ball of the cone whether or not the projection is exact
    (``mu^T C w >= 0``), so the cutting plane may stop after :data:`BOUND_ROUNDS` rounds.
    """
    P, _, _ = cone.project_or_bound(U, None, max_rounds=BOUND_ROUNDS)
    return np.linalg.norm(P, axis=0)


def cone_norm_upper(H: np.ndarray, cone: ConeBlock, max_rank: int | None = None,
                    floor: float = 0.0, batch: int = 4) -> float:
    r"""An upper bound on :math:`\max_{w \in K, \|w\| \le 1} \|H^\top w\|` (module doc).

    ``H`` (p, q). Uses the ``max_rank`` leading singular pairs (all by default); never above
    ``||H||_2``. The ``c_k`` are bounded ``batch`` singular vectors at a time, leading first,
    and the work stops as soon as the bound is at most ``floor`` (a caller that only needs to
    know the value is below ``floor`` -- the result is then some valid bound ``<= floor``) or
    no later ``r`` can improve it: with ``Q = sum_{k<=r} c_k^2`` and ``P = sum_{k<=r}
    sigma_k^2 c_k^2``, every ``r' >= r`` gives at least ``P + t (1 - Q)`` for ``Q <= 1`` (``t``
    the smallest tail ``sigma_{r'+1}^2`` left) and ``P - sigma_{r+1}^2 (Q - 1)`` otherwise.
    """
    U, S, _ = np.linalg.svd(H, full_matrices=False)
    r_max = S.size if max_rank is None else min(int(max_rank), S.size)
    if r_max == 0 or S[0] == 0.0:
        return 0.0
    s2 = S**2
    tails = np.append(s2[1:], 0.0)  # sigma_{r+1}^2 for r = 1..S.size
    t_min = tails[r_max - 1]
    best = s2[0]
    floor2 = (float(floor) / (1.0 + _SAFETY)) ** 2
    c = np.zeros(0)
    while c.size < r_max and best > floor2:
        Ur = U[:, c.size:min(c.size + batch, r_max)]
        cb = np.maximum(_projection_bound(cone, Ur), _projection_bound(cone, -Ur))
        c = np.concatenate([c, np.minimum(cb, 1.0)])  # |u^T w| <= 1 on the unit ball anyway
        cs2 = c**2
        for r in range(c.size - cb.size + 1, c.size + 1):
            best = min(best, tails[r - 1] + float(np.sum((s2[:r] - tails[r - 1]) * cs2[:r])))
        Q, P = float(np.sum(cs2)), float(np.sum(s2[:c.size] * cs2))
        reachable = P + t_min * (1.0 - Q) if Q <= 1.0 else P - tails[c.size - 1] * (Q - 1.0)
        if reachable >= best:
            break
    return float(np.sqrt(max(best, 0.0)) * (1.0 + _SAFETY))


def cone_norm_search(H: np.ndarray, cone: ConeBlock, n_starts: int = 4, iters: int = 50,
                     rng: np.random.Generator | None = None):
    r"""Local maximizers of :math:`\|\Pi_K(\pm H v)\|` over unit ``v`` (a lower estimate).

    Alternates ``w <- Pi_K(H v) / ||.||`` and ``v <- H^T w / ||.||`` from the ``n_starts``
    leading right singular vectors (both signs), the directions ``H^T Pi_K(+-u_k)`` of the
    leading left ones, and one random start. Returns ``(values, V)``: the values reached and
    the unit directions (columns of ``V``), best first.
    """
    rng = rng if rng is not None else np.random.default_rng(DEFAULT_SEED)
    p, q = H.shape
    U, S, Vt = np.linalg.svd(H, full_matrices=False)
    k = min(n_starts, S.size)
    starts = [Vt[:k].T, -Vt[:k].T]
    Uk = U[:, :k]
    for sign in (1.0, -1.0):
        W, _ = cone.project(sign * Uk, None)
        starts.append(H.T @ W)
    starts.append(rng.standard_normal((q, 1)))
    V = np.hstack(starts)
    nrm = np.linalg.norm(V, axis=0)
    V = V[:, nrm > 0] / nrm[nrm > 0]
    warm = None
    vals = np.zeros(V.shape[1])
    for _ in range(iters):
        W, warm = cone.project(H @ V, warm)
        vals = np.linalg.norm(W, axis=0)
        live = vals > 0
        if not live.any():
            break
        Vn = H.T @ (W[:, live] / vals[live])
        Vn /= np.maximum(np.linalg.norm(Vn, axis=0), 1e-300)
        done = np.max(np.linalg.norm(Vn - V[:, live], axis=0)) < 1e-9
        V = Vn
        vals = vals[live]
        warm = warm[live]
        if done:
            break
    W, _ = cone.project(H @ V, warm if warm is not None and warm.shape[0] == V.shape[1]
                        else None)
    vals = np.linalg.norm(W, axis=0)
    order = np.argsort(-vals)
    return vals[order], V[:, order]


def relu_lower_bound(program: ReluProgram, R: np.ndarray, Y: np.ndarray, beta: float,
                     loss: str | Loss) -> tuple[float, list[float]]:
    """A valid lower bound on ``P_relu(S)`` from the residual ``R = grad f`` (module doc).

    Returns ``(bound, gammas)`` with ``gammas[j]`` an upper bound on block ``j``'s
    cone-restricted dual norm. Blocks are bounded in decreasing order of ``||H_j||_2``, each
    only until it is known to be at most ``max(beta, the largest gamma so far)`` (the bound
    uses only the maximum; a block's spectral norm at or below it is kept as its gamma), so
    the bound is the one of the full per-block bounds, and ``gammas`` may be looser than
    those below the maximum.
    """
    loss = get_loss(loss, "relu_lower_bound")
    Hs = [-blk.adjoint(R) for blk in program.blocks]
    spectral = [float(np.linalg.norm(H, 2)) if H.size else 0.0 for H in Hs]
    gammas = list(spectral)
    gmax = beta  # only max(beta, max_j gamma_j) enters the bound
    for j in np.argsort(spectral)[::-1]:  # largest first: the others may stop at the max
        if spectral[j] > gmax:
            gammas[j] = cone_norm_upper(Hs[j], program.cones[j], floor=gmax)
            gmax = max(gmax, gammas[j])
            logger.debug("block %d: dual norm <= %.4g beta (spectral %.4g beta)", j,
                         gammas[j] / beta, spectral[j] / beta)
    return loss.dual_value(R, Y, beta / gmax), gammas  # gmax >= beta: t = min(1, beta/max)


def _pad(X: np.ndarray, k_old: int, k_new: int) -> np.ndarray:
    """Cone variables for ``[G, -G]`` (p, 2 k_old) -> for ``[G, V, -G, -V]`` (p, 2 k_new)."""
    out = np.zeros((X.shape[0], 2 * k_new))
    out[:, :k_old] = X[:, :k_old]
    out[:, k_new:k_new + k_old] = X[:, k_old:]
    return out


def _new_directions(vals: np.ndarray, V: np.ndarray, G: np.ndarray, threshold: float,
                    max_new: int) -> np.ndarray:
    """Violated directions (value > threshold), not parallel to each other or to ``G``."""
    keep = []
    basis = G / np.maximum(np.linalg.norm(G, axis=0), 1e-300)
    for val, v in zip(vals, V.T, strict=True):
        if val <= threshold or len(keep) >= max_new:
            break
        ref = np.hstack([basis] + [k[:, None] for k in keep]) if keep else basis
        if ref.size and np.max(np.abs(ref.T @ v)) > 1 - 1e-6:
            continue
        keep.append(v)
    return np.stack(keep, axis=1) if keep else np.zeros((G.shape[0], 0))


@validate_params({
    "program": [InstanceOf(ReluProgram, name="a ReluProgram (build_program(..., 'relu', ...))")],
    "Y": [Array(ndim=2)],
    "beta": [Interval(Real, 0, None, closed="neither")],
    "loss": [Options(*LOSSES)],
    "result": [InstanceOf(ConvexResult)],
    "bracket_tol": [Interval(Real, 0, 1, closed="neither")],
    "max_rounds": [Interval(Integral, 0, None)],
    "max_new": [Interval(Integral, 1, None)],
    "solver": [Options(*RELU_SOLVERS)],
    "tol": [Interval(Real, 0, None, closed="neither")],
    "max_iter": [Interval(Integral, 1, None)],
    "rng": [None, InstanceOf(np.random.Generator)],
    "callback": [None, "callable"],
    "on_resolve": [None, "callable"],
})
def refine_bracket(program: ReluProgram, Y: np.ndarray, beta: float, loss: str,
                   result: ConvexResult, *, bracket_tol: float = 1e-2, max_rounds: int = 10,
                   max_new: int = 4, solver: str = "auto", tol: float = 1e-6,
                   max_iter: int = 20000, rng: np.random.Generator | None = None,
                   callback=None, on_resolve=None) -> tuple[ReluProgram, ConvexResult]:
    """Narrow the bracket ``[lower_bound, objective]`` of ``P_relu(S)`` (module doc).

    ``result`` is what solving ``program`` returned (its ``cone_factors`` carry the
    dictionary, which refinement extends). ``bracket_tol``: stop once the relative width
    ``(objective - lower_bound) / objective`` is at most this; ``max_rounds``: at most this
    many re-solves of the restricted program; ``max_new``: directions added per block and
    round; ``callback(round, lower, upper)``, if given, is called with every round's bracket as
    soon as it is known (progress of a long run); ``on_resolve(rounds, result)``, if given, is
    called after every re-solve with the best result so far (its ``lower_bound`` the bracket's
    lower end, its ``cone_factors`` the enlarged dictionary): passing that ``result`` back, with
    ``max_rounds`` less the ``rounds`` done and the ``rng`` in the state it had then, continues
    the refinement where it stopped (a resumable long run). Returns ``(program, result)``: the enlarged
    program and the best result, whose
    ``objective`` is attained by its ``cone_factors`` (a ReLU network), ``lower_bound`` is a
    certified lower bound on ``P_relu(S)`` and ``bracket`` the :class:`BracketInfo`.
    """
    start = time.perf_counter()
    Y = check_targets(program, Y, "refine_bracket")
    loss = get_loss(loss, "refine_bracket")
    check_relu_solver(solver, "refine_bracket")
    rng = rng if rng is not None else np.random.default_rng(DEFAULT_SEED)
    if result.cone_factors is None or len(result.cone_factors) != len(program.blocks):
        raise_invalid("result", "the result of solving this ReLU program (cone_factors, one "
                      "per block)", result, "Pass what solve_relu(program, ...) returned.",
                      "refine_bracket")
    # the dictionary the result was solved on (E_j = [G_j, -G_j])
    program = dataclasses.replace(program, directions=[E[:, : E.shape[1] // 2]
                                                       for _, E in result.cone_factors])
    restricted, _ = RELU_SOLVERS[solver]
    upper0, lower0 = float(result.objective), float(result.lower_bound)
    lower = lower0 if np.isfinite(lower0) else -np.inf
    best = result
    uppers, lowers, added, iters = [], [], [], 0
    status, rounds = Status.MAX_ITER, 0
    while True:
        Zs = best.Z
        R = loss.gradient(program.forward(Zs), Y)
        lb, _ = relu_lower_bound(program, R, Y, beta, loss)
        lower = max(lower, lb)
        upper = float(best.objective)
        uppers.append(upper)
        lowers.append(lower)
        width = (upper - lower) / max(abs(upper), 1e-12)
        logger.info("bracket round %d: [%.6g, %.6g] width %.3e", rounds, lower, upper, width)
        if callback is not None:
            callback(rounds, lower, upper)
        if width <= bracket_tol:
            status = Status.OPTIMAL
            break
        if rounds >= max_rounds:
            status = Status.MAX_ITER
            break
        threshold = beta * (1.0 + 0.5 * bracket_tol)
        new_dirs, n_added = [], 0
        for blk, cone, G in zip(program.blocks, program.cones, program.directions,
                                strict=True):
            if G.shape[0] == 1:  # one column: {+1, -1} is complete
                new_dirs.append(np.zeros((1, 0)))
                continue
            vals, V = cone_norm_search(-blk.adjoint(R), cone, rng=rng)
            new = _new_directions(vals, V, G, threshold, max_new)
            new_dirs.append(new)
            n_added += new.shape[1]
        if n_added == 0:
            status = Status.OPTIMAL_INACCURATE
            break
        old = [G.shape[1] for G in program.directions]
        program = dataclasses.replace(
            program, directions=[np.hstack([G, N]) for G, N in zip(program.directions, new_dirs,
                                                                    strict=True)])
        X0 = [_pad(X, k, G.shape[1]) for (X, _), k, G in
              zip(best.cone_factors, old, program.directions, strict=True)]
        # the ends are valid at any accuracy: re-solve only as accurately as the width asks
        inner = max(tol, min(0.1 * bracket_tol, 0.01 * width))
        res = restricted(program, Y, beta, loss, tol=inner, max_iter=max_iter, rng=rng,
                         progress=False, x0=X0)
        rounds += 1
        iters += int(res.iterations)
        added.append(n_added)
        if res.objective <= best.objective:
            best = res
        if on_resolve is not None:
            on_resolve(rounds, dataclasses.replace(best, lower_bound=lower))
    if rounds and best.certificate > tol:  # polish: the reported certificate meets ``tol``
        program = dataclasses.replace(program, directions=[E[:, : E.shape[1] // 2]
                                                           for _, E in best.cone_factors])
        res = restricted(program, Y, beta, loss, tol=tol, max_iter=max_iter, rng=rng,
                         progress=False, x0=[X for X, _ in best.cone_factors])
        iters += int(res.iterations)
        if res.objective <= best.objective:
            best = res
            R = loss.gradient(program.forward(best.Z), Y)
            lower = max(lower, relu_lower_bound(program, R, Y, beta, loss)[0])
            uppers[-1], lowers[-1] = float(best.objective), lower
    info = BracketInfo(status=status, rounds=rounds, upper=uppers, lower=lowers,
                       directions_added=added, initial_width=(upper0 - lowers[0]) / max(
                           abs(upper0), 1e-12) if np.isfinite(lowers[0]) else float("inf"),
                       width=(uppers[-1] - lowers[-1]) / max(abs(uppers[-1]), 1e-12),
                       relaxation_lower_bound=lower0, iterations=iters,
                       seconds=time.perf_counter() - start)
    return program, dataclasses.replace(best, lower_bound=lowers[-1], bracket=info)


@validate_params({
    "program": [InstanceOf(ReluProgram, name="a ReluProgram (build_program(..., 'relu', ...))")],
    "Y": [Array(ndim=2)],
    "beta": [Interval(Real, 0, None, closed="neither")],
    "loss": [Options(*LOSSES)],
    "bracket_tol": [Interval(Real, 0, 1, closed="neither")],
    "max_rounds": [Interval(Integral, 0, None)],
    "solver": [Options(*RELU_SOLVERS)],
    "tol": [Interval(Real, 0, None, closed="neither")],
    "max_iter": [Interval(Integral, 1, None)],
    "rng": [None, InstanceOf(np.random.Generator)],
})
def solve_relu_bracket(program: ReluProgram, Y: np.ndarray, beta: float, loss: str, *,
                       bracket_tol: float = 1e-2, max_rounds: int = 10, solver: str = "auto",
                       tol: float = 1e-6, max_iter: int = 20000,
                       rng: np.random.Generator | None = None,
                       progress: bool = False) -> ConvexResult:
    """:func:`~attnlens.convex.relu.solve_relu`, then :func:`refine_bracket` on its dictionary."""
    Y = check_targets(program, Y, "solve_relu_bracket")
    res = solve_relu(program, Y, beta, loss, solver=solver, tol=tol, max_iter=max_iter,
                     rng=rng, progress=progress)
    _, out = refine_bracket(program, Y, beta, loss, res, bracket_tol=bracket_tol,
                            max_rounds=max_rounds, solver=solver, tol=tol, max_iter=max_iter,
                            rng=rng)
    return out
