r"""Matrix-free operators of the Frobenius Att-SVM constraint matrix, and a block-Jacobi PCG.

Score convention: ``score_t = x_t^T W z``. Constraint ``c = (i, k, t)`` has the matrix
``A_c = u_c q_g^T`` with ``u_c = x_{i,a_ik} - x_it`` and the query ``q_g`` of its group
``g = (i, k)``. Two products are all the solver needs:

- ``A W = (u_c^T W q_g)_c`` (margins): ``W q_g`` once per group (one GEMM), then token dots;
- ``A^T y = sum_c y_c u_c q_g^T = R^T Q`` with ``r_g = sum_{c in g} y_c u_c`` (one GEMM).

Both cost ``O(#groups d^2 + #constraints d)``. :class:`Constraints` evaluates them on every
constraint without forming ``u_c``; :class:`Block` gathers the ``u_c`` of a subset (a working
set) once and reuses them. The dual Gram ``G = A A^T`` has entries
``(u_c^T u_{c'}) (q_g^T q_{g'})``; it is only formed explicitly for small subsets.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from attnlens.svm._solvers.constraints import ConstraintSet


class Constraints:
    """Every constraint of a :class:`ConstraintSet`, in the C order of its mask (flat ids)."""

    def __init__(self, cs: ConstraintSet):
        n, K, T = cs.mask.shape
        d = cs.d
        self.n, self.K, self.T, self.d = n, K, T, d
        self.X = cs.X  # (n, T, d)
        self.mask = cs.mask  # (n, K, T)
        i, k, t = cs.index()
        self.g = i * K + k  # (m,) group of each constraint
        self.i, self.t = i, t
        self.m = int(i.size)
        self.Qg = np.ascontiguousarray(cs.Q.reshape(n * K, d))  # (nK, d) queries
        self.Xa = cs.X[np.repeat(np.arange(n), K), cs.selection.reshape(-1)]  # (nK, d)
        self.qn2 = np.einsum("gd,gd->g", self.Qg, self.Qg)  # (nK,) ||q_g||^2

    def unorm2(self) -> np.ndarray:
        """``||u_c||^2 = ||x_a||^2 - 2 x_a^T x_t + ||x_t||^2`` of every constraint, (m,)."""
        n, K, d = self.n, self.K, self.d
        xt2 = np.einsum("itd,itd->it", self.X, self.X)  # (n, T)
        xa2 = np.einsum("gd,gd->g", self.Xa, self.Xa).reshape(n, K, 1)
        if K == 1:
            cross = np.einsum("itd,id->it", self.X, self.Xa)[:, None, :]  # (n, 1, T)
        else:
            cross = np.matmul(self.Xa.reshape(n, K, d), self.X.transpose(0, 2, 1))  # (n, K, T)
        return np.maximum(xa2 + xt2[:, None, :] - 2.0 * cross, 0.0)[self.mask]

    def margins(self, W: np.ndarray) -> np.ndarray:
        """``A W``: the margins of every constraint, (m,)."""
        n, K, d = self.n, self.K, self.d
        WQ = self.Qg @ W.T  # (nK, d): W q_g
        sa = np.einsum("gd,gd->g", self.Xa, WQ)  # (nK,) selected-token scores
        if K == 1:
            S = np.einsum("itd,id->it", self.X, WQ)[:, None, :]  # (n, 1, T)
        else:
            S = np.matmul(WQ.reshape(n, K, d), self.X.transpose(0, 2, 1))  # (n, K, T)
        return (sa.reshape(n, K, 1) - S)[self.mask]

    def combine(self, y: np.ndarray) -> np.ndarray:
        """``A^T y = sum_c y_c u_c q_g^T``, (d, d)."""
        n, K, T, d = self.n, self.K, self.T, self.d
        Y = np.zeros((n, K, T))
        Y[self.mask] = y
        s = Y.sum(axis=2).reshape(-1)  # (nK,)
        if K == 1:
            YX = np.einsum("it,itd->id", Y[:, 0], self.X)  # (n, d)
        else:
            YX = np.matmul(Y, self.X).reshape(n * K, d)  # (nK, d)
        R = s[:, None] * self.Xa - YX  # (nK, d)
        return R.T @ self.Qg

    def block(self, ids: np.ndarray) -> Block:
        """Gather the constraints ``ids`` (sorted flat ids)."""
        g = self.g[ids]
        U = self.Xa[g] - self.X[self.i[ids], self.t[ids]]
        return Block(ids, g, U, self)


class Block:
    """A subset of constraints (sorted flat ids) with their ``u_c`` gathered, (s, d)."""

    def __init__(self, ids: np.ndarray, g: np.ndarray, U: np.ndarray, full: Constraints):
        self.ids, self.g, self.U, self.full = ids, g, U, full
        self.size = int(ids.size)
        if self.size:
            first = np.ones(self.size, dtype=bool)
            first[1:] = g[1:] != g[:-1]
            self.starts = np.flatnonzero(first)  # group runs (ids are sorted, so groups are)
            self.inv = np.cumsum(first) - 1  # (s,) run of each row
            self.ug = g[self.starts]
        else:
            self.starts = np.zeros(0, dtype=np.int64)
            self.inv = np.zeros(0, dtype=np.int64)
            self.ug = np.zeros(0, dtype=np.int64)
        self.Qu = full.Qg[self.ug]  # (u, d)
        indptr = np.append(self.starts, self.size)
        # (u, s) group-membership matrix; its data are overwritten by the weights in combine()
        self._S = sp.csr_matrix(
            (np.ones(self.size), np.arange(self.size), indptr), shape=(self.ug.size, self.size)
        )
        self._low: tuple | None = None

    def _single(self) -> tuple:
        """float32 copies ``(U, Q_u, S)`` for the low-precision products (made once)."""
        if self._low is None:
            S = self._S.astype(np.float32)
            self._low = (self.U.astype(np.float32), self.Qu.astype(np.float32), S)
        return self._low

    def sub(self, keep: np.ndarray) -> Block:
        """The rows ``keep`` (boolean mask or sorted positions) of this block."""
        return Block(self.ids[keep], self.g[keep], self.U[keep], self.full)

    def margins(self, W: np.ndarray, low: bool = False) -> np.ndarray:
        """``A_S W``, (s,); ``low``: in float32 (about 2x faster, relative error ~1e-7)."""
        if not self.size:
            return np.zeros(0)
        if low:
            U, Qu, _ = self._single()
            W = W.astype(np.float32)
        else:
            U, Qu = self.U, self.Qu
        P = Qu @ W.T  # (u, d): W q_g per group
        return np.einsum("cd,cd->c", U, P[self.inv])

    def combine(self, y: np.ndarray, low: bool = False) -> np.ndarray:
        """``A_S^T y``, (d, d); ``low``: in float32."""
        if not self.size:
            return np.zeros((self.full.d, self.full.d))
        if low:
            U, Qu, S = self._single()
        else:
            U, Qu, S = self.U, self.Qu, self._S
        S.data[:] = y
        R = S @ U  # (u, d): r_g = sum_{c in g} y_c u_c
        return R.T @ Qu

    def gram(self) -> np.ndarray:
        """``G_SS = (U U^T) * (Q_g Q_g^T)``, (s, s): for small blocks only."""
        V = self.Qu[self.inv]
        return (self.U @ self.U.T) * (V @ V.T)

    def matrix(self) -> np.ndarray:
        """The rows ``vec(A_c)`` (C order, ``A_c[a, b] = u_a q_b``), (s, d^2): small blocks only."""
        V = self.Qu[self.inv]
        return np.einsum("ca,cb->cab", self.U, V).reshape(self.size, -1)


class BlockJacobi:
    """Inverse of the group-diagonal blocks of ``shift I + G_SS`` (one block per query group)."""

    def __init__(self, block: Block, shift: float):
        counts = np.diff(np.append(block.starts, block.size))
        self.buckets: list[tuple[np.ndarray, np.ndarray]] = []
        qn2 = block.full.qn2[block.ug]
        for b in np.unique(counts):
            runs = np.flatnonzero(counts == b)
            rows = block.starts[runs][:, None] + np.arange(b)[None, :]  # (r, b)
            Ub = block.U[rows]  # (r, b, d)
            B = np.matmul(Ub, Ub.transpose(0, 2, 1)) * qn2[runs][:, None, None]
            idx = np.arange(b)
            diag = B[:, idx, idx]  # (r, b) copy
            B[:, idx, idx] += shift + 1e-12 * diag.max(axis=1, keepdims=True) + 1e-300
            self.buckets.append((rows, np.linalg.inv(B)))

    def __call__(self, r: np.ndarray) -> np.ndarray:
        out = np.empty_like(r)
        for rows, inv in self.buckets:
            out[rows] = np.einsum("rij,rj->ri", inv, r[rows])
        return out


def pcg(matvec, b: np.ndarray, precond, *, x0, rtol: float, maxiter: int, accept=None):
    """Preconditioned conjugate gradients for SPD ``matvec``; returns ``(x, iterations, relres)``.

    Stops when ``||b - matvec(x)|| <= rtol ||b||`` and, if given, ``accept(residual)`` holds
    (otherwise ``rtol`` is tightened tenfold and the iteration continues), or at ``maxiter``.
    """
    bn = float(np.linalg.norm(b))
    if bn == 0.0:
        return np.zeros_like(b), 0, 0.0
    if x0 is None:
        x = np.zeros_like(b)
        r = b.copy()
    else:
        x = x0.copy()
        r = b - matvec(x)
    z = precond(r)
    p = z.copy()
    rz = float(r @ z)
    it = 0
    rn = float(np.linalg.norm(r))
    while it < maxiter:
        if rn <= rtol * bn:
            if accept is None or accept(r):
                break
            rtol *= 0.1
        Ap = matvec(p)
        pAp = float(p @ Ap)
        if not pAp > 0:
            break
        a = rz / pAp
        x += a * p
        r -= a * Ap
        it += 1
        rn = float(np.linalg.norm(r))
        z = precond(r)
        rz_new = float(r @ z)
        p = z + (rz_new / rz) * p
        rz = rz_new
    return x, it, rn / bn
