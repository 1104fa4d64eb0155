r"""Regularization path of attention: the norm-constrained loss minimizers as the radius grows.

.. math:: \bar W_R = \arg\min_{\|W\| \le R} L(W), \qquad
          L(W) = \frac1n \sum_i l\big(Y_i\, v^\top X_i^\top \mathrm{softmax}(X_i W z_i)\big),

with score ``x_t^T W z`` and ``||.||`` the Frobenius or the nuclear norm. Tarzanagh et al.
("Max-Margin Token Selection in Attention Mechanism", NeurIPS 2023, arXiv 2306.13596;
"Transformers as Support Vector Machines", arXiv 2308.16898) show ``W_R / R`` converges to
``W^mm / ||W^mm||`` (Frobenius) and to ``W^mm_* / ||W^mm_*||_*`` (nuclear norm) as
``R -> infinity``.

The problem is non-convex; each radius is solved by projected normalized gradient descent
(diminishing steps), warm-started from the previous radius, batched over seeds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from attnlens._validation import (
    Array,
    InstanceOf,
    Integral,
    Interval,
    Options,
    RandomState,
    Real,
    raise_invalid,
    validate_params,
)
from attnlens.svm._numerics import matrix_norm
from attnlens.svm.dynamics.training import LOSSES, ProblemBatch, _loss_and_grad
from attnlens.svm.problems import TokenSelectionProblem

logger = logging.getLogger(__name__)

NORMS = ("fro", "nuc")


def project_simplex_ball(s: np.ndarray, R: float) -> np.ndarray:
    """Project nonnegative rows ``s`` (..., k) onto ``{x >= 0, sum x <= R}``."""
    out = s.copy()
    over = s.sum(axis=-1) > R
    if not np.any(over):
        return out
    u = -np.sort(-s[over], axis=-1)  # descending
    css = np.cumsum(u, axis=-1) - R
    k = np.arange(1, u.shape[-1] + 1)
    cond = u - css / k > 0
    rho = cond.shape[-1] - 1 - np.argmax(cond[..., ::-1], axis=-1)  # last True
    theta = css[np.arange(len(rho)), rho] / (rho + 1)
    out[over] = np.maximum(s[over] - theta[:, None], 0.0)
    return out


@validate_params({
    "W": [Array(ndim=3)],
    "R": [Interval(Real, 0, None, closed="neither")],
    "norm": [Options(*NORMS)],
})
def project_ball(W: np.ndarray, R: float, norm: str) -> np.ndarray:
    """Euclidean projection of matrices (S, d, d) onto the ``norm`` ball of radius ``R``."""
    if norm == "fro":
        nrm = np.sqrt(np.sum(W**2, axis=(-2, -1), keepdims=True))
        return W * np.minimum(1.0, R / np.where(nrm > 0, nrm, 1.0))
    U, s, Vt = np.linalg.svd(W, full_matrices=False)
    s = project_simplex_ball(s, R)
    return (U * s[..., None, :]) @ Vt


@dataclass(frozen=True)
class RegPath:
    """radii (K,); W (S, K, d, d) the constrained minimizers; loss (S, K); norm; seconds."""

    radii: np.ndarray
    W: np.ndarray
    loss: np.ndarray
    norm: str
    seconds: float

    @property
    def directions(self) -> np.ndarray:
        """``W_R / R`` (S, K, d, d)."""
        return self.W / self.radii[None, :, None, None]


@validate_params({
    "problem": [InstanceOf(TokenSelectionProblem, ProblemBatch, list, tuple,
                           name="a TokenSelectionProblem, a list of them or a ProblemBatch")],
    "radii": [Array(ndim=1)],
    "norm": [Options(*NORMS)],
    "inner_steps": [Interval(Integral, 1, None)],
    "step": [Interval(Real, 0, None, closed="neither")],
    "loss": [Options(*LOSSES)],
    "random_state": [RandomState()],
    "progress": ["boolean"],
})
def regularization_path(
    problem: Any,
    radii: Sequence[float],
    norm: str = "fro",
    *,
    inner_steps: int = 300,
    step: float = 0.5,
    loss: str = "logistic",
    random_state: int | None = 0,
    progress: bool = False,
) -> RegPath:
    r"""``argmin_{||W|| <= R} L(W)`` for each radius in increasing ``radii`` (see module doc).

    ``problem``: a TokenSelectionProblem, a sequence of them or a :class:`ProblemBatch`
    (seeds solved together). Each radius runs ``inner_steps`` projected normalized gradient
    steps of length ``step * R / sqrt(k + 1)``, warm-started at the previous solution scaled to
    the new radius; the lowest-loss iterate is kept.
    """
    batch = ProblemBatch.from_problems(problem)
    radii_arr = np.asarray(radii, dtype=np.float64)
    if np.any(radii_arr <= 0) or np.any(np.diff(radii_arr) <= 0):
        raise_invalid("radii", "positive and increasing", radii_arr.tolist(),
                      "List the radii in increasing order.", "regularization_path")
    inner_steps = int(inner_steps)
    S, n, T, d = batch.shape
    rng = np.random.default_rng(random_state)
    W = rng.standard_normal((S, d, d)) * 1e-3
    W_out = np.empty((S, len(radii_arr), d, d))
    loss_out = np.empty((S, len(radii_arr)))
    it: Any = enumerate(radii_arr)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(list(it), desc=f"regpath {norm}", leave=False)
    start = time.perf_counter()
    for j, R in it:
        nrm = matrix_norm(W, norm)[:, None, None]
        W = W * (R / np.where(nrm > 0, nrm, 1.0))
        best_W = W.copy()
        best = _loss_and_grad(batch, W, loss=loss).loss
        for k in range(inner_steps):
            lg = _loss_and_grad(batch, W, loss=loss)
            better = lg.loss < best
            best = np.where(better, lg.loss, best)
            best_W[better] = W[better]
            g = lg.grad_W
            gn = np.sqrt(np.sum(g**2, axis=(1, 2)))[:, None, None]
            g = np.where(gn > 0, g / np.where(gn > 0, gn, 1.0), 0.0)
            W = project_ball(W - step * R / np.sqrt(k + 1) * g, R, norm)
        final = _loss_and_grad(batch, W, loss=loss).loss
        better = final < best
        best_W[better] = W[better]
        best = np.where(better, final, best)
        W = best_W
        W_out[:, j] = W
        loss_out[:, j] = best
    seconds = time.perf_counter() - start
    return RegPath(radii_arr, W_out, loss_out, norm, seconds)
