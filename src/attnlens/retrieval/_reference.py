"""Straightforward implementations: the test oracles and the benchmark anchors.

- :func:`k_reciprocal_reference`: k-reciprocal re-ranking (Zhong et al. 2017) written set by
  set from the paper's definitions, one Python loop per point and per candidate (the
  structure of the authors' ``re_ranking`` function), Jaccard as ``sum min / sum max``.
- :func:`diffusion_reference`: one conjugate-gradient solve per query (as Iscen et al. 2017
  solve it), with a tolerance argument.

Slow on purpose; not exported.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from attnlens.retrieval._checks import l2_normalize


def k_reciprocal_reference(Q: np.ndarray, G: np.ndarray, k1: int, k2: int,
                           lambda_value: float) -> np.ndarray:
    X = l2_normalize(np.concatenate([Q, G]).astype(np.float64))
    n, nq = len(X), len(Q)
    dist = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            if i != j:
                dist[i, j] = max(float(np.sum((X[i] - X[j]) ** 2)), 0.0)
    dist = dist / dist.max(axis=1, keepdims=True)
    order = np.argsort(dist, axis=1, kind="stable")

    def neighbours(p: int, k: int) -> set[int]:
        return set(order[p, : k + 1].tolist())

    def reciprocal(p: int, k: int) -> set[int]:
        return {g for g in neighbours(p, k) if p in neighbours(g, k)}

    half = int(np.around(k1 / 2.0))
    vectors = []
    for p in range(n):
        base = reciprocal(p, k1)
        expanded = set(base)
        for c in base:
            cand = reciprocal(c, half)
            if len(cand & base) > 2.0 / 3.0 * len(cand):
                expanded |= cand
        v = np.zeros(n)
        for g in expanded:
            v[g] = np.exp(-dist[p, g])
        vectors.append(v / v.sum())
    V = np.array(vectors)
    if k2 > 1:
        V = np.array([V[order[p, :k2]].mean(axis=0) for p in range(n)])
    out = np.zeros((nq, n - nq))
    for a in range(nq):
        for b in range(n - nq):
            g = nq + b
            jac = 1.0 - np.minimum(V[a], V[g]).sum() / np.maximum(V[a], V[g]).sum()
            out[a, b] = (1.0 - lambda_value) * jac + lambda_value * dist[a, g]
    return out


def diffusion_reference(Q: np.ndarray, G: np.ndarray, k: int, alpha: float, gamma: float,
                        rtol: float = 1e-10, maxiter: int | None = None) -> np.ndarray:
    Q, G = l2_normalize(Q), l2_normalize(G)
    n = len(G)
    sim = G @ G.T
    knn = [set() for _ in range(n)]
    for i in range(n):
        row = sim[i].copy()
        row[i] = -np.inf
        knn[i] = set(np.argsort(-row, kind="stable")[:k].tolist())
    A = sp.lil_matrix((n, n))
    for i in range(n):
        for j in knn[i]:
            if i in knn[j]:
                A[i, j] = max(sim[i, j], 0.0) ** gamma
    A = A.tocsr()
    deg = np.asarray(A.sum(axis=1)).ravel()
    inv = np.array([1.0 / np.sqrt(d) if d > 0 else 0.0 for d in deg])
    system = sp.identity(n) - alpha * (sp.diags(inv) @ A @ sp.diags(inv))
    out = np.zeros((len(Q), n))
    for a, q in enumerate(Q):
        s = G @ q
        y = np.zeros(n)
        for j in np.argsort(-s, kind="stable")[:k]:
            y[j] = max(s[j], 0.0) ** gamma
        out[a], _ = spla.cg(system, y, rtol=rtol, atol=0.0, maxiter=maxiter)
    return out
