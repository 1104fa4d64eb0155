r"""Fast Att-SVM (Frobenius): cutting planes over a Lawson-Hanson dual solver.

Score convention: ``score_t = x_t^T W z``. Att-SVM with the Frobenius norm is a bias-free
hard-margin SVM on the vectors ``A_c = vec((x_{i,a} - x_it) q_ik^T)``:

.. math:: \min_W \tfrac12 \|W\|_F^2 \ \text{s.t.}\ \langle A_c, W\rangle \ge 1,

a least-distance program. Lawson & Hanson (Solving Least Squares Problems, 1974, ch. 23) solve
it through the NNLS problem ``min_{u >= 0} ||E u - f||`` with ``E = [A; 1^T]``,
``f = (0, ..., 0, 1)``: then ``alpha = u / (1 - 1^T u)`` are the optimal duals and
``W = sum alpha_c A_c``; ``1^T u = 1`` (zero residual) means infeasible, with ``u`` a dual ray.
We run Lawson-Hanson on the normal equations, whose Gram entries are
``(delta_c^T delta_c')(q_c^T q_c') + 1``, on a working set of constraints (incremental
Cholesky), and add the most violated constraints of the full set -- evaluated for all (i, t)
at once through ``X W q`` -- until the duality gap certifies optimality.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy.linalg import cho_solve, solve_triangular
from threadpoolctl import threadpool_limits

from attnlens.svm._constraints import ConstraintSet

log = logging.getLogger(__name__)


class _LawsonHanson:
    """NNLS ``min_{u>=0} u^T H u - 2 1^T u`` with ``H = G + 1 1^T`` over a growing column set."""

    def __init__(self, d: int):
        self.D = np.zeros((0, d))  # (m, d) deltas of the working set
        self.Qc = np.zeros((0, d))  # (m, d) queries of the working set
        self.keys = np.zeros(0, dtype=np.int64)  # flat constraint ids
        self.P: list[int] = []  # passive (positive) columns, positions in the working set
        self.u = np.zeros(0)  # values on P
        self.C = np.zeros((0, 0))  # (m, |P|) = H[:, P]
        self.L = np.zeros((0, 0))  # Cholesky factor of H[P, P]
        self.iterations = 0

    def _cols(self, rows: np.ndarray, cols: list[int]) -> np.ndarray:
        Dc, Qc = self.D[cols], self.Qc[cols]
        return (self.D[rows] @ Dc.T) * (self.Qc[rows] @ Qc.T) + 1.0

    def add_rows(self, keys: np.ndarray, D: np.ndarray, Qc: np.ndarray) -> None:
        m0 = self.keys.size
        self.keys = np.concatenate([self.keys, keys])
        self.D = np.vstack([self.D, D])
        self.Qc = np.vstack([self.Qc, Qc])
        new = np.arange(m0, self.keys.size)
        if self.P:
            self.C = np.vstack([self.C, self._cols(new, self.P)])
        else:
            self.C = np.zeros((self.keys.size, 0))

    def prune(self, keep: np.ndarray) -> None:
        """Keep working-set rows ``keep`` (must contain every passive column)."""
        pos = np.full(self.keys.size, -1)
        pos[keep] = np.arange(keep.size)
        self.keys, self.D, self.Qc, self.C = (
            self.keys[keep],
            self.D[keep],
            self.Qc[keep],
            self.C[keep],
        )
        self.P = [int(pos[p]) for p in self.P]

    def _refactor(self) -> None:
        if not self.P:
            self.L = np.zeros((0, 0))
            return
        H = self.C[self.P]
        self.L = np.linalg.cholesky(H + 1e-14 * np.trace(H) / max(len(self.P), 1) * np.eye(len(self.P)))

    def _append(self, j: int) -> bool:
        col = self._cols(np.arange(self.keys.size), [j])[:, 0]
        h = col[self.P]
        hjj = col[j]
        if self.P:
            lvec = solve_triangular(self.L, h, lower=True, check_finite=False)
            dd = hjj - lvec @ lvec
        else:
            lvec = np.zeros(0)
            dd = hjj
        if dd <= 1e-12 * hjj:
            return False
        k = len(self.P)
        L = np.zeros((k + 1, k + 1))
        L[:k, :k] = self.L
        L[k, :k] = lvec
        L[k, k] = np.sqrt(dd)
        self.L = L
        self.P.append(j)
        self.u = np.append(self.u, 0.0)
        self.C = np.column_stack([self.C, col])
        return True

    def solve(self, max_iter: int, wtol: float = 1e-12) -> bool:
        """Lawson-Hanson iterations until no column improves; False at the iteration cap.

        Adds up to ``max(4, |P|/4)`` improving columns per iteration (a block variant: the
        step-back loop keeps the iterate feasible, so every iteration still decreases the NNLS
        objective); the classic algorithm adds one.
        """
        skip: set[int] = set()
        while self.iterations < max_iter:
            w = 1.0 - (self.C @ self.u if self.P else np.zeros(self.keys.size))
            w[self.P] = -np.inf
            if skip:
                w[list(skip)] = -np.inf
            cand = np.flatnonzero(w > wtol)
            if cand.size == 0:
                return True
            self.iterations += 1
            block = 1  # classic Lawson-Hanson (block adds are unverified: see report)
            if cand.size > block:
                cand = cand[np.argpartition(-w[cand], block)[:block]]
            cand = cand[np.argsort(-w[cand])]
            added = [j for j in cand.tolist() if self._append(int(j)) or skip.add(int(j))]
            if not added:
                continue
            while True:
                s = cho_solve((self.L, True), np.ones(len(self.P)), check_finite=False)
                if np.all(s > 0):
                    self.u = s
                    break
                neg = s <= 0
                ratio = self.u[neg] / (self.u[neg] - s[neg])
                theta = float(ratio.min())
                self.u = self.u + theta * (s - self.u)
                keep = self.u > 1e-15 * max(self.u.max(), 1e-300)
                hit = np.zeros(len(self.P), dtype=bool)
                hit[np.flatnonzero(neg)[ratio <= theta * (1 + 1e-12)]] = True
                keep &= ~hit
                self.P = [p for p, kp in zip(self.P, keep, strict=True) if kp]
                self.u = self.u[keep]
                self.C = self.C[:, keep]
                self._refactor()
                if not self.P:
                    break
        return False


def solve_frobenius(
    cs: ConstraintSet,
    *,
    tol: float,
    max_iter: int,
    batch: int | None = None,
    small: int = 0,
) -> dict:
    """Cutting-plane Lawson-Hanson solve of the Frobenius Att-SVM; see the module docstring."""
    n, K, T = cs.mask.shape
    d = cs.d
    groups = np.flatnonzero(cs.mask.reshape(n * K, T).any(axis=1))
    # start: per output position, the competitor with the smallest margin under a mean direction
    i_all, k_all, t_all = cs.index()
    W0 = cs.combine(np.ones(i_all.size), i_all, k_all, t_all)
    M0 = cs.margins(W0).reshape(n * K, T)
    t0 = np.argmin(M0[groups], axis=1)
    lh = _LawsonHanson(d)
    in_ws = np.zeros(n * K * T, dtype=bool)

    def add(flat: np.ndarray) -> None:
        flat = flat[~in_ws[flat]]
        if flat.size == 0:
            return
        in_ws[flat] = True
        g, t = np.divmod(flat, T)
        i, k = np.divmod(g, K)
        D, Qc = cs.vectors(i, k, t)
        lh.add_rows(flat, D, Qc)

    if cs.count <= small:  # small problems: every constraint in the working set at once
        add(np.flatnonzero(cs.mask.reshape(-1)))
    else:
        add(groups * T + t0)
    batch = batch or max(64, groups.size // 4)
    W = np.zeros((d, d))
    alpha = np.zeros(0)
    outer = 0
    converged = False
    limiter = threadpool_limits(limits=1, user_api="blas")  # small dense algebra: 1 thread
    while True:
        outer += 1
        limiter.restore_original_limits()
        limiter = threadpool_limits(limits=1, user_api="blas")
        try:
            finished = lh.solve(max_iter)
        finally:
            limiter.restore_original_limits()
        su = float(lh.u.sum())
        if su >= 1.0 - 1e-10:
            ray = np.zeros(n * K * T)
            ray[lh.keys[lh.P]] = lh.u
            return {"W": None, "duals": None, "ray": ray.reshape(n, K, T), "iterations": lh.iterations, "converged": True}
        alpha = lh.u / (1.0 - su)
        keys = lh.keys[lh.P]
        g, t = np.divmod(keys, T)
        i, k = np.divmod(g, K)
        W = cs.combine(alpha, i, k, t)
        M = cs.margins(W).reshape(n * K, T)
        mmin = float(M.min())
        nw2 = float(np.sum(W * W))
        gap = 1.0 - alpha.sum() * mmin / nw2 if nw2 > 0 and mmin > 0 else np.inf
        log.info("active set: outer %d, |S|=%d, |P|=%d, gap %.3g", outer, lh.keys.size, len(lh.P), gap)
        if gap <= tol:
            converged = True
            break
        if not finished:
            break
        # most violated competitor per output position, the worst `batch` of them
        tg = np.argmin(M, axis=1)
        mg = M[np.arange(n * K), tg]
        viol = np.flatnonzero(mg < 1.0 - 0.1 * tol)
        flat = viol * T + tg[viol]
        fresh = ~in_ws[flat]
        flat, mg_f = flat[fresh], mg[viol][fresh]
        if flat.size == 0:
            converged = True  # nothing left to add: inner accuracy is the limit
            break
        if flat.size > batch:
            flat = flat[np.argpartition(mg_f, batch)[:batch]]
        if lh.keys.size > 4 * len(lh.P) + 4 * batch:
            margins_ws = M.reshape(-1)[lh.keys]
            keep = np.zeros(lh.keys.size, dtype=bool)
            keep[lh.P] = True
            keep |= margins_ws < 1.0 + 1e-3
            dropped = lh.keys[~keep]
            in_ws[dropped] = False
            lh.prune(np.flatnonzero(keep))
        add(flat)
        if lh.iterations >= max_iter:
            break
    duals = np.zeros(n * K * T)
    duals[lh.keys[lh.P]] = alpha
    return {
        "W": W,
        "duals": duals.reshape(n, K, T),
        "ray": None,
        "iterations": lh.iterations,
        "converged": converged,
    }
