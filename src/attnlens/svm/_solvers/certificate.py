"""Certificates shared by every Att-SVM method: a feasible primal, a dual bound, a dual ray.

Score convention: ``score_t = x_t^T W z``. For constraint matrices ``A_c = (x_{i,a} - x_it) q^T``
and any ``alpha >= 0`` with ``B = sum_c alpha_c A_c``, weak duality gives for every feasible W

    1^T alpha <= sum_c alpha_c <A_c, W> = <B, W> <= ||B||_dual ||W||,

so ``1^T alpha / ||B||_dual`` lower-bounds the optimal norm (dual of Frobenius: Frobenius;
dual of nuclear: spectral). Scaling any W with positive minimum margin ``m`` by ``1/m`` gives a
feasible point, whose norm upper-bounds it. The relative gap of the two is the certificate.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linprog

from attnlens.errors import InfeasibleError
from attnlens.svm._solvers.constraints import ConstraintSet

MAX_LP_ENTRIES = 4_000_000  # constraint-matrix entries of the dual-ray LP, at most


def dual_norm(B: np.ndarray, norm: str) -> float:
    if norm == "fro":
        return float(np.linalg.norm(B))
    return float(np.linalg.svd(B, compute_uv=False)[0]) if B.size else 0.0


def dual_bound(cs: ConstraintSet, duals: np.ndarray, norm: str) -> float:
    """``1^T alpha / ||sum alpha_c A_c||_dual`` for duals laid out like the mask (n, K, T)."""
    alpha = np.where(cs.mask, np.maximum(duals, 0.0), 0.0)
    i, k, t = np.nonzero(alpha)
    if i.size == 0:
        return 0.0
    a = alpha[i, k, t]
    B = cs.combine(a, i, k, t)
    dn = dual_norm(B, norm)
    return float(a.sum() / dn) if dn > 0 else float("inf")


def make_feasible(cs: ConstraintSet, W: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Scale W by ``1 / min margin``; returns ``(W_feasible, margins, min_margin_before)``."""
    M = cs.margins(W)
    mmin = float(M[cs.mask].min()) if cs.count else float("inf")
    if cs.count == 0:
        return np.zeros_like(W), M, mmin
    if not mmin > 0:
        return W, M, mmin
    return W / mmin, M / mmin, mmin


def relative_gap(primal: float, dual: float) -> float:
    if primal <= 0:
        return 0.0 if dual <= 0 else float("inf")
    return max(0.0, (primal - dual) / primal)


def dual_ray_lp(
    D: np.ndarray,
    Q: np.ndarray,
    De: np.ndarray | None = None,
    Qe: np.ndarray | None = None,
    max_entries: int = MAX_LP_ENTRIES,
) -> np.ndarray | None:
    """A dual ray by linear programming: ``alpha >= 0`` (m,) with ``sum alpha = 1`` and
    ``sum_c alpha_c D_c Q_c^T + sum_j mu_j De_j Qe_j^T = 0`` for some free ``mu``, or None.

    Such an ``alpha`` proves infeasibility of ``<D_c Q_c^T, W> >= 1`` (with
    ``<De_j Qe_j^T, W> = 0``): ``<sum alpha_c A_c, W> = 0 < 1^T alpha`` for every admissible W.
    None when there is no ray or the LP (``(m + m_e) d^2`` entries) exceeds ``max_entries``.
    """
    m, d = D.shape
    me = 0 if De is None else De.shape[0]
    if m == 0 or (m + me) * d * d > max_entries:
        return None
    A_eq = np.einsum("ma,mb->abm", D, Q).reshape(d * d, m)
    bounds = [(0, None)] * m
    if me:
        A_eq = np.hstack([A_eq, np.einsum("ma,mb->abm", De, Qe).reshape(d * d, me)])
        bounds += [(None, None)] * me
    A_eq = np.vstack([A_eq, np.r_[np.ones(m), np.zeros(me)][None]])
    b_eq = np.zeros(d * d + 1)
    b_eq[-1] = 1.0
    res = linprog(np.zeros(m + me), A_eq=A_eq, b_eq=b_eq, bounds=bounds, method="highs")
    return res.x[:m] if res.status == 0 else None


def find_dual_ray(cs: ConstraintSet, max_entries: int = MAX_LP_ENTRIES) -> np.ndarray | None:
    """:func:`dual_ray_lp` on the constraints of ``cs``, in the (n, K, T) layout, or None."""
    i, k, t = cs.index()
    D, Qc = cs.vectors(i, k, t)
    alpha = dual_ray_lp(D, Qc, max_entries=max_entries)
    if alpha is None:
        return None
    ray = np.zeros(cs.mask.shape)
    ray[i, k, t] = alpha
    return ray


def raise_infeasible(cs: ConstraintSet, method: str, ray: np.ndarray | None = None) -> None:
    """Raise :class:`InfeasibleError` with the offending sequences and a dual ray."""
    if ray is None:
        ray = find_dual_ray(cs)
    evidence: dict = {"method": method, "variant": cs.variant}
    if ray is not None:
        rays = np.where(cs.mask, ray, 0.0)
        scale = rays.max() if rays.size else 0.0
        seqs = np.unique(np.nonzero(rays > 1e-9 * max(scale, 1e-300))[0])
        B = cs.combine(rays[cs.mask], *cs.index())
        evidence.update(
            sequences=seqs.tolist(),
            dual_ray=rays,
            ray_residual=float(np.linalg.norm(B) / max(rays.sum(), 1e-300)),
        )
        where = f"sequences {seqs.tolist()[:10]}{' ...' if seqs.size > 10 else ''}"
    else:
        where = "the constraint set (too large for an explicit dual ray)"
    raise InfeasibleError(
        f"Att-SVM is infeasible ({method}): no W separates the selected tokens in {where} "
        "with positive margin. Select the optimal or a locally optimal token "
        "(attnlens.svm.locally_optimal_selections), or raise d.",
        evidence,
    )
