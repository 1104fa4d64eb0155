r"""The ReLU program: cone-constrained convex heads, solved by projected FISTA.

Sahiner et al., "Unraveling Attention via Convex Duality", ICML 2022 (arXiv 2205.08078);
Pilanci & Ergen, "Neural networks are convex regularizers", ICML 2020; Sahiner et al.,
"Vector-output ReLU neural network problems are copositive programs", ICLR 2021; Mishkin,
Sahiner & Pilanci, "Fast convex optimization for two-layer ReLU networks", ICML 2022 (pyscnn).

For sampled gates ``h_j`` with patterns ``D_j`` the ReLU head's training problem, restricted to
units whose activation pattern on the training data is one of the ``D_j``, is

.. math::  \min_{Z_j}\ f\Big(\sum_j \mathcal A_j(Z_j)\Big) + \beta \sum_j \|Z_j\|_{*,\mathcal K_j},
   \qquad \|Z\|_{*,\mathcal K} = \min\Big\{\sum_k \|w_k\|\|v_k\| :
   Z = \sum_k w_k v_k^\top,\ w_k \in \mathcal K\Big\}

with ``A_j`` the gated operator of pattern ``D_j`` and ``K_j`` the cone of
:mod:`attnlens.convex.cones`. The cone-constrained nuclear norm is NP-hard to evaluate in
general (a copositive program). attnlens solves the **restriction** to a fixed dictionary of
unit right directions ``g_1..g_K`` per block (signed: ``E_j = [G_j, -G_j]``):

.. math::  P_{\mathrm{dict}} = \min_{x_{jk} \in \mathcal K_j}\
   f\Big(\sum_j \mathcal A_j\big(\textstyle\sum_k x_{jk} e_{jk}^\top\big)\Big)
   + \beta \sum_{j,k} \|x_{jk}\|_2

(a group lasso with linear cone constraints). Every feasible point is a ReLU network with the
same outputs on the training data and the same regularized objective (unit ``k``: first layer
``sqrt(||x||) x/||x||``, second layer ``sqrt(||x||) e_k``), so ``P_dict`` is attained.
Bounds: ``P_gated <= P_relu(patterns) <= P_dict``, where ``P_gated`` is the gated-ReLU program
on the same patterns (drop the cones: a relaxation), whose certified dual value is reported as
``lower_bound``. With a one-column block (``q c = 1``: MLP or FNO with one output) the signed
dictionary ``{+1, -1}`` is complete and ``P_dict = P_relu`` exactly (Pilanci & Ergen's program,
pyscnn's ``ConvexReLU``). The default dictionary is the output-coordinate axes (pyscnn's
one-vs-all extension) plus the right singular vectors of the gated-relaxation solution.

Solver (:func:`cone_fista`): accelerated proximal gradient whose prox is exact --
``prox(z) = shrink_beta(Pi_K(z))`` for a convex cone --
:meth:`attnlens.convex.cones.ConeBlock.prox` (columns that shrink to zero are not projected);
iterates are feasible and no penalty parameter is tuned. Certificate (:func:`attnlens.convex.relu_program.certify_relu`): a residual floating-point violation is repaired by
moving the column along the gate generator ``h_j`` (inside ``K_j``) before the primal value is
taken; the dual point ``t grad f`` with ``t = min(1, beta / max_k ||Pi_K(-A^* grad f e_k)||)``
is dual feasible (the dual norm of a cone-constrained column is computed exactly by one
projection), so ``(P - D) / P`` bounds the relative suboptimality for ``P_dict``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable

import numpy as np

from attnlens._results import Status
from attnlens._validation import raise_invalid
from attnlens.convex._linalg import DEFAULT_SEED, progress_bar, svd
from attnlens.convex._reference import solve_relu_cvxpy
from attnlens.convex.losses import Loss, get_loss
from attnlens.convex.nuclear import solve_nuclear
from attnlens.convex.relu_program import ReluCertificate, ReluProgram, certify_relu
from attnlens.convex.results import ConvexResult, with_tolerance

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------ solver


def _smooth_norm_sq(program: ReluProgram, rng: np.random.Generator, iters: int = 25) -> float:
    Xs = [rng.standard_normal(X.shape) for X in program.x_zeros()]
    lam = 0.0
    for _ in range(iters):
        nrm = np.sqrt(sum(np.sum(X**2) for X in Xs))
        if nrm == 0:
            return 0.0
        Xs = [X / nrm for X in Xs]
        new = program.grad_x(program.forward_x(Xs))
        lam = float(sum(np.sum(a * b) for a, b in zip(Xs, new, strict=True)))
        Xs = new
    return lam


#: the dual part of the certificate is spaced out while the certificate is this far above tol
FAR_FROM_TOL = 10.0
#: ... by at most this many times ``check_every``
MAX_DUAL_SPACING = 8


def _dual_spacing(spacing: int, check_every: int, ratio: float, cold: int) -> int:
    """Iterations to the next dual evaluation: doubled (up to ``MAX_DUAL_SPACING`` checks)
    while the certificate is ``FAR_FROM_TOL`` above ``tol`` and the evaluation needed ``cold``
    cutting-plane projections (the expensive kind), else every check. Only the stopping test
    waits: the iterates are the same."""
    if ratio > FAR_FROM_TOL and cold > 0:
        return min(2 * spacing, MAX_DUAL_SPACING * check_every)
    return check_every


def cone_fista(program: ReluProgram, Y: np.ndarray, beta: float, loss: str | Loss, *,
               tol: float = 1e-6, max_iter: int = 20000, check_every: int = 10,
               rng: np.random.Generator | None = None, progress: bool = False,
               x0: list[np.ndarray] | None = None):
    """Accelerated proximal gradient with the exact prox of ``beta ||x|| + I_K(x)``.

    For a convex cone ``K`` that prox is ``shrink_beta(Pi_K(z))`` (project, then shrink the
    norm), so every iterate is feasible and the step size is set by the loss alone
    (``1/L``, ``L = ||A||^2`` times the loss curvature): no penalty parameter. Gradient
    restarts (O'Donoghue & Candes 2015); the certificate of :func:`certify_relu` every
    ``check_every`` iterations (its dual part spaced out while it is far above ``tol`` and
    needs cutting-plane projections, :func:`_dual_spacing`). ``x0``: a warm start (cone
    variables shaped like ``program.x_zeros()``; projected onto the cones first). Returns a
    :class:`~attnlens.convex.solvers.ConvexResult`.
    """
    start = time.perf_counter()
    loss = get_loss(loss, "cone_fista")
    rng = rng if rng is not None else np.random.default_rng(DEFAULT_SEED)
    n = Y.shape[0]
    L = max(1.05 * _smooth_norm_sq(program, rng) * loss.curvature / n, 1e-12)
    X = program.x_zeros()
    warm = [None] * len(X)
    if x0 is not None:  # the warm start's own active sets start the projections
        X = [cone.project(np.asarray(x, dtype=np.float64), None)[0]
             for x, cone in zip(x0, program.cones, strict=True)]
        warm = [cone.active_sets(x) for x, cone in zip(X, program.cones, strict=True)]
    Yx = [x.copy() for x in X]
    cwarm = None
    next_dual, spacing = check_every, check_every  # iterations between dual evaluations
    t = 1.0
    status, it = Status.MAX_ITER, 0
    cert: ReluCertificate | None = None
    prev = np.inf
    bar = progress_bar(progress, max_iter, "relu")
    for it in range(1, max_iter + 1):
        g = program.grad_x(loss.gradient(program.forward_x(Yx), Y))
        Xn = []
        for b, (y, gj, cone) in enumerate(zip(Yx, g, program.cones, strict=True)):
            P, warm[b] = cone.prox(y - gj / L, beta / L, warm[b])
            Xn.append(P)
        inner = sum(np.sum((y - zn) * (zn - z)) for y, zn, z in zip(Yx, Xn, X, strict=True))
        if inner > 0:
            t = 1.0
        t_new = 0.5 * (1 + np.sqrt(1 + 4 * t * t))
        mom = (t - 1) / t_new
        Yx = [zn + mom * (zn - z) for zn, z in zip(Xn, X, strict=True)]
        X, t = Xn, t_new
        if it % check_every == 0 or it == max_iter:
            full = it >= next_dual or it == max_iter
            calls = sum(cone.nnls_calls for cone in program.cones) if full else 0
            cert = certify_relu(program, X, Y, beta, loss, cwarm, dual=full)
            if full:
                cwarm = cert.warm
                cold = sum(cone.nnls_calls for cone in program.cones) - calls
                ratio = cert.certificate / tol if tol > 0 else np.inf
                spacing = _dual_spacing(spacing, check_every, ratio, cold)
                next_dual = it + spacing
                logger.debug("relu fista it %d: primal %.8g certificate %.2e", it,
                             cert.primal, cert.certificate)
            if cert.primal > prev * (1 + 1e-9) + 1e-15:  # safeguard: step too long
                L *= 2.0
                Yx, t = [x.copy() for x in X], 1.0
            prev = min(prev, cert.primal)
            if bar is not None:
                bar.update(check_every)
                if full:
                    bar.set_postfix(cert=f"{cert.certificate:.2e}")
            if cert.certificate <= tol and cert.repairable:
                status = Status.OPTIMAL
                break
    if bar is not None:
        bar.close()
    if cert is None:
        cert = certify_relu(program, X, Y, beta, loss)
    return ConvexResult(objective=cert.primal, status=status, certificate=cert.certificate,
                        iterations=it, seconds=time.perf_counter() - start,
                        method="relu-fista", Z=program.zs(cert.X),
                        duality_gap=cert.primal - cert.dual, dual_objective=cert.dual,
                        grad_ratio=cert.grad_ratio,
                        cone_factors=list(zip(cert.X, program.signed_directions(),
                                              strict=True)),
                        constraint_violation=cert.violation)


def default_directions(program: ReluProgram, gated_Z: list[np.ndarray] | None,
                       rtol: float = 1e-3) -> list[np.ndarray]:
    """Output-coordinate axes plus the right singular vectors of the gated solution.

    Blocks with one column (``q c = 1``) keep the single axis (the dictionary is then
    complete). Singular vectors with ``sigma < rtol * sigma_max`` are left out.
    """
    dirs = []
    for b, G in enumerate(program.axis_directions()):
        if G.shape[0] == 1 or gated_Z is None:
            dirs.append(G)
            continue
        _, S, Vt = svd(gated_Z[b])
        k = int(np.count_nonzero(S > rtol * max(S[0], 1e-300))) if S.size else 0
        dirs.append(np.hstack([G, Vt[:k].T]))
    return dirs




def _fista_solver(program: ReluProgram, Y: np.ndarray, beta: float, loss: Loss, *, tol: float,
                  max_iter: int, rng: np.random.Generator | None,
                  progress: bool, x0: list[np.ndarray] | None = None) -> ConvexResult:
    return cone_fista(program, Y, beta, loss, tol=tol, max_iter=max_iter, rng=rng,
                      progress=progress, x0=x0)


def _cvxpy_solver(program: ReluProgram, Y: np.ndarray, beta: float, loss: Loss, *, tol: float,
                  **_ignored) -> ConvexResult:
    return with_tolerance(solve_relu_cvxpy(program, Y, beta, loss), tol)


#: the solvers of the restricted ReLU program by the name of the ``solver`` parameter, and the
#: nuclear-norm solver of the gated relaxation each one uses
RELU_SOLVERS: dict[str, tuple[Callable[..., ConvexResult], str]] = {
    "auto": (_fista_solver, "auto"),
    "fista": (_fista_solver, "auto"),
    "cvxpy": (_cvxpy_solver, "cvxpy"),
}

_NO_CONES = ("Burer-Monteiro cannot enforce the ReLU cone constraints: use 'auto' (projected "
             "FISTA with exact cone projections) or 'cvxpy' (reference), or "
             "activation='gated_relu' for the unconstrained gated program.")


def check_relu_solver(solver: str, caller: str = "") -> None:
    """Refuse a ``solver`` that cannot solve the ReLU program (``"bm"`` ignores the cones)."""
    if solver not in RELU_SOLVERS:
        allowed = ", ".join(map(repr, RELU_SOLVERS))
        hint = _NO_CONES if solver == "bm" else "Pick one of the listed options."
        raise_invalid("solver", f"one of {allowed} for a ReLU program", solver, hint, caller)


def solve_relu(program: ReluProgram, Y: np.ndarray, beta: float, loss: str | Loss, *,
               solver: str = "auto", tol: float = 1e-6, max_iter: int = 20000,
               rng: np.random.Generator | None = None, progress: bool = False) -> ConvexResult:
    """Relaxation (lower bound, directions), then the restricted ReLU program.

    1. the gated-ReLU program on the same patterns (cones dropped) is solved; its certified
       dual value is a lower bound on the exact cone-constrained program (``lower_bound``);
    2. unless ``program.directions`` is set, the dictionary is :func:`default_directions`;
    3. the restricted program is solved by :func:`cone_fista` (``solver`` "auto"/"fista") or
       by the cvxpy reference (``solver="cvxpy"``).
    """
    check_relu_solver(solver, "solve")
    loss = get_loss(loss, "solve_relu")
    restricted, relaxed = RELU_SOLVERS[solver]
    relax = solve_nuclear(program.as_gated(), Y, beta, loss, solver=relaxed,
                          tol=max(tol, 1e-6), max_iter=max_iter, rng=rng)
    if program.directions is None:
        program = dataclasses.replace(program, directions=default_directions(program, relax.Z))
    res = restricted(program, Y, beta, loss, tol=tol, max_iter=max_iter, rng=rng,
                     progress=progress)
    return dataclasses.replace(res, lower_bound=relax.dual_objective)
