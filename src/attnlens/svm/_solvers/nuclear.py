r"""Fast Att-SVM* (nuclear norm): a structured primal-dual interior-point method.

Score convention: ``score_t = x_t^T W z``. With ``A_c = u_c q_c^T`` (``u_c = x_{i,a} - x_it``,
``q_c`` the query of constraint ``c``) the program and its dual are

.. math::

    \min_W \|W\|_\star \ \text{s.t.}\ \langle A_c, W\rangle \ge 1
    \qquad\text{and}\qquad
    \max_{\alpha \ge 0} 1^\top\alpha \ \text{s.t.}\ \Big\|\sum_c \alpha_c A_c\Big\|_2 \le 1 .

The dual is a linear matrix inequality in ``alpha``,
``Z = I_{2d} - sum_c alpha_c E_c >= 0`` with ``E_c = [[0, A_c], [A_c^T, 0]]``; its conic dual
is the semidefinite lift of the primal, ``min tr(X)`` over ``X >= 0`` with ``<E_c, X> >= 1``,
and ``W = 2 X_12`` (Fazel, Hindi, Boyd, "A rank minimization heuristic with application to
minimum order system approximation", ACC 2001). We solve this pair with a Mehrotra
predictor-corrector infeasible primal-dual path-following method with the Nesterov-Todd
direction (Todd, Toh, Tutuncu, "On the Nesterov-Todd direction in semidefinite programming",
SIAM J. Optim. 1998; the SDPT3 scheme), exploiting the rank-two structure of ``E_c``: with the
NT scaling matrix ``G`` the Schur complement

.. math::

    M_{cc'} = \operatorname{tr}(E_c G E_{c'} G) + \delta_{cc'}\, x_c / z_c
    = 2\,(U G_{11} U^\top) \circ (Q G_{22} Q^\top) + 2\,H \circ H^\top + \operatorname{diag}(x/z),
    \qquad H = U G_{12} Q^\top,

is assembled from ``m x m`` Gram matrices of the deltas ``U`` and the queries ``Q``: one
iteration costs ``O(m^2 d + m^3)`` flops, against the ``O(d^6)`` of a generic conic solver on
the ``2d x 2d`` semidefinite cone (cvxpy + Clarabel). Two reductions keep ``m`` small:
constraints whose slack under the current ``W`` is far above the gap's scale leave the Schur
complement as the method proceeds (constraint reduction), and problems with more than
``_MAX_WORKING`` constraints start from a working set: the constraints tight under a cheap
estimate of the solution (the Frobenius solution refined by two iteratively reweighted
Frobenius solves). Constraints outside the Schur complement that an iterate violates or nearly
violates are admitted during the same run (cutting planes inside the interior-point method,
no restart); a restart from the held constraints happens only after a numerical stall.

Certificate: at every iterate, ``W = 2 X_12`` rescaled to minimum margin 1 over the *whole*
constraint set is feasible (upper bound ``||W||_*``), and ``alpha = max(y, 0)`` gives the lower
bound ``1^T alpha / ||sum alpha_c A_c||_2`` (weak duality); their relative gap is a valid
certificate whatever the state of the interior-point method, the reductions included.
Infeasibility shows as an unbounded dual: ``alpha / 1^T alpha`` approaches a ray with
``sum alpha_c A_c = 0`` (the reported ray is the exact LP ray of ``find_dual_ray`` when the
problem is small enough). If no iterate is feasible on every constraint (iteration budget,
working-set limit ``_WORKING_LIMIT``), the Frobenius solver decides feasibility and the best
feasible point between the last iterate and the Frobenius W is returned with the last duals
(an honest, loose certificate).

Cost on the papers' settings (planted, 2 cores, one BLAS thread): 15-19 iterations;
(50,16,32) about 0.1-0.2 s, (100,16,64) about 0.7 s (see ``docs/svm.md``); (2000,32,64):
62,000 constraints, about 4,200 held at first, 24 iterations, certificate below 1e-7.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np
from scipy.linalg import LinAlgError, cho_factor, cho_solve, eigvalsh
from threadpoolctl import threadpool_limits

from attnlens.svm._numerics import support_mask
from attnlens.svm._solvers.certificate import find_dual_ray
from attnlens.svm._solvers.constraints import ConstraintSet
from attnlens.svm._solvers.frobenius import solve_frobenius
from attnlens.svm._solvers.output import SolverOutput

log = logging.getLogger(__name__)

# constraint reduction: once the gap on the held constraints is below _DROP_START, constraints
# whose normalized slack exceeds thr = max(_DROP_MIN, _DROP_C * sqrt(gap)) leave the Schur
# complement (the slacks of active constraints shrink about like sqrt(gap)); any other
# constraint (dropped, or never held) whose slack falls below thr is admitted for good (already
# from a gap of _ADMIT_START on, if violated). A wrong drop or a poor working set cannot
# corrupt the result: the certificate is always evaluated on every constraint.
_DROP_START = 0.03
_DROP_C = 1.5
_DROP_MIN = 0.02
_ADMIT_START = 0.5  # from this gap on the held constraints, the violated others are admitted
_MAX_WORKING = 3000  # up to this many constraints, all of them start in the working set
_WORKING_LIMIT = 6000  # hard cap (memory: a few m x m float64 arrays)
# larger problems start from the constraints that are tight under a cheap estimate of the
# solution: the Frobenius solution (tolerance _SEED_TOL) refined by _SEED_IRLS iteratively
# reweighted steps (each a Frobenius solve), with normalized margin below 1 + _SEED_SLACK,
# plus the _SEED_PER_QUERY smallest margins of every query; constraints the estimate misses
# are admitted while the interior-point method runs (see _reduce)
_SEED_TOL = 1e-4
_SEED_IRLS = 2
_SEED_EPS = 1e-3
_SEED_SLACK = 0.1
_SEED_PER_QUERY = 1
_MAX_ROUNDS = 20
# the interior-point method aims at a certificate _TARGET * tol (a few cheap iterations on the
# reduced constraint set beyond tol) to bring the margins of active constraints close enough to
# 1 for the support sets (margin <= 1 + SUPPORT_TOL) and the zeroed duals to be reliable
_TARGET = 5e-3
_MAX_IPM_ITER = 200  # per round; the method needs 10-25 iterations on the papers' settings


class _Data:
    """Constraints ``u_c^T W q_{g(c)} >= 1``: deltas ``U`` (m, d), group queries ``Qg`` (G, d),
    the group of each constraint ``grp`` (m,)."""

    def __init__(self, U: np.ndarray, Qg: np.ndarray, grp: np.ndarray):
        self.U = U
        self.Qg = Qg
        self.grp = grp
        self.Qc = Qg[grp]  # (m, d): the query of every constraint
        self.m, self.d = U.shape

    def subset(self, keep: np.ndarray) -> _Data:
        return _Data(self.U[keep], self.Qg, self.grp[keep])

    def apply(self, K: np.ndarray) -> np.ndarray:
        """``u_c^T K q_c`` for every constraint, shape (m,)."""
        KQ = self.Qg @ K.T  # (G, d): K q_g
        return np.einsum("cd,cd->c", self.U, KQ[self.grp])

    def combine(self, y: np.ndarray) -> np.ndarray:
        """``sum_c y_c u_c q_c^T``, shape (d, d)."""
        return (self.U * y[:, None]).T @ self.Qc

    def schur(self, S: np.ndarray) -> np.ndarray:
        """``tr(E_c S E_c' S)`` for a symmetric (2d, 2d) ``S``, shape (m, m):
        ``2 (u_c^T S12 q_c')(u_c'^T S12 q_c) + 2 (u_c^T S11 u_c')(q_c^T S22 q_c')``."""
        d, U, Qg, grp = self.d, self.U, self.Qg, self.grp
        H = np.take((U @ (np.sqrt(2.0) * S[:d, d:])) @ Qg.T, grp, axis=1)  # (m, m)
        M = H * H.T
        QSQ = np.take(np.take(Qg @ S[d:, d:] @ Qg.T, grp, axis=0), grp, axis=1)  # (m, m)
        USU = U @ (2.0 * S[:d, :d]) @ U.T  # (m, m)
        USU *= QSQ
        M += USU
        return M


def _spec(B: np.ndarray) -> float:
    return float(np.linalg.svd(B, compute_uv=False)[0]) if B.size else 0.0


def _max_step(Li: np.ndarray, dX: np.ndarray) -> float:
    """Largest ``t`` with ``X + t dX >= 0`` given ``Li = L^{-1}``, ``X = L L^T``."""
    lam = eigvalsh(Li @ dX @ Li.T, subset_by_index=[0, 0], check_finite=False)[0]
    return float(-1.0 / lam) if lam < 0 else np.inf


def _max_step_lp(x: np.ndarray, dx: np.ndarray) -> float:
    neg = dx < 0
    return float(np.min(-x[neg] / dx[neg])) if neg.any() else np.inf


def _cholesky(M: np.ndarray):
    """Cholesky factor of the Schur complement, with a growing diagonal shift if needed."""
    diag = np.diag(M).copy()
    for shift in (0.0, 1e-14, 1e-12, 1e-10):
        if shift:
            M[np.diag_indices_from(M)] = diag * (1.0 + shift) + shift * diag.max()
        try:
            return cho_factor(M, lower=True, check_finite=False)
        except LinAlgError:
            continue
    return None


def _offdiag(B: np.ndarray) -> np.ndarray:
    d = B.shape[0]
    E = np.zeros((2 * d, 2 * d))
    E[:d, d:] = B
    E[d:, :d] = B.T
    return E


def certificate(data: _Data, W: np.ndarray, alpha: np.ndarray) -> tuple[float, float, float]:
    """``(gap, upper, lower)`` of a primal ``W`` and duals ``alpha`` on the constraints ``data``.

    ``upper = ||W||_* / min margin`` (a feasible point's norm), ``lower = 1^T a / ||sum a_c
    A_c||_2`` with ``a = max(alpha, 0)`` (weak duality), ``gap = (upper - lower) / upper``.
    """
    marg = data.apply(W)
    mmin = float(marg.min()) if marg.size else np.inf
    sw = np.linalg.svd(W, compute_uv=False)
    upper = float(sw.sum()) / mmin if mmin > 0 else np.inf
    a = np.maximum(alpha, 0.0)
    sa = float(a.sum())
    sn = _spec(data.combine(a))
    lower = sa / sn if sn > 0 else (np.inf if sa > 0 else 0.0)
    if not np.isfinite(upper):
        return np.inf, upper, lower
    return max(0.0, (upper - lower) / upper), upper, lower


class _Newton:
    """One factorized Newton system of the NT method at an iterate (shared by predictor and
    corrector): residuals, NT scaling ``G`` (``G X G^T = G^{-T} Z G^{-1} = diag(sv)``) and the
    Cholesky factor of the Schur complement."""

    def __init__(self, sub: _Data, X, x, y, Z, z, Lx, Lz):
        d = sub.d
        eye = np.eye(2 * d)
        self.sub, self.d, self.eye = sub, d, eye
        self.x, self.z = x, z
        self.Rp = 1.0 - (sub.apply(X[:d, d:] + X[d:, :d].T) - x)  # primal: <E_c, X> - x_c = 1
        self.Rd = eye - Z - _offdiag(sub.combine(y))  # dual: Z = I - sum_c y_c E_c
        self.Rl = y - z  # dual, LP block: z = y
        _, sv, Vt = np.linalg.svd(Lz.T @ Lx)
        self.sv = sv
        self.Gi = (Lx @ Vt.T) / np.sqrt(sv)  # G^{-1}
        self.Lxi = np.linalg.inv(Lx)
        self.Lzi = np.linalg.inv(Lz)
        self.G = np.sqrt(sv)[:, None] * (Vt @ self.Lxi)
        self.Wn = self.Gi @ self.Gi.T  # NT scaling point: Wn Z Wn = X
        self.dsum = sv[:, None] + sv[None, :]
        self.r = x / z
        M = sub.schur(self.Wn)
        M[np.diag_indices_from(M)] += self.r
        self.cf = _cholesky(M)

    def direction(self, sig_mu: float, corr=None, corr_l=None):
        """Search direction for the target ``sig_mu`` (+ Mehrotra second-order terms)."""
        d, sub = self.d, self.sub
        R = 2.0 * sig_mu * self.eye - 2.0 * np.diag(self.sv**2)
        rl = sig_mu / self.z - self.x - self.r * self.Rl
        if corr is not None:
            R -= corr
            rl -= corr_l
        Rs = self.Gi @ (R / self.dsum) @ self.Gi.T - self.Wn @ self.Rd @ self.Wn
        h = self.Rp - sub.apply(Rs[:d, d:] + Rs[d:, :d].T) + rl
        dy = cho_solve(self.cf, h, check_finite=False)
        Bm = _offdiag(sub.combine(dy))
        dX = Rs + self.Wn @ Bm @ self.Wn
        dX = 0.5 * (dX + dX.T)
        return dX, rl - self.r * dy, dy, self.Rd - Bm, self.Rl + dy


def _reduce(data: _Data, idx, x, y, z, X, gap: float, mu: float, sticky: np.ndarray, drop: bool,
            thr_min: float = _DROP_MIN):
    """Constraint reduction: drop the constraints of ``idx`` whose normalized slack under
    ``W = 2 X_12`` exceeds ``thr = max(_DROP_MIN, _DROP_C sqrt(gap))`` (when ``drop``), admit
    the others of ``data`` whose slack fell below ``thr`` (with ``x_c`` their slack, or
    ``sqrt(mu)`` when violated, ``y_c = z_c = mu / x_c``), the most violated first while the
    set stays within ``_WORKING_LIMIT``. Returns ``idx, x, y, z``, the number admitted and
    whether the limit left some out."""
    d = data.d
    marg = data.apply(X[:d, d:] + X[d:, :d].T)  # <E_c, X> for every constraint
    slack = marg / marg[idx].min() - 1.0
    thr = max(thr_min, _DROP_C * np.sqrt(gap))
    out = np.ones(data.m, dtype=bool)
    out[idx] = False
    back = np.flatnonzero(out & (slack < thr))
    room = _WORKING_LIMIT - idx.size
    cut = back.size > room
    if cut:
        back = back[np.argsort(slack[back])[: max(room, 0)]]
    if back.size:
        sticky[back] = True
        xb = np.maximum(marg[back] - 1.0, np.sqrt(mu))
        idx = np.concatenate([idx, back])
        x = np.concatenate([x, xb])
        y = np.concatenate([y, mu / xb])
        z = np.concatenate([z, mu / xb])
    if drop:
        keep = (slack[idx] <= thr) | sticky[idx]
        if not keep.all() and keep.any():
            idx, x, y, z = idx[keep], x[keep], y[keep], z[keep]
    return idx, x, y, z, back.size, cut


def _pc_step(sub: _Data, X, x, y, Z, z, mu: float):
    """One Mehrotra predictor-corrector step; None when the linear algebra breaks down."""
    N, m = X.shape[0], x.size
    Lx = np.linalg.cholesky(X)
    Lz = np.linalg.cholesky(Z)
    nt = _Newton(sub, X, x, y, Z, z, Lx, Lz)
    if nt.cf is None:
        return None
    # predictor (affine scaling), then Mehrotra's centering and second-order corrector
    dXa, dxa, _, dZa, dza = nt.direction(0.0)
    if not (np.all(np.isfinite(dXa)) and np.all(np.isfinite(dZa)) and np.all(np.isfinite(dxa))):
        return None
    tp = min(1.0, _max_step(nt.Lxi, dXa), _max_step_lp(x, dxa))
    td = min(1.0, _max_step(nt.Lzi, dZa), _max_step_lp(z, dza))
    mu_a = (np.sum((X + tp * dXa) * (Z + td * dZa)) + (x + tp * dxa) @ (z + td * dza)) / (N + m)
    sigma = min(1.0, (mu_a / mu) ** 3)
    Xt = nt.G @ dXa @ nt.G.T  # the predictor in the NT-scaled space
    Zt = nt.Gi.T @ dZa @ nt.Gi
    dX, dx, dy, dZ, dz = nt.direction(sigma * mu, Xt @ Zt + Zt @ Xt, dxa * dza / z)
    if not (np.all(np.isfinite(dX)) and np.all(np.isfinite(dZ)) and np.all(np.isfinite(dy))):
        return None
    gamma = 0.9 + 0.09 * min(tp, td)
    tp = min(1.0, gamma * _max_step(nt.Lxi, dX), gamma * _max_step_lp(x, dx))
    td = min(1.0, gamma * _max_step(nt.Lzi, dZ), gamma * _max_step_lp(z, dz))
    Xn = X + tp * dX
    Zn = Z + td * dZ
    return 0.5 * (Xn + Xn.T), x + tp * dx, y + td * dy, 0.5 * (Zn + Zn.T), z + td * dz, tp, td


@dataclass(frozen=True)
class IPMOutput:
    """One run of :func:`ipm` (fields documented there)."""

    W: np.ndarray | None
    alpha: np.ndarray | None
    gap: float
    iterations: int
    status: str
    ray: np.ndarray | None
    kept: np.ndarray
    last: tuple[np.ndarray, np.ndarray] | None


def ipm(
    data: _Data,
    *,
    tol: float,
    max_iter: int,
    target: float | None = None,
    start: np.ndarray | None = None,
    reduce: bool = True,
    ray_tol: float = 1e-9,
) -> IPMOutput:
    """Mehrotra predictor-corrector NT interior-point method for the constraints ``data``.

    The Schur complement holds the constraints ``start`` (default: all) at first; once the
    certificate on them is below ``_ADMIT_START``, constraints of ``data`` that the iterate
    violates are admitted; below ``_DROP_START`` also those it nearly violates, and (when
    ``reduce``) those far from active are dropped (see :func:`_reduce`). Stops at a
    certificate on *all* of ``data`` ``<= target`` (default ``tol``), or once it is ``<= tol``
    and has not halved in 3 iterations (the method's accuracy limit on the instance).

    Returns an :class:`IPMOutput`: ``W`` (d, d), ``alpha`` (m,), ``gap`` (certificate on
    ``data``), ``iterations``,
    ``status`` in {"optimal", "reduced" (optimal on the constraints held, some of the others
    violated: once an admission hits ``_WORKING_LIMIT``, nothing more is admitted or dropped
    and the run finishes on the held constraints), "max_iter", "stalled",
    "infeasible"}, ``ray`` (m,) when the dual is unbounded (``sum ray_c A_c ~ 0``,
    ``sum ray = 1``), ``kept`` (bool mask of the constraints held at the end) and ``last``
    (the last iterate's ``W``, feasible or not, and its duals).
    """
    m_all, d = data.m, data.d
    N = 2 * d
    idx = np.arange(m_all) if start is None else np.asarray(start, dtype=np.int64)
    sub = data if idx.size == m_all else data.subset(idx)
    # dual-feasible start: y > 0 with ||sum y_c A_c||_2 = 1/2, Z = I - E(y) > 0, z = y
    y = np.ones(idx.size)
    y *= 0.5 / max(_spec(sub.combine(y)), 1e-300)
    Z = np.eye(N) - _offdiag(sub.combine(y))
    z = y.copy()
    X = (2.0 * float(y.sum()) / (_spec(sub.combine(y)) * d)) * np.eye(N)  # tr X = 4 lower bound
    x = np.ones(idx.size)
    target = tol if target is None else min(target, tol)
    best: tuple = (np.inf, None, None)
    it_best = 0  # iteration of the last halving of the best certificate
    status, ray, it, admitted, at_limit = "max_iter", None, 0, 0, False
    sticky = np.zeros(m_all, dtype=bool)  # admitted constraints are never dropped again
    W = alpha = None
    for it in range(1, max_iter + 1):
        m = idx.size
        W = X[:d, d:] + X[d:, :d].T  # 2 X_12
        alpha = np.zeros(m_all)
        alpha[idx] = y
        gap, upper, lower = certificate(data, W, alpha)
        gap_held = gap if m == m_all else certificate(sub, W, y)[0]
        if gap < best[0]:
            if gap < 0.5 * best[0]:
                it_best = it
            best = (gap, W, np.maximum(alpha, 0.0))
        if best[0] <= target or (best[0] <= tol and it - it_best >= 3):
            status = "optimal"
            break
        if m < m_all and gap > tol and gap_held <= tol and not admitted:
            status = "reduced"  # solved on the held constraints; W violates others
            break
        sy = float(np.maximum(y, 0.0).sum())
        if sy > 1e3 and lower > 1e6 * max(upper if np.isfinite(upper) else 0.0, 1.0):
            a = np.maximum(alpha, 0.0) / sy
            if _spec(data.combine(a)) <= ray_tol:  # the dual is unbounded along a
                status, ray = "infeasible", a
                break
        mu = (np.sum(X * Z) + x @ z) / (N + m)
        with np.errstate(all="ignore"):
            try:
                step = _pc_step(sub, X, x, y, Z, z, mu)
            except (np.linalg.LinAlgError, ValueError):
                step = None
        if step is None:
            status = "stalled"
            break
        X, x, y, Z, z, tp, td = step
        log.debug("ipm %d: m=%d gap %.3g (held %.3g) mu %.3g tp %.3f td %.3f",
                  it, m, gap, gap_held, mu, tp, td)
        if max(tp, td) < 1e-10:
            status = "stalled"
            break
        admitted = 0
        if at_limit:
            pass  # the constraints needed do not fit: finish on those held ("reduced")
        elif gap_held < _DROP_START and (reduce or m < m_all):
            idx, x, y, z, admitted, at_limit = _reduce(data, idx, x, y, z, X, gap_held, mu,
                                                       sticky, reduce)
            sub = data if idx.size == m_all else data.subset(idx)
        elif gap_held < _ADMIT_START and m < m_all:  # early: admit the violated only
            idx, x, y, z, admitted, at_limit = _reduce(data, idx, x, y, z, X, 0.0, mu, sticky,
                                                       False, 0.0)
            sub = data if idx.size == m_all else data.subset(idx)
    last = None if W is None else (W, np.maximum(alpha, 0.0))
    gap, W, alpha = best
    kept = np.zeros(m_all, dtype=bool)
    kept[idx] = True
    return IPMOutput(W=W, alpha=alpha, gap=gap, iterations=it, status=status, ray=ray,
                     kept=kept, last=last)


def _per_query_smallest(full: _Data, marg: np.ndarray, per: int) -> np.ndarray:
    """Mask of the ``per`` smallest ``marg`` of every query group."""
    order = np.lexsort((marg, full.grp))  # by group, then margin
    rank = np.empty(full.m, dtype=np.int64)
    starts = np.searchsorted(full.grp[order], np.arange(full.Qg.shape[0]))
    rank[order] = np.arange(full.m) - np.repeat(starts, np.bincount(full.grp, minlength=starts.size))
    return rank < per


def _reweighted_seed(cs: ConstraintSet, full: _Data, W: np.ndarray, scale: float) -> np.ndarray:
    r"""``_SEED_IRLS`` iteratively reweighted steps from ``W`` towards the nuclear solution.

    With ``P = (W W^T)^{1/2}`` (eigenvalues floored at ``_SEED_EPS`` times the largest),
    ``||W||_* <= 1/2 (tr(W^T P^{-1} W) + tr P)``; minimizing the first term under the
    constraints is a Frobenius Att-SVM in ``V = P^{-1/2} W`` with tokens ``P^{1/2} x`` (Mohan
    and Fazel, "Iterative reweighted algorithms for matrix rank minimization", JMLR 2012).
    Only used to choose the starting working set: no accuracy is needed or claimed."""
    for _ in range(_SEED_IRLS):
        U, sv, _ = np.linalg.svd(W)
        ph = (U * np.sqrt(np.maximum(sv / sv[0], _SEED_EPS))) @ U.T  # P^{1/2}, up to scale
        fr = solve_frobenius(replace(cs, X=cs.X @ ph), tol=_SEED_TOL, max_iter=10_000)
        if fr.W is None:
            break
        Wn = (ph @ fr.W) * scale
        if not full.apply(Wn).min() > 0:  # keep a feasible seed
            break
        W = Wn
    return W


def _initial_working_set(full: _Data, cap: int, W0: np.ndarray | None = None) -> np.ndarray:
    """All constraints when there are at most ``cap``; else those with normalized margin below
    ``1 + _SEED_SLACK`` under ``W0`` plus the ``_SEED_PER_QUERY`` smallest of every query (at
    most ``_WORKING_LIMIT``, the smallest first), or without ``W0`` per query the
    ``cap / #queries`` smallest margins under the aggregate ``sum_c A_c``."""
    if full.m <= cap:
        return np.arange(full.m)
    if W0 is not None:
        marg = full.apply(W0)
        marg = marg / marg.min()
        ws = np.flatnonzero((marg < 1.0 + _SEED_SLACK) | _per_query_smallest(full, marg, _SEED_PER_QUERY))
        if ws.size > _WORKING_LIMIT:
            ws = np.sort(ws[np.argsort(marg[ws])[:_WORKING_LIMIT]])
        return ws
    marg = full.apply(full.combine(np.ones(full.m)))
    per = max(1, cap // full.Qg.shape[0])
    return np.flatnonzero(_per_query_smallest(full, marg, per))


def _clean_duals(full: _Data, W: np.ndarray, alpha: np.ndarray, gap: float, tol: float):
    """Zero the duals off the support (``support_mask``), for exact complementary slackness,
    when the certificate stays within ``max(tol, gap)``; otherwise keep ``alpha``.

    Interior-point duals of inactive constraints are tiny but positive (``~ mu / slack``);
    removing them perturbs ``||sum alpha_c A_c||_2`` and can cost more than ``tol``.
    """
    marg = full.apply(W)
    clean = np.where(support_mask(marg / marg.min()), alpha, 0.0)
    g2 = certificate(full, W, clean)[0]
    return (clean, g2) if g2 <= max(tol, gap) else (alpha, gap)


def solve_nuclear(cs: ConstraintSet, *, tol: float, max_iter: int) -> SolverOutput:
    """Att-SVM* by the structured interior-point method; see the module docstring.

    Returns ``W`` (d, d), ``duals`` (n, K, T), ``ray`` (n, K, T) or None, ``iterations``,
    ``converged`` (False only when the iteration budget ran out), like ``solve_frobenius``.
    """
    n, K, T = cs.mask.shape
    d = cs.d
    i, k, t = cs.index()
    D, Qc = cs.vectors(i, k, t)
    g = i * K + k
    gq, grp = np.unique(g, return_inverse=True)
    Qg = cs.Q.reshape(n * K, d)[gq]
    nu = np.linalg.norm(D, axis=1)
    nq = np.linalg.norm(Qg, axis=1)[grp]

    def as_layout(v: np.ndarray) -> np.ndarray:
        out = np.zeros(cs.mask.shape)
        out[i, k, t] = v
        return out

    zero = (nu == 0) | (nq == 0)
    if zero.any():  # 0 >= 1: the constraint alone is infeasible, e_c is a dual ray
        ray = zero / zero.sum()
        return SolverOutput(W=None, duals=None, ray=as_layout(ray))
    su, sq = float(nu.max()), float(np.linalg.norm(Qg, axis=1).max())
    full = _Data(D / su, Qg / sq, grp)
    scale = su * sq  # the normalization: u' = u / su, q' = q / sq (W' = W scale)
    W0 = None
    if full.m > _MAX_WORKING:  # seed the working set from the Frobenius solution
        Wf, ray_result = _frobenius_or_ray(cs, _SEED_TOL, 0)
        if ray_result is not None:
            return ray_result
        W0 = Wf * scale  # in the normalized coordinates of ``full``
        if full.apply(W0).min() > 0:  # a feasible point (not guaranteed on a tiny budget)
            W0 = _reweighted_seed(cs, full, W0, scale)
        else:
            W0 = None
    ws = _initial_working_set(full, _MAX_WORKING, W0)
    iters, converged, reduce = 0, True, True
    best: tuple = (np.inf, None, None)
    last = None
    with threadpool_limits(limits=1, user_api="blas"):  # small dense algebra: 1 thread
        for rnd in range(_MAX_ROUNDS):
            if iters >= max_iter:
                converged = False
                break
            out = ipm(full, start=ws, tol=0.5 * tol, target=_TARGET * tol,
                      max_iter=min(max_iter - iters, _MAX_IPM_ITER), reduce=reduce)
            iters += out.iterations
            if out.status == "infeasible":
                ray = find_dual_ray(cs)  # exact and sparse (LP) when small enough
                return SolverOutput(W=None, duals=None, iterations=iters,
                                    ray=as_layout(out.ray) if ray is None else ray)
            last = (out.W, out.alpha) if out.W is not None else out.last
            if out.gap < best[0]:
                best = (out.gap, out.W, out.alpha)
            kept = np.flatnonzero(out.kept)
            log.info("nuclear ipm round %d: %d constraints at start, %d at the end, %s after %d "
                     "iterations, gap %.3g", rnd, ws.size, kept.size, out.status,
                     out.iterations, out.gap)
            if best[0] <= tol:
                break
            if iters >= max_iter:
                converged = False
                break
            if out.status == "reduced":
                log.warning("nuclear ipm: working set at its limit %d; stopping with gap %.3g",
                            _WORKING_LIMIT, best[0])
                break
            # numerical stall: restart from the held constraints plus those the last iterate
            # violates or nearly violates, without dropping
            marg = full.apply(last[0])
            mk = marg[kept].min()
            add = np.flatnonzero(~out.kept & (marg < (1.0 + 1e-3) * max(mk, 0.0)))
            if add.size == 0 and not reduce:
                break  # every relevant constraint was present: accuracy limit on this instance
            ws = np.union1d(kept, add[np.argsort(marg[add])[: max(_WORKING_LIMIT - kept.size, 0)]])
            reduce = False
    gap, W, alpha = best
    if W is None:
        return _feasible_fallback(cs, full, scale, last, W0, iters, converged)
    alpha, gap = _clean_duals(full, W, alpha, gap, tol)
    return SolverOutput(
        W=W / scale, duals=as_layout(alpha / scale), iterations=iters, converged=converged
    )


def _blend(full: _Data, W: np.ndarray, Wf: np.ndarray) -> np.ndarray:
    """The feasible point on the segment from ``W`` (possibly infeasible) to the feasible
    ``Wf`` with the smallest ``||W_t||_* / min margin`` (quasi-convex in ``t``: golden section)."""
    a, b = full.apply(W), full.apply(Wf)
    neg = a <= 0
    t0 = float(np.max(-a[neg] / (b[neg] - a[neg]))) if neg.any() else 0.0

    def upper(t):
        m = ((1 - t) * a + t * b).min()
        return np.inf if m <= 0 else float(np.linalg.norm((1 - t) * W + t * Wf, "nuc")) / m

    lo, hi = t0, 1.0
    r = 0.5 * (np.sqrt(5.0) - 1.0)
    for _ in range(40):
        t1, t2 = hi - r * (hi - lo), lo + r * (hi - lo)
        if upper(t1) <= upper(t2):
            hi = t2
        else:
            lo = t1
    t = min((lo, hi, 1.0), key=upper)
    return (1 - t) * W + t * Wf


def _frobenius_or_ray(cs: ConstraintSet, tol: float, iters: int):
    """``(W, None)``: the Frobenius solution of the shared constraints; or ``(None, result)``
    with the infeasibility ray, when the Frobenius solver finds none."""
    fr = solve_frobenius(cs, tol=tol, max_iter=10_000)
    if not fr.solved:
        return None, SolverOutput(W=None, duals=None, ray=fr.ray, iterations=iters)
    return fr.W, None


def _feasible_fallback(cs: ConstraintSet, full: _Data, scale: float, last, W0, iters: int,
                       converged: bool) -> SolverOutput:
    """No interior-point iterate was feasible on every constraint (working-set limit,
    iteration budget, numerical breakdown): decide feasibility with the Frobenius solver (the
    two programs share their constraints), return the best feasible point between the last
    iterate and its W, with the last duals (a valid lower bound: ``alpha >= 0`` on a subset of
    the constraints), or its ray."""
    if W0 is None:
        Wf, ray_result = _frobenius_or_ray(cs, 1e-6, iters)
        if ray_result is not None:
            return ray_result
        W0 = Wf * scale
    if last is None:
        W, alpha = W0, np.zeros(full.m)
    else:
        W, alpha = _blend(full, last[0], W0), last[1]
    i, k, t = cs.index()
    duals = np.zeros(cs.mask.shape)
    duals[i, k, t] = alpha / scale
    return SolverOutput(W=W / scale, duals=duals, iterations=iters, converged=converged)
