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

from attnlens.convex.operators import check_dense_size, group_slices

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
    gate generator ``vec(h_j)`` (inside the cone).
    """

    def __init__(self, M: np.ndarray, signs: np.ndarray, interior: np.ndarray,
                 gram_norm: float):
        self.M = M  # (N, p), shared
        self.signs = signs  # (N,)
        self.interior = interior  # (p,)
        self.gram_norm = gram_norm  # ||M||_2^2 = ||C||_2^2 (signs square to one)

    @property
    def p(self) -> int:
        return self.M.shape[1]

    def apply(self, W: np.ndarray) -> np.ndarray:
        """``C W`` for W (p, k) -> (N, k)."""
        return self.signs[:, None] * (self.M @ W)

    def adjoint(self, L: np.ndarray) -> np.ndarray:
        """``C^T L`` for L (N, k) -> (p, k)."""
        return self.M.T @ (self.signs[:, None] * L)

    def dense(self) -> np.ndarray:
        """The signed constraint matrix ``C`` (N, p) (for the cvxpy reference)."""
        return self.signs[:, None] * self.M

    def project(self, Z: np.ndarray, warm: np.ndarray | None = None, rtol: float = 1e-12):
        r"""Euclidean projection of every column of ``Z`` (p, k) onto the cone.

        :math:`\Pi_{\mathcal K}(z) = z + C^\top \mu` with
        :math:`\mu = \arg\min_{\mu \ge 0} \|z + C^\top \mu\|` (the dual is a non-negative
        least squares; Lawson & Hanson 1974). At most ``p`` constraints are active, so the
        active sets of the previous call (``warm``: (k, p) row indices, padded with -1) are
        tried first: the least-squares solve on an active set is the exact projection when its
        multipliers are non-negative and the result satisfies every constraint (KKT).
        Otherwise a cutting-plane NNLS adds the most violated constraints until all hold up to
        ``rtol * ||z||``. Returns ``(X, active)`` (``active`` to pass back as ``warm``).
        """
        p, k = Z.shape
        if warm is None or warm.shape != (k, p):
            warm = np.full((k, p), -1, dtype=np.intp)
        X = Z.copy()
        active = warm.copy()
        mask = (warm >= 0).astype(np.float64)  # (k, p)
        cols = np.flatnonzero(mask.any(axis=1))
        retry = np.zeros(k, dtype=bool)
        if cols.size:  # batched least squares on the warm active sets (zero-padded)
            idx, msk = np.maximum(warm[cols], 0), mask[cols]
            CA = self.M[idx] * (self.signs[idx] * msk)[:, :, None]  # (k', p, p)
            # normal equations (NNLS active sets are linearly independent); padding -> identity
            G = CA @ CA.transpose(0, 2, 1) + np.eye(p)[None] * (1.0 - msk)[:, None, :]
            G += 1e-13 * np.eye(p)[None]
            mu = np.linalg.solve(G, -(CA @ Z[:, cols].T[:, :, None]))  # (k', p, 1)
            X[:, cols] = Z[:, cols] + (CA.transpose(0, 2, 1) @ mu)[:, :, 0].T
            retry[cols] = np.any((mu[:, :, 0] < 0) & (msk > 0), axis=1)
        V = self.apply(X)  # (N, k)
        tol = rtol * np.maximum(np.linalg.norm(Z, axis=0), 1e-300)
        bad = retry | (V < -tol[None, :]).any(axis=0)
        for col in np.flatnonzero(bad):
            X[:, col], A = self._nnls_project(Z[:, col], tol[col], warm[col][warm[col] >= 0])
            active[col] = -1
            active[col, : len(A)] = A
        return X, active

    def _nnls_project(self, z: np.ndarray, tol: float, start):
        v = self.apply(z[:, None])[:, 0]
        W = np.unique(np.concatenate([start, np.argpartition(v, min(2 * self.p, len(v) - 1))
                                      [: 2 * self.p]]))
        for _ in range(200):
            CW = self.signs[W, None] * self.M[W]  # (|W|, p)
            mu, _ = nnls(CW.T, -z, maxiter=50 * max(len(W), 1))
            x = z + CW.T @ mu
            v = self.apply(x[:, None])[:, 0]
            if v.min() >= -tol:
                return x, W[mu > 0][: self.p]
            new = np.argpartition(v, min(2 * self.p, len(v) - 1))[: 2 * self.p]
            W = np.unique(np.concatenate([W, new[v[new] < -tol]]))
        raise RuntimeError("cone projection did not converge (cutting-plane NNLS).")


def build_cones(X: np.ndarray, head: str, gates: np.ndarray, groups: int = 1):
    """Cones and patterns of every (group, gate) block, in :func:`build_program` order.

    Returns ``(cones, patterns)``; ``patterns[b]`` is the 0/1 pattern ``D`` of block b as a
    flat (n * rows_per_sample,) array, computed from the *unnormalized* ``M h`` (so the
    pattern equals the one the non-convex ReLU unit with weight ``h`` would produce).
    """
    n, s, d = X.shape
    nb = groups if head == "bfno" else 1
    cones, patterns = [], []
    for sl in group_slices(d, nb):
        Xg = X[:, :, sl] if head == "bfno" else X
        M = pre_activation_rows(Xg, head)  # (N, p)
        norms = np.linalg.norm(M, axis=1)
        keep = norms > 0
        Mn = np.ascontiguousarray(M[keep] / norms[keep, None])
        gram = float(np.linalg.eigvalsh(Mn.T @ Mn)[-1]) if Mn.size else 0.0
        for h in gates:
            hv = np.asarray(h, dtype=np.float64).ravel()
            pre = M @ hv  # (N,)
            D = (pre >= 0).astype(np.float64)
            patterns.append(D)
            signs = (2.0 * D - 1.0)[keep]
            cones.append(ConeBlock(Mn, signs, hv, gram))
    return cones, patterns
