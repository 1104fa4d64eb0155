r"""Fisher-z conditional-independence test from a correlation matrix, with an effective sample size.

For a partial correlation :math:`r = \rho_{xy \cdot S}` estimated from ``n`` samples,

.. math:: z = \tfrac12 \log\frac{1 + r}{1 - r}, \qquad
          T = \sqrt{n - |S| - 3}\,|z| \;\sim\; |\mathcal N(0, 1)| \text{ under } H_0: X \perp Y \mid S,
          \qquad p = 2\,(1 - \Phi(T)),

and :math:`X \perp Y \mid S` is accepted when :math:`p > \alpha`.

Effective sample size (Rohekar, Gurwicz & Nisimov, NeurIPS 2023, arXiv 2310.20307, Sec. 4; the
official CLEANN code passes ``num_samples=config.hidden_size``): an attention matrix is not
estimated from data records, so the number of samples is taken to be the number of i.i.d.
samples in the paper's model, the ``d`` dimensions of the embeddings (``d = 384`` for
all-MiniLM-L6-v2). It sets how small a partial correlation still counts as dependence:
:math:`|r| \gtrsim \Phi^{-1}(1 - \alpha/2) / \sqrt{n - |S| - 3}`.

The formula is the one of causal-learn's ``fisherz`` (``|r| >= 1`` is clamped to ``1 - eps``,
i.e. dependent) and of the official ``CondIndepParCorr`` (degrees of freedom
``n - (|S| + 2)``, statistic :math:`\sqrt{\mathrm{dof} - 1}\,|z|`: the same number).
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np
from scipy.special import ndtr

from attnlens._validation import Array, Interval, raise_invalid, validate_params
from attnlens.lenses.causal.covariance import check_correlation, partial_correlation

__all__ = ["FisherZResult", "fisher_z_pvalues", "fisher_z_test"]

_EPS = np.finfo(float).eps


@dataclass(frozen=True)
class FisherZResult:
    """One test of ``x _||_ y | cond``: partial correlation, statistic, p-value and decision."""

    x: int
    y: int
    cond: tuple[int, ...]
    partial_correlation: float
    statistic: float
    p_value: float
    independent: bool
    alpha: float
    n_samples: float


def fisher_z_pvalues(r, n_samples: float, cond_size: int) -> np.ndarray:
    """Vectorized p-values of partial correlations ``r`` with conditioning sets of one size.

    Internal hot path (no checks): the exact arithmetic of causal-learn's ``fisherz``.
    """
    r = np.asarray(r, dtype=np.float64)
    r = np.where(np.abs(r) >= 1.0, (1.0 - _EPS) * np.sign(r), r)
    z = 0.5 * np.log((1.0 + r) / (1.0 - r))
    stat = np.sqrt(n_samples - cond_size - 3) * np.abs(z)
    return 2.0 * (1.0 - ndtr(np.abs(stat)))


def check_sample_size(n_samples: float, cond_size: int, caller: str) -> None:
    """The test needs ``n_samples - |S| - 3 > 0``."""
    if n_samples - cond_size - 3 <= 0:
        raise_invalid("n_samples", f"> |cond| + 3 = {cond_size + 3}", n_samples,
                      "The Fisher-z statistic needs more samples than conditioning variables + 3; "
                      "the paper uses the hidden size of the model.", caller)


@validate_params({
    "corr": [Array(ndim=2)],
    "x": [Interval(Integral, 0, None)],
    "y": [Interval(Integral, 0, None)],
    "n_samples": [Interval(Real, 3, None, closed="neither")],
    "alpha": [Interval(Real, 0, 1, closed="neither")],
})
def fisher_z_test(corr, x: int, y: int, cond=(), n_samples: float = 384,
                  alpha: float = 0.01) -> FisherZResult:
    r"""Fisher-z test of :math:`X_x \perp X_y \mid X_S` on a correlation matrix.

    Parameters
    ----------
    corr : (n, n) correlation matrix (e.g. ``attention_covariance(A).correlation``).
    x, y : the two variables (distinct indices).
    cond : indices of the conditioning set ``S`` (may be empty; x, y not in it).
    n_samples : the (effective) sample size ``n``; the paper uses the hidden size ``d``.
    alpha : significance level: independent when ``p > alpha``.
    """
    arr = check_correlation(corr, caller="fisher_z_test")
    n = arr.shape[0]
    cond = tuple(int(c) for c in np.atleast_1d(np.asarray(cond, dtype=np.int64)))
    for name, v in (("x", x), ("y", y)):
        if v >= n:
            raise_invalid(name, f"an index < {n}", v, "Index a variable of corr.", "fisher_z_test")
    if x == y or x in cond or y in cond or len(set(cond)) != len(cond) or any(
            c < 0 or c >= n for c in cond):
        raise_invalid("cond", f"distinct indices in [0, {n}) without x and y", cond,
                      "Pass a conditioning set of other variables.", "fisher_z_test")
    check_sample_size(n_samples, len(cond), "fisher_z_test")
    r = partial_correlation(arr, int(x), int(y), cond)
    r_c = (1.0 - _EPS) * np.sign(r) if abs(r) >= 1.0 else r
    stat = float(np.sqrt(n_samples - len(cond) - 3) * abs(0.5 * np.log((1 + r_c) / (1 - r_c))))
    p = float(fisher_z_pvalues(r, n_samples, len(cond)))
    return FisherZResult(x=int(x), y=int(y), cond=cond, partial_correlation=r, statistic=stat,
                         p_value=p, independent=p > alpha, alpha=float(alpha),
                         n_samples=float(n_samples))
