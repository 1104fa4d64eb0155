r"""Covariance and partial correlations of output embeddings under the paper's linear-Gaussian model.

Rohekar, Gurwicz & Nisimov, "Causal Interpretation of Self-Attention in Pre-Trained
Transformers", NeurIPS 2023 (arXiv 2310.20307), Sections 3-4; official code
IntelLabs/causality-lab, ``causal_reasoning/cleann_explainer.py``.

Model. The tokens' representations obey a linear structural equation model with latent
confounders, :math:`X = G X + \Lambda U`, i.e. :math:`X = (I - G)^{-1} \Lambda U`. Self-attention
computes :math:`Z = A V` with the attention matrix :math:`A` (rows = output positions = queries)
and the value vectors :math:`V` whose ``d`` embedding dimensions are read as ``d`` i.i.d.
samples of independent exogenous noise with :math:`\operatorname{Cov}(V) = I`. So :math:`A`
plays :math:`(I - G)^{-1} \Lambda` and the covariance of the output embeddings is

.. math:: C = \operatorname{Cov}(Z) = A A^\top, \qquad
          R_{ij} = \frac{C_{ij}}{\sqrt{C_{ii} C_{jj}}} .

Conditional independence between tokens is read from partial correlations of :math:`R`; the
paper (and its code) takes the attention of the *deepest* layer and the hidden size ``d`` as
the number of samples of the tests (see :mod:`attnlens.lenses.causal.citest`).
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral

import numpy as np

from attnlens._validation import (
    Array,
    Interval,
    check_random_state,
    raise_invalid,
    validate_params,
)

__all__ = ["AttentionCovariance", "attention_covariance", "check_correlation",
           "partial_correlation", "partial_correlations", "samples_with_correlation"]

#: smallest variance of an output embedding the correlation accepts (the official code's 1e-8,
#: applied there to the standard deviation)
MIN_STD = 1e-8
#: tolerance of the correlation checks (unit diagonal, symmetry, smallest eigenvalue)
CORR_TOL = 1e-8


@dataclass(frozen=True)
class AttentionCovariance:
    """Covariance ``A A^T`` of the output embeddings and its correlation matrix, both (n, n)."""

    covariance: np.ndarray
    correlation: np.ndarray


@validate_params({"attention": [Array(ndim=2)]})
def attention_covariance(attention) -> AttentionCovariance:
    r"""Covariance :math:`C = A A^\top` and correlation of the output embeddings of one head.

    Parameters
    ----------
    attention : (n, n) attention probabilities of one head, rows = queries (output positions).

    Returns
    -------
    :class:`AttentionCovariance` with ``covariance`` :math:`A A^\top` and ``correlation``
    :math:`D^{-1/2} C D^{-1/2}`, :math:`D = \operatorname{diag}(C)` (float64).
    """
    att = np.asarray(attention, dtype=np.float64)
    n, m = att.shape
    if n != m:
        raise_invalid("attention", "a square (n, n) matrix", f"got shape {att.shape}",
                      "Pass one head's attention of one sequence (rows = queries).",
                      "attention_covariance")
    cov = att @ att.T  # (n, n)
    std = np.sqrt(np.diag(cov))
    if np.any(std <= MIN_STD):
        bad = np.flatnonzero(std <= MIN_STD).tolist()
        raise_invalid("attention", "a matrix without zero rows", f"got zero rows {bad}",
                      "Drop padded positions before computing the covariance.",
                      "attention_covariance")
    inv = 1.0 / std
    corr = cov * inv[:, None] * inv[None, :]
    corr = 0.5 * (corr + corr.T)
    np.fill_diagonal(corr, 1.0)
    return AttentionCovariance(covariance=cov, correlation=corr)


def check_correlation(corr, name: str = "corr", caller: str = "") -> np.ndarray:
    """A square, symmetric, unit-diagonal, positive semi-definite matrix (else InvalidParameterError)."""
    arr = np.asarray(corr, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
        raise_invalid(name, "a square (n, n) matrix", f"got shape {arr.shape}",
                      "Pass a correlation matrix.", caller)
    if arr.shape[0] < 2:
        raise_invalid(name, "a matrix over at least 2 variables", f"got shape {arr.shape}",
                      "A graph needs two nodes.", caller)
    if not np.allclose(np.diag(arr), 1.0, atol=CORR_TOL, rtol=0):
        raise_invalid(name, "a correlation matrix with unit diagonal",
                      f"got diagonal in [{arr.diagonal().min():.3g}, {arr.diagonal().max():.3g}]",
                      "Normalize a covariance with attention_covariance or np.corrcoef.", caller)
    if not np.allclose(arr, arr.T, atol=CORR_TOL, rtol=0):
        raise_invalid(name, "symmetric", f"got max |R - R^T| = {np.abs(arr - arr.T).max():.3g}",
                      "Symmetrize the matrix.", caller)
    low = float(np.linalg.eigvalsh(arr).min())
    if low < -CORR_TOL * arr.shape[0]:
        raise_invalid(name, "positive semi-definite", f"got smallest eigenvalue {low:.3g}",
                      "A correlation matrix of real data is PSD; check how it was built.", caller)
    return arr


@validate_params({"corr": [Array(ndim=2)]})
def partial_correlations(corr) -> np.ndarray:
    r"""Full-order partial correlations: each pair given all other variables.

    .. math:: \rho_{ij \cdot \mathrm{rest}} = -\frac{\Theta_{ij}}{\sqrt{\Theta_{ii}\Theta_{jj}}},
              \qquad \Theta = R^{-1},

    with a unit diagonal. Raises InvalidParameterError when ``R`` is singular (use
    :func:`partial_correlation` with smaller conditioning sets then).
    """
    arr = check_correlation(corr, caller="partial_correlations")
    try:
        theta = np.linalg.inv(arr)
    except np.linalg.LinAlgError:
        raise_invalid("corr", "non-singular", "got a singular matrix",
                      "Full-order partial correlations need an invertible matrix.",
                      "partial_correlations")
    d = np.sqrt(np.abs(np.diag(theta)))
    out = -theta / d[:, None] / d[None, :]
    np.fill_diagonal(out, 1.0)
    return out


def partial_correlation(corr: np.ndarray, x: int, y: int, cond: tuple[int, ...]) -> float:
    r"""Partial correlation :math:`\rho_{xy \cdot S}` from the inverse of :math:`R_{[x,y,S]}`.

    Computed as in causal-learn's Fisher-z test (``np.linalg.inv`` of the sub-matrix, then
    :math:`-\Theta_{01}/\sqrt{|\Theta_{00}\Theta_{11}|}`), so p-values agree to the last bit.
    No input checks (internal hot path; the public functions check ``corr`` once).
    """
    idx = (x, y, *cond)
    sub = corr[np.ix_(idx, idx)]
    inv = np.linalg.inv(sub)
    return float(-inv[0, 1] / np.sqrt(abs(inv[0, 0] * inv[1, 1])))


@validate_params({
    "corr": [Array(ndim=2)],
    "n_samples": [Interval(Integral, 2, None)],
    "seed": ["random_state"],
})
def samples_with_correlation(corr, n_samples: int, seed=None) -> np.ndarray:
    r"""``(n_samples, n)`` data whose sample correlation is exactly ``corr`` (to rounding).

    Gaussian noise is centred and whitened to an identity sample covariance, then coloured
    with the symmetric square root of ``corr``: :math:`X = Z R^{1/2}`, so
    ``np.corrcoef(X, rowvar=False) == corr``. It hands a correlation matrix (e.g. of attention)
    with a chosen sample size to libraries that only take data (causal-learn's ``pc``).
    Needs ``n_samples > n``.
    """
    arr = check_correlation(corr, caller="samples_with_correlation")
    n = arr.shape[0]
    if n_samples <= n:
        raise_invalid("n_samples", f"> the number of variables ({n})", n_samples,
                      "Whitening needs more samples than variables.", "samples_with_correlation")
    rng = check_random_state(seed, "seed")
    z = rng.standard_normal((n_samples, n))
    z -= z.mean(axis=0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T
    w, v = np.linalg.eigh(arr)
    return z @ (v * np.sqrt(np.clip(w, 0, None)) @ v.T)
