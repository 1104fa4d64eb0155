r"""Fast exact Att-SVM (Frobenius): augmented Lagrangian + semismooth Newton, then a polish.

Score convention: ``score_t = x_t^T W z``. Att-SVM with the Frobenius norm is a bias-free
hard-margin SVM in :math:`\mathbb R^{d^2}` on the matrices ``A_c = (x_{i,a} - x_it) q^T``:

.. math:: \min_W \tfrac12 \|W\|_F^2 \quad\text{s.t.}\quad \langle A_c, W\rangle \ge 1 \ \forall c,
    \qquad\text{dual:}\ \max_{\alpha\ge 0}\ 1^\top\alpha - \tfrac12 \|A^\top\alpha\|_F^2 .

1. **Augmented Lagrangian** (proximal point on the dual; Rockafellar 1976). For a multiplier
   ``lambda >= 0`` and penalty ``sigma`` the subproblem
   ``min_W 1/2 ||W||^2 + 1/(2 sigma) ||max(0, lambda - sigma (A W - 1))||^2`` is strongly convex
   and piecewise quadratic; a **semismooth Newton** method solves it (Li, Sun, Toh, "A highly
   efficient semismooth Newton augmented Lagrangian method for solving Lasso problems", SIAM J.
   Optim. 2018; Yan & Li, "An efficient augmented Lagrangian method for support vector
   machine", Optim. Methods Softw. 2020). The Newton system ``(I + sigma A_J^T A_J) dW = -g``
   is solved in its dual form ``(I/sigma + G_JJ) y = A_J g``, ``dW = -g + A_J^T y`` (Woodbury):
   directly (Cholesky) when small, else by conjugate gradients preconditioned with the inverse
   group-diagonal blocks of ``G``; every product with ``A`` or ``A^T`` is two GEMMs
   (:mod:`attnlens.svm._solvers.frobenius_ops`). Then ``lambda <- max(0, lambda - sigma (A W - 1))``.
2. **Working set** (cutting planes / shrinking): the Newton steps see only the constraints that
   are active or near-active; one pass over all constraints per outer iteration adds the
   violated ones (a few per query group), so the inner algebra scales with the support.
3. **Polish** (exactness): once the support of ``lambda`` settles, primal-dual active-set
   rounds (Hintermueller, Ito, Kunisch, SIAM J. Optim. 2003) solve ``G_FF alpha_F = 1`` on a
   set ``F`` (margins exactly 1 there), drop negative multipliers and add violated constraints;
   loose solves while ``F`` changes, then a tight one (float32 PCG products with float64
   iterative refinement). The result is accepted only with ``alpha >= 0`` and the duality gap
   over *all* constraints at most ``tol / 2``; otherwise the augmented Lagrangian continues.

Certificate: ``W = A^T alpha`` with ``alpha >= 0``, so ``1^T alpha / ||W||`` lower-bounds the
optimal norm and ``||W|| / min margin`` upper-bounds it (see :mod:`attnlens.svm._solvers.certificate`).
Infeasibility: if no ``W`` separates, ``lambda`` grows without bound while ``A^T lambda`` stays
bounded, so the lower bound ``1^T lambda / ||A^T lambda||`` on the norm of any feasible ``W``
explodes. Once it passes ``RAY_CHECK_RATIO / max_c ||A_c||`` with no ``W`` of positive margin,
Lawson-Hanson NNLS on the support looks for a dual ray ``r >= 0``, ``1^T r = 1``,
``||sum r_c A_c|| <= max_c ||A_c|| / INFEASIBLE_RATIO`` (then every feasible ``W`` would need
``||W|| >= 1e8 / max_c ||A_c||``), which is returned as the evidence; for supports too large
for a dense NNLS, ``r = lambda / 1^T lambda`` is returned once the bound itself passes
``INFEASIBLE_RATIO / max_c ||A_c||``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

import numpy as np
from scipy.linalg import LinAlgError, cho_factor, cho_solve
from scipy.optimize import nnls
from threadpoolctl import threadpool_limits

from attnlens.svm._solvers.constraints import ConstraintSet
from attnlens.svm._solvers.frobenius_ops import Block, BlockJacobi, Constraints, pcg
from attnlens.svm._solvers.output import SolverOutput

log = logging.getLogger(__name__)

DIRECT_MAX = 1500  # Newton/polish systems up to this size are factorized, larger ones use PCG
INFEASIBLE_RATIO = 1e8  # declare infeasible when ||W*|| >= this / max_c ||A_c||
RAY_CHECK_RATIO = 1e3  # from this norm bound on, look for a dual ray by NNLS ...
RAY_NNLS_MAX = 5_000_000  # ... when its dense matrix has at most this many entries
SIGMA_GROWTH = 3.0
POLISH_LOOSE = 1e-4  # relative accuracy of the polish solves while the active set changes
LOW_PRECISION_RTOL = 1e-4  # PCG solves this loose or looser run their products in float32


def _solve_direct(block: Block, rhs: np.ndarray, shift: float) -> np.ndarray:
    """``(shift I + G_SS)^{-1} rhs`` by Cholesky (a tiny ridge guards singular ``G``)."""
    G = block.gram()
    G[np.diag_indices_from(G)] += shift + 1e-13 * max(float(np.max(np.diag(G))), 1e-300)
    try:
        return cho_solve(cho_factor(G, lower=True, check_finite=False), rhs, check_finite=False)
    except LinAlgError:
        return np.linalg.lstsq(G, rhs, rcond=None)[0]


def _newton_direction(bJ: Block, grad: np.ndarray, sigma: float, eta: float, stats: dict):
    """``dW = -(I + sigma A_J^T A_J)^{-1} grad`` through the dual (Woodbury) system."""
    if bJ.size == 0:
        return -grad
    d, D, s = grad.shape[0], grad.size, bJ.size
    # flop estimates: primal (D, D) Cholesky, dual (s, s) Cholesky, ~100 PCG iterations
    cost_primal = s * D * D + D**3 / 3
    cost_dual = 2 * s * s * d + s**3 / 3 if s <= DIRECT_MAX else np.inf
    cost_pcg = 400 * (bJ.ug.size * D + s * d)
    if D <= DIRECT_MAX and cost_primal <= min(cost_dual, cost_pcg):  # primal (D, D) system
        A = bJ.matrix()  # (|J|, D)
        H = sigma * (A.T @ A)
        H[np.diag_indices_from(H)] += 1.0
        dw = cho_solve(cho_factor(H, lower=True, check_finite=False), -grad.ravel())
        return dw.reshape(grad.shape)
    b = bJ.margins(grad)
    if cost_dual <= cost_pcg:
        y = _solve_direct(bJ, b, 1.0 / sigma)
    else:
        # the primal residual of dW = -grad + A^T y is sigma A^T r (r: the dual residual)
        target = eta * float(np.linalg.norm(grad)) / sigma
        low = eta >= LOW_PRECISION_RTOL
        y, it, _ = pcg(
            lambda v: v / sigma + bJ.margins(bJ.combine(v, low), low),
            b,
            BlockJacobi(bJ, 1.0 / sigma),
            x0=None,
            rtol=eta,
            maxiter=2000,
            accept=lambda r: float(np.linalg.norm(bJ.combine(r))) <= target,
        )
        stats["cg"] += it
    return -grad + bJ.combine(y)


def _line_search(W, dW, M, dM, lam, sigma) -> float:
    """Exact step on ``phi(t) = 1/2||W + t dW||^2 + 1/(2 sigma)||max(0, r - sigma t dM)||^2``."""
    a0 = float(np.vdot(W, dW))
    a1 = float(np.vdot(dW, dW))
    r = lam - sigma * (M - 1.0)

    def slope(t):
        mu = np.maximum(r - sigma * t * dM, 0.0)
        act = mu > 0
        return a0 + t * a1 - float(mu @ dM), a1 + sigma * float(dM[act] @ dM[act])

    g0, _ = slope(0.0)
    if g0 >= 0:
        return 0.0
    lo, hi, t = 0.0, np.inf, 1.0
    for _ in range(60):
        g, h = slope(t)
        if abs(g) <= 1e-12 * abs(g0):
            break
        if g > 0:
            hi = t
        else:
            lo = t
        tn = t - g / h if h > 0 else np.inf
        if not lo < tn < hi:
            tn = 0.5 * (lo + hi) if np.isfinite(hi) else 2.0 * t
        if tn == t:
            break
        t = tn
    return t


def _ssn(block: Block, W, lam, sigma, gtol, max_newton, stats):
    """Semismooth Newton on the augmented Lagrangian subproblem over ``block``.

    Returns ``(W, mu)`` with ``mu = max(0, lam - sigma (A W - 1))`` (the next multipliers).
    """
    M = block.margins(W)
    for _ in range(max_newton):
        r = lam - sigma * (M - 1.0)
        J = r > 0
        bJ = block.sub(J)
        grad = W - bJ.combine(r[J])
        gn = float(np.linalg.norm(grad))
        scale = max(float(np.linalg.norm(W)), 1e-300)
        if gn <= gtol:
            break
        eta = min(0.1, max(1e-10, gn / scale))
        dW = _newton_direction(bJ, grad, sigma, eta, stats)
        dM = block.margins(dW)
        t = _line_search(W, dW, M, dM, lam, sigma)
        stats["newton"] += 1
        if t == 0.0:
            break
        W = W + t * dW
        M = M + t * dM
    M = block.margins(W)
    return W, np.maximum(lam - sigma * (M - 1.0), 0.0)


def _ray_on(C: Constraints, S: np.ndarray, amax: float) -> np.ndarray | None:
    """A dual ray supported on ``S`` (``r >= 0``, ``1^T r = 1``, ``sum r_c A_c ~ 0``), or None.

    Lawson-Hanson NNLS (scipy) on ``min_{u >= 0} ||[A_S^T; 1^T] u - e||``: a zero residual
    means ``u`` is a ray (Lawson & Hanson 1974, ch. 23). Accepted when
    ``||A^T r|| <= max_c ||A_c|| / INFEASIBLE_RATIO``.
    """
    A = C.block(S).matrix() / amax  # (s, d^2)
    E = np.vstack([A.T, np.ones((1, S.size))])
    f = np.zeros(E.shape[0])
    f[-1] = 1.0
    try:
        u, _ = nnls(E, f, maxiter=50 * E.shape[1])
    except RuntimeError:  # iteration limit
        return None
    if not u.sum() > 0:
        return None
    r = u / u.sum()
    if np.linalg.norm(A.T @ r) * INFEASIBLE_RATIO > 1.0:
        return None
    ray = np.zeros(C.m)
    ray[S] = r
    return ray


def _per_group_smallest(C: Constraints, ids: np.ndarray, vals: np.ndarray, r: int) -> np.ndarray:
    """Of the constraints ``ids`` (sorted), the ``r`` with the smallest ``vals`` per group."""
    if ids.size == 0:
        return ids
    g = C.g[ids]
    order = np.lexsort((vals, g))  # by group, then value
    g_sorted = g[order]
    first = np.ones(g_sorted.size, dtype=bool)
    first[1:] = g_sorted[1:] != g_sorted[:-1]
    start = np.maximum.accumulate(np.where(first, np.arange(g_sorted.size), 0))
    rank = np.arange(g_sorted.size) - start
    return np.sort(ids[order[rank < r]])


def _certify(C: Constraints, block: Block, alpha: np.ndarray):
    """``W = A^T alpha`` over the block, all margins, and the relative duality gap."""
    W = block.combine(alpha)
    M = C.margins(W)
    mmin = float(M.min())
    nw2 = float(np.vdot(W, W))
    s1 = float(alpha.sum())
    gap = 1.0 - mmin * s1 / nw2 if (mmin > 0 and nw2 > 0) else np.inf
    return W, M, mmin, gap, s1, nw2


def _solve_gram(blk: Block, y0: np.ndarray, rtol: float) -> tuple[np.ndarray, int]:
    """``G_SS y = 1`` to ``max |1 - G y| <= rtol`` by block-Jacobi PCG from ``y0``.

    Products run in float32; below ``LOW_PRECISION_RTOL`` the residual is recomputed in
    float64 and float32 PCG solves for the correction (mixed-precision iterative refinement).
    Returns ``(y, CG iterations)``.
    """
    ones = np.ones(blk.size)
    P = BlockJacobi(blk, 0.0)

    def low(v):
        return blk.margins(blk.combine(v, True), True)

    if rtol >= LOW_PRECISION_RTOL:
        y, it, _ = pcg(
            low,
            ones,
            P,
            x0=y0,
            rtol=rtol,
            maxiter=5000,
            accept=lambda r: float(np.abs(r).max()) <= rtol,
        )
        return y, it
    y, total = y0.copy(), 0
    for _ in range(8):
        r = ones - blk.margins(blk.combine(y))
        rmax = float(np.abs(r).max())
        if rmax <= rtol:
            break
        dy, it, _ = pcg(low, r, P, x0=None, rtol=max(1e-3, 0.5 * rtol / rmax), maxiter=5000)
        y += dy
        total += it
    return y, total


def _polish(C: Constraints, lam: np.ndarray, tol: float, rounds: int, add_per_group: int, stats):
    """Primal-dual active set on ``G_FF alpha = 1``, starting from the support of ``lam``.

    Each round solves ``G_FF y = 1`` (margins exactly 1 on ``F``), then updates ``F`` at once:
    negative ``y`` leave, violated constraints (a few per group) join (Hintermueller, Ito,
    Kunisch 2003). While ``F`` changes the solves are loose (``POLISH_LOOSE``), the last ones
    tight. Accepted only with ``y > 0`` and the duality gap over all constraints at most
    ``tol / 2``; returns ``(W, alpha, gap)``, or None (the augmented Lagrangian goes on).
    """
    D = C.d * C.d
    F = np.flatnonzero(lam > 0)
    y0 = lam[F]
    tight = 0.1 * tol  # max |1 - (G y)_c| needed: the gap is about the worst margin defect
    rtol = max(POLISH_LOOSE, tight)
    for _ in range(rounds):
        if F.size == 0 or F.size > D:
            return None  # at most d^2 independent constraints can be active
        blk = C.block(F)
        ones = np.ones(F.size)
        stats["polish"] += 1
        if F.size <= DIRECT_MAX:
            y = _solve_direct(blk, ones, 0.0)
            it, rtol = 0, tight
        else:
            y, it = _solve_gram(blk, y0, rtol)
            stats["cg"] += it
        W, M, mmin, gap, _, _ = _certify(C, blk, y)
        stats["full_passes"] += 1
        neg = y <= 0
        inF = np.zeros(C.m, dtype=bool)
        inF[F] = True
        noise = float(np.abs(1.0 - M[F]).max())  # how far from exact this solve is
        viol = np.flatnonzero((M < 1.0 - max(2.0 * noise, 0.1 * tight)) & ~inF)
        nneg = int(np.count_nonzero(neg))
        log.info(
            "  polish: |F|=%d, cg %d, %d negative, %d violated, min margin %.10g, gap %.3g",
            F.size,
            it,
            nneg,
            viol.size,
            mmin,
            gap if nneg == 0 else np.inf,
        )
        if nneg == 0 and gap <= 0.5 * tol:
            alpha = np.zeros(C.m)
            alpha[F] = y
            return W, alpha, gap
        if nneg == 0 and viol.size == 0:  # F looks right: solve tight (again, if drifted)
            rtol = tight if rtol > tight else 0.01 * rtol
            y0 = y
            continue
        if viol.size > 0.2 * F.size:
            return None  # far off: the augmented Lagrangian is the better tool
        F, y = F[~neg], y[~neg]
        viol = _per_group_smallest(C, viol, M[viol], add_per_group)
        room = min(D - F.size, max(10, F.size // 20))
        if room <= 0 and not nneg:
            return None  # a full vertex that misses constraints: PDAS cannot swap, ALM can
        if viol.size > room:
            viol = np.sort(viol[np.argpartition(M[viol], room)[:room]]) if room > 0 else viol[:0]
        F = np.concatenate([F, viol])
        order = np.argsort(F)
        F = F[order]
        y0 = np.concatenate([y, np.zeros(viol.size)])[order]
    return None


def solve_frobenius(
    cs: ConstraintSet,
    *,
    tol: float,
    max_iter: int,
    init_per_group: int = 4,
    add_per_group: int = 4,
    polish_rounds: int = 12,
) -> SolverOutput:
    """Solve the Frobenius Att-SVM on ``cs``; see the module docstring.

    Returns ``W`` (d, d) equal to ``sum alpha_c A_c``, ``duals`` (n, K, T), ``ray``
    (n, K, T) or None (a dual ray when infeasible, then ``W`` and ``duals`` are None),
    ``iterations`` (Newton steps plus polish solves), ``converged``, and ``stats``.
    """
    start = time.perf_counter()
    C = Constraints(cs)
    m, d = C.m, C.d
    shape = cs.mask.shape
    # one BLAS thread when every product is small (threads cost more than they save there)
    small = m * d * d <= 4_000_000 or C.n * C.K * d * d <= 1_000_000
    with threadpool_limits(limits=1 if small else None, user_api="blas"):
        out = _solve(C, tol, max_iter, init_per_group, add_per_group, polish_rounds)
    stats = dict(out.stats, seconds=time.perf_counter() - start)

    def as_layout(v: np.ndarray | None) -> np.ndarray | None:
        if v is None:
            return None
        full = np.zeros(int(np.prod(shape)))
        full[cs.mask.reshape(-1)] = v
        return full.reshape(shape)

    return replace(out, duals=as_layout(out.duals), ray=as_layout(out.ray), stats=stats)


def _solve(
    C: Constraints, tol, max_iter, init_per_group, add_per_group, polish_rounds
) -> SolverOutput:
    t0 = time.perf_counter()
    m = C.m
    stats = {"newton": 0, "cg": 0, "polish": 0, "outer": 0, "full_passes": 0}
    anorm2 = C.unorm2() * C.qn2[C.g]  # ||A_c||_F^2
    amax = float(np.sqrt(anorm2.max()))
    zero = np.flatnonzero(anorm2 == 0.0)  # A_c = 0: margin 0 < 1 whatever W, a one-point ray
    if zero.size:
        ray = np.zeros(m)
        ray[zero[0]] = 1.0
        return SolverOutput(W=None, duals=None, ray=ray, iterations=0, stats=stats)
    # start: the sum of all constraint matrices, and a few tight constraints per group under it
    W = C.combine(np.ones(m))
    M = C.margins(W)
    stats["full_passes"] += 2
    mscale = float(np.abs(M).max())
    W = W / mscale if mscale > 0 else np.zeros_like(W)
    M = M / mscale if mscale > 0 else M
    if m <= 2000:
        N = np.arange(m)
    else:
        N = _per_group_smallest(C, np.arange(m), M, init_per_group)
    lam = np.zeros(m)
    ever = np.zeros(m, dtype=bool)
    sigma = 2.0 / float(np.mean(anorm2[N]))
    res_prev = 1.0
    supp_prev = np.zeros(0, dtype=np.int64)
    W_best = alpha_best = None
    gap_best = np.inf
    converged = False
    polish_frac = 0.1
    ray_check_at = RAY_CHECK_RATIO
    while stats["newton"] + stats["polish"] < max_iter:
        stats["outer"] += 1
        block = C.block(N)
        scale = max(float(np.linalg.norm(W)), 1.0 / amax)
        gtol = max(1e-13, 0.1 * res_prev) * scale
        W, mu = _ssn(block, W, lam[N], sigma, gtol, max_iter - stats["newton"], stats)
        lam[:] = 0.0
        lam[N] = mu
        Wd, M, mmin, gap, s1, nw2 = _certify(C, block, mu)
        stats["full_passes"] += 1
        supp = N[mu > 0]
        log.info(
            "outer %d: sigma %.3g, |N|=%d, support %d, min margin %.6g, gap %.3g, "
            "norm bound %.3g, newton %d, cg %d, %.2fs",
            stats["outer"],
            sigma,
            N.size,
            supp.size,
            mmin,
            gap,
            s1 / np.sqrt(max(nw2, 1e-300)) * amax,
            stats["newton"],
            stats["cg"],
            time.perf_counter() - t0,
        )
        if gap < gap_best:
            W_best, alpha_best, gap_best = Wd, lam.copy(), gap
        if gap <= 0.5 * tol:
            converged = True
            break
        # infeasibility: 1^T lam / ||A^T lam|| lower-bounds ||W|| of every feasible point; when
        # it grows large with no separating W yet, look for an exact dual ray on the support
        ratio = s1 / np.sqrt(max(nw2, 1e-300)) * amax if s1 > 0 else 0.0
        ray = None
        if mmin <= 0 and ratio >= INFEASIBLE_RATIO:
            ray = lam / s1
        elif mmin <= 0 and ratio >= ray_check_at and supp.size * (C.d * C.d + 1) <= RAY_NNLS_MAX:
            ray = _ray_on(C, supp, amax)
            ray_check_at = 10.0 * ratio
            log.info("  dual-ray NNLS on the support (%d): %s", supp.size, ray is not None)
        if ray is not None:
            return SolverOutput(
                W=None, duals=None, ray=ray, iterations=stats["newton"] + stats["polish"],
                stats=stats,
            )
        # polish when the support has settled (after a failed try, wait until it settles more)
        changed = np.setxor1d(supp, supp_prev, assume_unique=True).size
        if stats["outer"] >= 2 and supp.size and changed <= polish_frac * supp.size:
            rounds = min(polish_rounds, max_iter - stats["newton"] - stats["polish"])
            pol = _polish(C, lam, tol, rounds, add_per_group, stats)
            if pol is not None:
                W_best, alpha_best, gap_best = pol
                converged = True
                break
            polish_frac = 0.5 * changed / supp.size
        supp_prev = supp
        # working set: keep the support and near-active constraints, add the violated ones
        inN = np.zeros(m, dtype=bool)
        inN[N] = True
        if stats["outer"] >= 3:  # once in the support, never dropped (no cutting-plane cycling)
            ever[supp] = True
        keep = N[(mu > 0) | ever[N] | (M[N] < 1.5)]
        viol = np.flatnonzero((M < 1.0) & ~inN)
        viol = _per_group_smallest(C, viol, M[viol], add_per_group)
        N = np.union1d(keep, viol)
        res_prev = min(1.0, max(gap if np.isfinite(gap) else 1.0, max(0.0, 1.0 - mmin)))
        sigma *= SIGMA_GROWTH
        if not np.isfinite(sigma) or sigma * amax * amax > 1e16:
            converged = True  # stopped by numerical range, not by the iteration cap
            break
    if W_best is None:
        W_best, alpha_best = Wd, lam
    stats["support"] = int(np.count_nonzero(alpha_best))
    stats["gap"] = float(gap_best)
    return SolverOutput(
        W=W_best,
        duals=alpha_best,
        iterations=stats["newton"] + stats["polish"],
        converged=converged,
        stats=stats,
    )
