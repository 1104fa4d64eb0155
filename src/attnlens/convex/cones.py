r"""Pre-activations as linear maps of the first-layer weights, and the ReLU cone constraints.

Sahiner et al., "Unraveling Attention via Convex Duality", ICML 2022 (arXiv 2205.08078);
Pilanci & Ergen, ICML 2020; Sahiner et al., ICLR 2021 ("vector-output ReLU networks").
Every head's first-layer pre-activation is linear in the first-layer weight ``w = vec(W1)``:

* self-attention: ``pre_{i,t,u} = x_{it}^T W1 x_{iu}``, row ``x_{it} (x) x_{iu}`` (p = d^2);
* MLP-Mixer: ``pre_{i,t,e} = (W1 X_i)_{te}``, row ``e_t (x) X_i[:, e]`` (p = s^2);
* FNO / block FNO: ``pre_{i,t} = (circ(X_i) vec(W1))_t``, row ``X_i[(t+u) % s, e]`` over
  ``(u, e)`` (p = s d_group);
* MLP: ``pre_i = xbar_i^T w`` (p = d).

A gate generator ``h_j`` fixes the pattern ``D_j = 1[M h_j >= 0]`` (``M`` the stacked rows).
A ReLU unit with weight ``w`` has ``relu(M w) = D_j (M w)`` exactly when ``w`` lies in the
polyhedral cone

.. math::  \mathcal K_j = \{ w : (2 D_j - 1) \circ (M w) \ge 0 \},

and ``h_j`` itself lies in it (strictly, wherever its pre-activation is non-zero), which the
solver uses to restore exact feasibility. Rows are normalized to unit length (the cone does not
change) and rows that are zero for every weight are dropped.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import nnls

from attnlens.convex.gated_attention import CHUNK_ELEMENTS, gate_patterns
from attnlens.convex.operators import check_dense_size, group_slices

#: projections hold every constraint to ``-rtol ||z||``
PROJECTION_RTOL = 1e-12
#: primal-dual active-set steps tried on a failed warm start before the cutting-plane NNLS
REPAIR_ROUNDS = 4
#: most violated rows added to an active set per step
REPAIR_ADD = 8
#: the cutting plane's working set holds at most this many times ``p`` rows (plus new ones)
WORKING_SET = 4

_RELU_ADVICE = ("the ReLU program is meant for small and medium problems: use fewer samples or "
                "tokens, or activation='gated_relu'.")


def pre_activation_rows(X: np.ndarray, head: str) -> np.ndarray:
    """Unsigned pre-activation matrix ``M`` (N, p) of ``head`` on tokens ``X`` (n, s, d).

    For bfno pass the tokens of one channel group. Row order: sample-major.
    """
    n, s, d = X.shape
    if head == "self_attention":
        check_dense_size(n * s * s * d * d, "self-attention cone constraints", _RELU_ADVICE)
        return np.einsum("nta,nub->ntuab", X, X, optimize=True).reshape(n * s * s, d * d)
    if head == "mixer":
        check_dense_size(n * s * d * s * s, "MLP-Mixer cone constraints", _RELU_ADVICE)
        M = np.zeros((n, s, d, s, s))  # (i, t, e, t', u)
        idx = np.arange(s)
        M[:, idx, :, idx, :] = X.transpose(0, 2, 1)[None]  # row (i,t,e) col (t,u): X[i,u,e]
        return M.reshape(n * s * d, s * s)
    if head in ("fno", "bfno"):
        check_dense_size(n * s * s * d, "FNO cone constraints", _RELU_ADVICE)
        shift = (np.arange(s)[:, None] + np.arange(s)[None, :]) % s  # (t, u) -> (t+u) % s
        return X[:, shift, :].reshape(n * s, s * d)  # row (i,t), col (u,e)
    return X.mean(axis=1)  # mlp: (n, d)


class ConeBlock:
    """Cone ``K_j = {w : S_j * (M w) >= 0}`` of one gate (``M`` shared by the gates of a group).

    ``M`` (N, p) has unit rows; ``signs`` (N,) is ``2 D_j - 1``; ``interior`` (p,) is the
    gate generator ``vec(h_j)`` (inside the cone). Subclasses that never store ``M``
    (:class:`AttentionCone`) override :meth:`rows`, :meth:`apply` and :meth:`adjoint`.
    """

    #: cutting-plane NNLS projections so far (the expensive kind; a statistic for callers)
    nnls_calls = 0

    def __init__(self, M: np.ndarray, signs: np.ndarray, interior: np.ndarray):
        self.M = M  # (N, p), shared
        self.signs = signs  # (N,)
        self.interior = interior  # (p,)

    @property
    def p(self) -> int:
        return self.M.shape[1]

    def rows(self, idx: np.ndarray) -> np.ndarray:
        """Unit rows ``M[idx]`` (len(idx), p), unsigned."""
        return self.M[idx]

    def apply(self, W: np.ndarray) -> np.ndarray:
        """``C W`` for W (p, k) -> (N, k)."""
        return self.signs[:, None] * (self.M @ W)

    def adjoint(self, L: np.ndarray) -> np.ndarray:
        """``C^T L`` for L (N, k) -> (p, k)."""
        return self.M.T @ (self.signs[:, None] * L)

    def dense(self) -> np.ndarray:
        """The signed constraint matrix ``C`` (N, p) (for the cvxpy reference)."""
        return self.signs[:, None] * self.M

    def column_chunks(self, k: int):
        """Column slices of a (p, k) argument whose ``C W`` stays under :data:`CHUNK_ELEMENTS`."""
        step = max(1, CHUNK_ELEMENTS // max(len(self.signs), 1))
        return [slice(lo, min(lo + step, k)) for lo in range(0, k, step)]

    def min_values(self, W: np.ndarray) -> np.ndarray:
        """``min_rows (C W)`` per column of ``W`` (p, k) -> (k,), in column chunks."""
        out = np.full(W.shape[1], np.inf)
        for sl in self.column_chunks(W.shape[1]):
            out[sl] = self.apply(W[:, sl]).min(axis=0, initial=np.inf)
        return out

    def active_sets(self, X: np.ndarray, rtol: float = 1e-9) -> np.ndarray:
        """Warm active sets (k, p) for columns of ``X`` (p, k) that lie in the cone.

        Row ``i`` is taken when ``C_i x <= rtol ||x||`` (the rows a projection onto the cone
        that ended at ``x`` can have used), the ``p`` smallest if more; ``-1`` padded, empty
        for zero columns. A hint for :meth:`project` / :meth:`prox`, which check it.
        """
        k = X.shape[1]
        out = np.full((k, self.p), -1, dtype=np.intp)
        nrm = np.linalg.norm(X, axis=0)
        live = np.flatnonzero(nrm > 0)
        for sl in self.column_chunks(live.size):  # (N, chunk) at a time
            V = self.apply(X[:, live[sl]])
            for i, col in enumerate(live[sl]):
                idx = np.flatnonzero(V[:, i] <= rtol * nrm[col])
                if idx.size > self.p:
                    idx = idx[np.argpartition(V[idx, i], self.p - 1)[: self.p]]
                out[col, : idx.size] = idx
        return out

    def _warm_solve(self, Z: np.ndarray, warm: np.ndarray | None, clip: bool = False):
        """Least squares on the warm active sets: ``(X, mu, warm)``.

        ``X = Z + C_A^T mu`` column by column, ``mu`` (k, p) the multipliers of the active set
        ``A`` (zero where a column has no warm set, and on the padding; clipped at zero with
        ``clip``); ``warm`` (k, p) the checked active sets (-1 padded). Nothing is checked
        against the other constraints.
        """
        p, k = Z.shape
        if warm is None or warm.shape != (k, p):
            warm = np.full((k, p), -1, dtype=np.intp)
        X = Z.copy()
        mu = np.zeros((k, p))
        mask = (warm >= 0).astype(np.float64)  # (k, p)
        cols = np.flatnonzero(mask.any(axis=1))
        if cols.size:  # batched least squares on the warm active sets (zero-padded)
            idx, msk = np.maximum(warm[cols], 0), mask[cols]
            CA = (self.rows(idx.ravel()).reshape(idx.shape + (p,))
                  * (self.signs[idx] * msk)[:, :, None])  # (k', p, p)
            # normal equations (NNLS active sets are linearly independent); padding -> identity
            G = CA @ CA.transpose(0, 2, 1) + np.eye(p)[None] * (1.0 - msk)[:, None, :]
            G += 1e-13 * np.eye(p)[None]
            m = np.linalg.solve(G, -(CA @ Z[:, cols].T[:, :, None]))[:, :, 0]  # (k', p)
            mu[cols] = np.maximum(m, 0.0) * msk if clip else m * msk
            X[:, cols] = Z[:, cols] + (CA.transpose(0, 2, 1) @ mu[cols][:, :, None])[:, :, 0].T
        return X, mu, warm

    def norm_bounds(self, Z: np.ndarray, warm: np.ndarray | None = None) -> np.ndarray:
        r"""Upper bounds on :math:`\|\Pi_{\mathcal K}(z)\|` for every column of ``Z`` (p, k).

        For any :math:`\mu \ge 0`, :math:`\|\Pi_{\mathcal K}(z)\| = \max_{w \in \mathcal K,
        \|w\| \le 1} z^\top w \le \|z + C^\top \mu\|` (``mu^T C w >= 0`` on the cone). ``mu`` is
        the least-squares multiplier on the warm active set clipped at zero (``||z||`` without
        one): one small batched solve, no pass over the constraints. Exact when the warm set is
        the active set of the projection.
        """
        X, _, _ = self._warm_solve(Z, warm, clip=True)
        return np.linalg.norm(X, axis=0)

    def project(self, Z: np.ndarray, warm: np.ndarray | None = None,
                rtol: float = PROJECTION_RTOL):
        r"""Euclidean projection of every column of ``Z`` (p, k) onto the cone.

        :math:`\Pi_{\mathcal K}(z) = z + C^\top \mu` with
        :math:`\mu = \arg\min_{\mu \ge 0} \|z + C^\top \mu\|` (the dual is a non-negative
        least squares; Lawson & Hanson 1974). At most ``p`` constraints are active, so the
        active sets of the previous call (``warm``: (k, p) row indices, padded with -1) are
        tried first: the least-squares solve on an active set is the exact projection when its
        multipliers are non-negative and the result satisfies every constraint (KKT).
        Otherwise up to :data:`REPAIR_ROUNDS` primal-dual active-set steps are tried, then a
        cutting-plane NNLS adds the most violated constraints until all hold up to
        ``rtol * ||z||``. Returns ``(X, active)`` (``active`` to pass back as ``warm``).
        """
        X, active, _ = self.project_or_bound(Z, None, warm, rtol)
        return X, active

    def project_or_bound(self, Z: np.ndarray, stop: np.ndarray | None,
                         warm: np.ndarray | None = None, rtol: float = PROJECTION_RTOL,
                         max_rounds: int | None = None):
        """:meth:`project`, giving up on columns shown not to matter: ``(X, active, exact)``.

        A column whose cutting-plane bound falls to ``stop[k]`` or below (or that used up
        ``max_rounds`` cutting-plane rounds) may stop early with ``X[:, k] = z + C^T mu``
        (``mu >= 0``, so ``||X[:, k]||`` bounds its projection's norm) and ``exact[k]`` False;
        the others are exact projections.
        """
        X, mu, warm = self._warm_solve(Z, warm)
        return self._complete(Z, X, mu, warm, stop, rtol, max_rounds)

    def _complete(self, Z, X, mu, warm, stop, rtol, max_rounds=None):
        """:meth:`project_or_bound` from the warm least squares ``X, mu`` on ``warm``."""
        active = warm.copy()
        exact = np.ones(Z.shape[1], dtype=bool)
        tol = rtol * np.maximum(np.linalg.norm(Z, axis=0), 1e-300)
        todo = np.arange(Z.shape[1])
        for attempt in range(REPAIR_ROUNDS + 1):
            nonneg = np.all(mu[todo] >= 0, axis=1)
            if stop is not None:  # mu >= 0: ||x|| bounds the projection's norm
                done = nonneg & (np.linalg.norm(X[:, todo], axis=0) <= stop[todo])
                exact[todo[done]] = False
                todo, nonneg = todo[~done], nonneg[~done]
            fail = ~nonneg
            new = np.full((todo.size, self.p), -1, dtype=np.intp)
            for sl in self.column_chunks(todo.size):  # C X in column chunks, never (N, k)
                V = self.apply(X[:, todo[sl]])  # (N, chunk)
                fail[sl] |= V.min(axis=0, initial=np.inf) < -tol[todo[sl]]
                if attempt == REPAIR_ROUNDS:
                    continue
                for i in np.flatnonzero(fail[sl]):
                    col = todo[sl.start + i]
                    A = self._repair_set(active[col], mu[col], V[:, i], tol[col])
                    new[sl.start + i, : A.size] = A
            todo, new = todo[fail], new[fail]
            if not todo.size or attempt == REPAIR_ROUNDS:
                break
            X[:, todo], mu[todo], active[todo] = self._warm_solve(Z[:, todo], new)
        for col in todo:
            X[:, col], A, exact[col] = self._nnls_project(
                Z[:, col], tol[col], warm[col][warm[col] >= 0],
                -1.0 if stop is None else float(stop[col]), max_rounds)
            active[col] = -1
            active[col, : len(A)] = A
        return X, active, exact

    def _repair_set(self, active: np.ndarray, mu: np.ndarray, v: np.ndarray,
                    tol: float) -> np.ndarray:
        """Primal-dual active-set step for one column: drop the rows with negative multipliers,
        add the :data:`REPAIR_ADD` most violated rows of ``v = C x`` (a partition, not a sort)."""
        keep = active[(active >= 0) & (mu >= 0)]
        viol = np.flatnonzero(v < -tol)
        room = min(REPAIR_ADD, self.p - keep.size)
        if viol.size > room:
            viol = viol[np.argpartition(v[viol], max(room - 1, 0))[:room]]
        return np.unique(np.concatenate([keep, viol]))

    def prox(self, Z: np.ndarray, tau: float, warm: np.ndarray | None = None,
             rtol: float = PROJECTION_RTOL):
        r"""The prox of :math:`\tau \|x\| + I_{\mathcal K}(x)`, column by column.

        For a convex cone it is :math:`\mathrm{shrink}_\tau(\Pi_{\mathcal K}(z))` (project,
        then shrink the norm by ``tau``). A column whose :meth:`norm_bounds` is at most ``tau``
        shrinks to exactly zero whatever its projection, so only the others are projected (on a
        sparse iterate most columns are zero), and their cutting planes stop once their bound
        reaches ``tau``. Returns ``(X, active)`` as :meth:`project`; skipped columns keep their
        warm sets.
        """
        P, mu, active = self._warm_solve(Z, warm)
        bound = np.linalg.norm(P, axis=0)  # as norm_bounds where every mu >= 0
        neg = np.flatnonzero(np.any(mu < 0, axis=1))
        if neg.size:
            bound[neg] = self.norm_bounds(Z[:, neg], active[neg])
        X = np.zeros_like(Z)
        live = np.flatnonzero(bound > tau)
        if live.size:  # an early-stopped column has ||P|| <= tau: shrunk to zero below
            P, active[live], _ = self._complete(Z[:, live], P[:, live], mu[live], active[live],
                                                np.full(live.size, tau), rtol)
            nrm = np.linalg.norm(P, axis=0)
            X[:, live] = P * (np.maximum(1.0 - tau / np.maximum(nrm, 1e-300), 0.0))[None, :]
        return X, active

    def _nnls_project(self, z: np.ndarray, tol: float, start, stop: float = -1.0,
                      max_rounds: int | None = None):
        """Cutting-plane NNLS: ``(x, active, exact)``. Every round's ``x = z + C_W^T mu``
        (``mu >= 0``) bounds the projection's norm, so the column is given up (``exact``
        False) as soon as ``||x|| <= stop`` (it cannot matter to the caller) or after
        ``max_rounds`` rounds (a bound is all the caller asked for)."""
        self.nnls_calls += 1
        v = self.apply(z[:, None])[:, 0]
        W = np.unique(np.concatenate([start, np.argpartition(v, min(2 * self.p, len(v) - 1))
                                      [: 2 * self.p]]))
        for rnd in range(200):
            CW = self.signs[W, None] * self.rows(W)  # (|W|, p)
            mu, _ = nnls(CW.T, -z, maxiter=50 * max(len(W), 1))
            x = z + CW.T @ mu
            if np.linalg.norm(x) <= stop or (max_rounds is not None and rnd + 1 >= max_rounds):
                return x, W[mu > 0][: self.p], False
            v = self.apply(x[:, None])[:, 0]
            new = np.flatnonzero(v < -tol)
            if not new.size:
                return x, W[mu > 0][: self.p], True
            if new.size > 2 * self.p:  # the 2 p most violated (a partition of those only)
                new = new[np.argpartition(v[new], 2 * self.p - 1)[: 2 * self.p]]
            W = self._working_set(W, mu, v, new)
        raise RuntimeError("cone projection did not converge (cutting-plane NNLS).")

    def _working_set(self, W: np.ndarray, mu: np.ndarray, v: np.ndarray,
                     new: np.ndarray) -> np.ndarray:
        """The next round's rows: ``W`` and the violated ``new``. Over :data:`WORKING_SET`
        ``* p`` rows in all, rows of ``W`` with a zero multiplier and the most slack
        (``v = C x``) leave, as many as the excess (rows with a positive one always stay):
        ``x`` stays the projection onto the cone of the rows kept, so the distance still grows
        every round. (Keeping only the support took 5x more rounds on self-attention cones;
        keeping every row, NNLS on thousands of columns.)"""
        extra = W.size + new.size - WORKING_SET * self.p
        if extra > 0:
            zero = np.flatnonzero(mu <= 0)
            if zero.size > extra:
                zero = zero[np.argpartition(-v[W[zero]], extra - 1)[:extra]]
            W = np.delete(W, zero)
        return np.unique(np.concatenate([W, new]))


class AttentionCone(ConeBlock):
    """The self-attention cone without its (n s^2, d^2) constraint matrix.

    Row ``(i, t, u)`` of ``M`` is ``xhat_it (x) xhat_iu`` (tokens scaled to unit length, the
    same unit rows as :func:`pre_activation_rows` normalized), so ``M w`` is
    ``xhat_t^T W1 xhat_u`` for every sample: two GEMMs, ``O(n s d (d + s))`` per column
    instead of ``O(n s^2 d^2)``, and memory ``O(n s^2)`` (the signs) instead of
    ``O(n s^2 d^2)``. Rows of all-zero (padding) tokens are zero rows (never violated) where
    the dense cone drops them. ``Xhat`` is shared by the gates.
    """

    def __init__(self, Xhat: np.ndarray, signs: np.ndarray, interior: np.ndarray):
        self.Xhat = Xhat  # (n, s, d)
        self.signs = signs  # (n s s,)
        self.interior = interior  # (d^2,)
        self.M = None  # never formed: see :meth:`dense`

    @property
    def p(self) -> int:
        return self.Xhat.shape[2] ** 2

    def rows(self, idx: np.ndarray) -> np.ndarray:
        n, s, d = self.Xhat.shape
        i, t, u = np.unravel_index(np.asarray(idx), (n, s, s))
        return (self.Xhat[i, t, :, None] * self.Xhat[i, u, None, :]).reshape(-1, d * d)

    def apply(self, W: np.ndarray) -> np.ndarray:
        n, s, d = self.Xhat.shape
        k = W.shape[1]
        T1 = self.Xhat.reshape(n * s, d) @ W.reshape(d, d * k)  # (n s, b k): xhat_t^T W1
        T1 = T1.reshape(n, s, d, k).transpose(0, 2, 1, 3).reshape(n, d, s * k)  # (n, b, t k)
        out = np.matmul(self.Xhat, T1).reshape(n, s, s, k)  # (n, u, t, k)
        return self.signs[:, None] * out.transpose(0, 2, 1, 3).reshape(n * s * s, k)

    def adjoint(self, L: np.ndarray) -> np.ndarray:
        n, s, d = self.Xhat.shape
        k = L.shape[1]
        Ls = (self.signs[:, None] * L).reshape(n, s, s, k)  # (n, t, u, k)
        B = np.matmul(Ls.transpose(0, 1, 3, 2).reshape(n, s * k, s), self.Xhat)  # (n, t k, b)
        G = self.Xhat.reshape(n * s, d).T @ B.reshape(n * s, k * d)  # (a, k b)
        return G.reshape(d, k, d).transpose(0, 2, 1).reshape(d * d, k)

    def dense(self) -> np.ndarray:
        N = len(self.signs)
        check_dense_size(N * self.p, "self-attention cone constraints", _RELU_ADVICE)
        return self.signs[:, None] * self.rows(np.arange(N))


def attention_cones(X: np.ndarray, gates: np.ndarray):
    """Matrix-free cones and patterns of the self-attention gates (see :func:`build_cones`)."""
    n, s, d = X.shape
    norms = np.linalg.norm(X, axis=2, keepdims=True)
    Xhat = np.divide(X, norms, out=np.zeros_like(X), where=norms > 0)
    D = np.empty((len(gates), n, s, s))
    for lo, j, Dc in gate_patterns(X, gates):
        D[j, lo:lo + len(Dc)] = Dc
    patterns = [Dj.ravel() for Dj in D]
    cones = [AttentionCone(Xhat, 2.0 * Dj - 1.0, np.asarray(H, dtype=np.float64).ravel())
             for H, Dj in zip(gates, patterns, strict=True)]
    return cones, patterns


def build_cones(X: np.ndarray, head: str, gates: np.ndarray, groups: int = 1):
    """Cones and patterns of every (group, gate) block, in :func:`build_program` order.

    Returns ``(cones, patterns)``; ``patterns[b]`` is the 0/1 pattern ``D`` of block b as a
    flat (n * rows_per_sample,) array, computed from the *unnormalized* ``M h`` (so the
    pattern equals the one the non-convex ReLU unit with weight ``h`` would produce).
    Self-attention cones are matrix-free (:class:`AttentionCone`), their patterns those of
    :func:`~attnlens.convex.gated_attention.gate_patterns`.
    """
    if head == "self_attention":
        return attention_cones(np.asarray(X, dtype=np.float64), gates)
    n, s, d = X.shape
    nb = groups if head == "bfno" else 1
    cones, patterns = [], []
    for sl in group_slices(d, nb):
        Xg = X[:, :, sl] if head == "bfno" else X
        M = pre_activation_rows(Xg, head)  # (N, p)
        norms = np.linalg.norm(M, axis=1)
        keep = norms > 0
        Mn = np.ascontiguousarray(M[keep] / norms[keep, None])
        for h in gates:
            hv = np.asarray(h, dtype=np.float64).ravel()
            pre = M @ hv  # (N,)
            D = (pre >= 0).astype(np.float64)
            patterns.append(D)
            signs = (2.0 * D - 1.0)[keep]
            cones.append(ConeBlock(Mn, signs, hv))
    return cones, patterns
