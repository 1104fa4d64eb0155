r"""``W^SVMeq``: the multi-token comparison target of the official Att-SVM code.

Score convention ``score_t = x_t^T W z``. After training with a non-linear head, let
:math:`\mathcal O_i = \{t : s_{it} \ge \text{threshold}\}` be the tokens sequence ``i`` still
attends to (``s`` the final softmax probabilities). The official code
(umich-sota/TF-as-SVM, ``base_nonlinear.W_svm_solver``) compares the final ``W`` with

.. math::

    W^{SVMeq} = W^{fin} + R\, W^{dir}, \qquad
    W^{fin} = \arg\min_W \|W\|_F \ \text{s.t.}\ (x_{i\tau} - x_{it})^\top W z_i
              = \log\frac{s_{i\tau}}{s_{it}}\ \ (t, \tau \in \mathcal O_i),

:math:`W^{dir}` the Gen-SVM of the sets (:func:`attnlens.svm.gen_svm`; the official figure
labels it ``W^mm``) and :math:`R = \arg\min_R \|W^{fin} + R W^{dir} - W\|_F
= \langle W^{dir}, W - W^{fin}\rangle / \|W^{dir}\|_F^2` (least squares).
``W^fin`` reproduces the final attention *inside* each set exactly; ``R W^dir`` carries the
diverging part that suppresses the other tokens.

Tarzanagh, Li, Thrampoulidis, Oymak, "Transformers as Support Vector Machines"
(arXiv 2308.16898), section on non-linear heads and its multi-token figure.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from attnlens._validation import Array, Interval, Real, check_array, raise_invalid, validate_params
from attnlens.errors import InaccurateSolutionWarning
from attnlens.svm.gensvm import _SETS, _check_sets, gen_svm

__all__ = ["SVMEqResult", "log_ratio_fin", "svm_eq"]

# The official code's selection threshold (THRED_H in multi_token_converge.ipynb).
DEFAULT_THRESHOLD = 1e-3


def _pairs(X: np.ndarray, Z: np.ndarray, probs: np.ndarray,
           sets: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Consecutive pairs inside each set: token differences (m, d), queries (m, d), log-ratios
    (m,). Consecutive pairs span the same constraints as all pairs (the log-ratios add up)."""
    dx, qz, b = [], [], []
    for i, s in enumerate(sets):
        for t, tau in zip(s[:-1], s[1:], strict=True):
            dx.append(X[i, tau] - X[i, t])
            qz.append(Z[i])
            b.append(np.log(probs[i, tau]) - np.log(probs[i, t]))
    d = X.shape[2]
    return (np.asarray(dx, dtype=np.float64).reshape(-1, d),
            np.asarray(qz, dtype=np.float64).reshape(-1, d), np.asarray(b, dtype=np.float64))


@validate_params({
    "X": [Array(ndim=3)],
    "Z": [Array(ndim=2)],
    "probs": [Array(ndim=2)],
    "sets": _SETS,
})
def log_ratio_fin(X: Any, Z: Any, probs: Any, sets: Any) -> np.ndarray:
    r"""Minimum-norm ``W`` that reproduces the attention log-ratios inside each set, (d, d).

    .. math:: W^{fin} = \arg\min_W \|W\|_F \ \text{s.t.}\ (x_{i\tau} - x_{it})^\top W z_i =
              \log(s_{i\tau} / s_{it}), \quad t, \tau \in \mathcal O_i.

    The minimum-norm solution lies in the span of the constraint matrices
    ``E_j = (x_{i\tau} - x_{it}) z_i^T``: ``W = sum_j mu_j E_j`` with ``G mu = b`` for the Gram
    ``G_jk = <E_j, E_k>_F = (dx_j^T dx_k)(z_j^T z_k)`` (solved in the least-squares sense, so
    redundant or slightly inconsistent equalities are fine). Zero when every set is a
    singleton. Official code: umich-sota/TF-as-SVM ``base_nonlinear.W_svm_solver``
    (``W_fin``); Tarzanagh et al., arXiv 2308.16898.

    Parameters
    ----------
    X : (n, T, d) tokens; Z : (n, d) queries; probs : (n, T) attention probabilities
        (positive on the sets of two or more tokens); sets : as in :func:`attnlens.svm.gen_svm`.
    """
    X = check_array(X, "X", ndim=3)
    n, T, d = X.shape
    Z = check_array(Z, "Z", shape=(n, d))
    probs = check_array(probs, "probs", shape=(n, T))
    sets_ = _check_sets(sets, n, T)
    inside = np.concatenate([probs[i, s] for i, s in enumerate(sets_) if s.size > 1] + [[1.0]])
    if not np.all(inside > 0):
        raise_invalid("probs", "positive on the selected tokens",
                      f"got min {inside.min():.3g}", "The log-ratios need s > 0.",
                      "log_ratio_fin")
    dx, qz, b = _pairs(X, Z, probs, sets_)
    if b.size == 0:
        return np.zeros((d, d))
    G = (dx @ dx.T) * (qz @ qz.T)  # (m, m) Gram of the E_j
    mu = np.linalg.lstsq(G, b, rcond=None)[0]
    return (dx * mu[:, None]).T @ qz  # sum_j mu_j dx_j z_j^T


@dataclass(frozen=True)
class SVMEqResult:
    """Outcome of :func:`svm_eq`.

    W_eq: (d, d) ``W^fin + R W^dir``; W_fin: (d, d) :func:`log_ratio_fin`; W_dir: (d, d) the
    Gen-SVM direction (minimum margin 1); R: the least-squares coefficient; sets: the selected
    sets ``O_i`` (sorted int arrays); gen_status: the Gen-SVM solve's status.
    """

    W_eq: np.ndarray
    W_fin: np.ndarray
    W_dir: np.ndarray
    R: float
    sets: list[np.ndarray]
    gen_status: Any


@validate_params({
    "W": [Array(ndim=2)],
    "X": [Array(ndim=3)],
    "Z": [Array(ndim=2)],
    "probs": [Array(ndim=2)],
    "threshold": [Interval(Real, 0, 1, closed="neither")],
})
def svm_eq(W: Any, X: Any, Z: Any, probs: Any, *,
           threshold: float = DEFAULT_THRESHOLD) -> SVMEqResult:
    r"""``W^SVMeq = W^fin + R W^dir`` of a trained ``W`` (see the module docstring).

    .. math:: R = \arg\min_R \|W^{fin} + R\,W^{dir} - W\|_F, \qquad
              \mathcal O_i = \{t : s_{it} \ge \text{threshold}\}.

    Parameters
    ----------
    W : (d, d) the trained attention weights (the official code passes the last iterate).
    X : (n, T, d); Z : (n, d); probs : (n, T) the final attention probabilities.
    threshold : selection threshold (official 1e-3).

    Raises
    ------
    attnlens.errors.InfeasibleError : the Gen-SVM of the sets is infeasible (the official code
        drops such runs).
    attnlens.errors.InvalidParameterError : every token of every sequence is selected (no
        direction to compare with).
    """
    X = check_array(X, "X", ndim=3)
    n, T, d = X.shape
    W = check_array(W, "W", shape=(d, d))
    probs = check_array(probs, "probs", shape=(n, T))
    sets = [np.flatnonzero(p >= threshold) for p in probs]
    if any(s.size == 0 for s in sets):
        raise_invalid("threshold", "at most the largest probability of every sequence", threshold,
                      "Lower the threshold.", "svm_eq")
    W_fin = log_ratio_fin(X, Z, probs, sets)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InaccurateSolutionWarning)
        gen = gen_svm(X, Z, sets)
    W_dir = np.asarray(gen.W, dtype=np.float64)
    R = float(np.sum(W_dir * (W - W_fin)) / np.sum(W_dir * W_dir))
    return SVMEqResult(W_eq=W_fin + R * W_dir, W_fin=W_fin, W_dir=W_dir, R=R, sets=gen.sets,
                       gen_status=gen.status)
