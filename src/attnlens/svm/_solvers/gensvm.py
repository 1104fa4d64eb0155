r"""Gen-SVM internals: the constraint layout, the algebra of :math:`\mathcal S_{fin}` and the
NNLS method (see :mod:`attnlens.svm.gensvm` for the program and the references).

Score convention ``score_t = x_t^T W z``. Inequalities ``A_c = Da_c Qa_c^T``; equality
generators ``E_j = De_j Qe_j^T`` spanning :math:`\mathcal S_{fin}`. Frobenius inner products
need only ``d``-vectors: ``<a z^T, b w^T> = (a^T b)(z^T w)``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy.optimize import nnls

from attnlens.svm._solvers.output import SolverOutput

logger = logging.getLogger(__name__)

EIG_RTOL = 1e-12  # eigenvalues below EIG_RTOL * size * largest are treated as 0


@dataclass(frozen=True)
class GenLayout:
    """Inequalities ``A_c = Da_c Qa_c^T`` at (ia, ua); equality generators ``E_j = De_j Qe_j^T``
    at (ie, te); the selected set of sequence i as a mask (n, T)."""

    X: np.ndarray
    Z: np.ndarray
    sets: list[np.ndarray]
    in_set: np.ndarray
    ia: np.ndarray
    ua: np.ndarray
    Da: np.ndarray
    Qa: np.ndarray
    ie: np.ndarray
    te: np.ndarray
    De: np.ndarray
    Qe: np.ndarray


def build_layout(X: np.ndarray, Z: np.ndarray, sets: list[np.ndarray]) -> GenLayout:
    """Lay out the constraints of validated ``X`` (n, T, d), ``Z`` (n, d) and sorted sets."""
    n, T, _ = X.shape
    in_set = np.zeros((n, T), dtype=bool)
    for i, s in enumerate(sets):
        in_set[i, s] = True
    o = np.array([s[0] for s in sets])  # representative token of each set
    ia, ua = np.nonzero(~in_set)
    ie, te = np.nonzero(in_set)
    keep = te != o[ie]
    ie, te = ie[keep], te[keep]
    Da = X[ia, o[ia]] - X[ia, ua]
    De = X[ie, te] - X[ie, o[ie]]
    return GenLayout(X, Z, sets, in_set, ia, ua, Da, Z[ia], ie, te, De, Z[ie])


def gram(D1: np.ndarray, Q1: np.ndarray, D2: np.ndarray, Q2: np.ndarray) -> np.ndarray:
    """``<D1_a Q1_a^T, D2_b Q2_b^T>_F = (D1_a . D2_b)(Q1_a . Q2_b)``."""
    return (D1 @ D2.T) * (Q1 @ Q2.T)


def combine(coef: np.ndarray, D: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """``sum_c coef_c D_c Q_c^T`` (d, d)."""
    return (D * coef[:, None]).T @ Q


def inner(W: np.ndarray, D: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """``<D_c Q_c^T, W>_F = D_c^T W Q_c`` for every row c."""
    return np.einsum("cd,cd->c", D @ W, Q)


def fin_basis(De: np.ndarray, Qe: np.ndarray) -> np.ndarray:
    """Coefficients B (m_e, r): ``F_k = sum_j B_jk E_j`` is a Frobenius-orthonormal basis of
    S_fin (r = its dimension)."""
    if De.shape[0] == 0:
        return np.zeros((0, 0))
    lam, U = np.linalg.eigh(gram(De, Qe, De, Qe))
    keep = lam > EIG_RTOL * De.shape[0] * max(float(lam.max()), 1e-300)
    return U[:, keep] / np.sqrt(lam[keep])


def project_fin(W: np.ndarray, De: np.ndarray, Qe: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Frobenius projection of W onto S_fin."""
    if B.size == 0:
        return np.zeros_like(W)
    coef = B @ (B.T @ inner(W, De, Qe))
    return combine(coef, De, Qe)


def solve_nnls(lay: GenLayout, B: np.ndarray, max_iter: int | None) -> SolverOutput:
    """The bias-free hard-margin SVM on the projected constraints ``P A_c`` by Lawson-Hanson
    NNLS. Returns ``W``, ``duals`` (alpha, (m,)), ``eq_duals`` (mu, (m_e,)), or a ``ray`` (m,)
    when the sets cannot be separated; ``converged=False`` when NNLS hit ``max_iter``."""
    G = gram(lay.Da, lay.Qa, lay.Da, lay.Qa)
    if B.size:
        C = gram(lay.Da, lay.Qa, lay.De, lay.Qe) @ B  # (m, r): <A_c, F_k>
        G = G - C @ C.T
    else:
        C = np.zeros((G.shape[0], 0))
    lam, V = np.linalg.eigh(0.5 * (G + G.T))
    keep = lam > EIG_RTOL * G.shape[0] * max(float(lam.max()), 1e-300)
    M = np.sqrt(lam[keep])[:, None] * V[:, keep].T  # (p, m): M^T M = projected Gram
    m = G.shape[0]
    E = np.vstack([M, np.ones((1, m))])
    f = np.zeros(E.shape[0])
    f[-1] = 1.0
    try:
        u, _ = nnls(E, f, maxiter=max_iter)
    except RuntimeError as exc:  # iteration cap in older SciPy
        logger.warning("NNLS stopped: %s", exc)
        return SolverOutput(W=None, duals=None, converged=False)
    su = float(u.sum())
    if su >= 1.0 - 1e-10:
        return SolverOutput(W=None, duals=None, ray=u / max(su, 1e-300))
    alpha = u / (1.0 - su)
    beta = B @ (C.T @ alpha) if B.size else np.zeros(0)
    W = combine(alpha, lay.Da, lay.Qa)
    if beta.size:
        W = W - combine(beta, lay.De, lay.Qe)
    return SolverOutput(W=W, duals=alpha, eq_duals=-beta, iterations=int(np.count_nonzero(u)))
