"""The tolerances and matrix measures every part of :mod:`attnlens.svm` shares (defined once).

Score convention ``score_t = x_t^T W z``.

* ``SUPPORT_TOL``: a competing token is in the support (neighbour) set when its margin, for a
  solution scaled to minimum margin exactly 1, is at most ``1 + SUPPORT_TOL``. The solvers
  certify their solutions to a relative duality gap of 1e-7 (and finish Frobenius solves with
  an exact active-set solve), so active margins sit within ~1e-9 of 1; 1e-6 leaves room for
  that and no more.
* ``RANK_RTOL``: the numerical rank of a *solved* program (``W^mm``, ``W^mm_*``) counts the
  singular values above ``RANK_RTOL * sigma_max``. Certified solutions have a clear spectral
  gap (the discarded singular values are ~1e-10 relative on the papers' settings and the
  benchmark instances), so any threshold in [1e-6, 1e-3] gives the same rank there; 1e-4 is
  the one the ``rank`` experiment has always reported.
* ``ITERATE_RANK_RTOL``: the *effective* rank of a gradient-descent iterate ``W(k)``
  (``Trajectory.rank``). A finite-time iterate has no spectral gap: the directions that decay
  like ``1/||W(k)||`` are still present at 1e-4 but not at 1e-3 after the papers' 2000 steps
  (mean rank of W at d = 10: 8.3 at 1e-3, 9.8 at 1e-4), so this is a coarser, separate
  threshold, kept at the 1e-3 the ``nuclear-bias`` experiment reports.
"""

from __future__ import annotations

import numpy as np

from attnlens._validation import Array, Interval, Real, validate_params

SUPPORT_TOL = 1e-6
RANK_RTOL = 1e-4
ITERATE_RANK_RTOL = 1e-3


def matrix_norm(W: np.ndarray, norm: str) -> float | np.ndarray:
    """``||W||_F`` (``norm="fro"``) or ``||W||_*`` (``"nuc"``) over the last two axes.

    One (d, d) matrix gives a float; a stack (..., d, d) gives an array (...).
    """
    W = np.asarray(W)
    if W.ndim == 2:
        if norm == "fro":
            return float(np.linalg.norm(W))
        return float(np.linalg.svd(W, compute_uv=False).sum())
    if norm == "fro":
        return np.sqrt(np.sum(W**2, axis=(-2, -1)))
    return np.linalg.svd(W, compute_uv=False).sum(axis=-1)


@validate_params({"W": [Array(ndim=(2, 3, 4))], "rtol": [Interval(Real, 0, 1, closed="neither")]})
def numerical_rank(W: np.ndarray, rtol: float = RANK_RTOL) -> np.ndarray:
    """Number of singular values above ``rtol * sigma_max`` of a matrix or a stack of them
    (0 for a zero matrix)."""
    sv = np.linalg.svd(np.asarray(W, dtype=np.float64), compute_uv=False)  # (..., d)
    top = sv[..., :1]
    return np.sum(sv > rtol * np.where(top > 0, top, np.inf), axis=-1)


def support_mask(margins: np.ndarray, tol: float = SUPPORT_TOL) -> np.ndarray:
    """``margin <= 1 + tol`` for margins of a solution scaled to minimum margin 1 (``inf``
    marks tokens that do not compete, never in the support)."""
    M = np.asarray(margins, dtype=np.float64)
    return np.isfinite(M) & (M <= 1.0 + tol)
