r"""Kernel spectra of real attention maps (Chen, Tao, Tonin, Suykens, "Primal-Attention",
NeurIPS 2023, arXiv 2305.19798, Sec. 3 / Fig. 1: trained attention matrices are low-rank).

For each layer and head, the normalized cumulative singular values of the ``n x n`` map,

.. math:: c_k = \sum_{i \le k} \sigma_i \Big/ \sum_i \sigma_i ,

and the rank at a given energy, :math:`r_\tau = \min\{k : c_k \ge \tau\}`, for
:math:`\tau \in \{0.90, 0.95, 0.99\}`. Uses the kernel pillar's ``cumulative_singular_values``
and ``rank_at`` (the same definition as its spectrum analysis, not a second copy).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from attnlens._validation import Array, validate_params
from attnlens.kernel.spectrum import cumulative_singular_values, rank_at
from attnlens.lenses._attention import check_attention

__all__ = ["ENERGY_LEVELS", "MapSpectrum", "map_spectrum"]

ENERGY_LEVELS = (0.90, 0.95, 0.99)


@dataclass(frozen=True)
class MapSpectrum:
    """curves: (L, H, n) ``c_k``; ranks: {level: (L, H) int ranks}; n: tokens."""

    curves: np.ndarray
    ranks: dict[float, np.ndarray]
    n: int

    def summary(self) -> list[dict[str, float]]:
        """One row per layer: mean rank over heads at each level, and the relative rank."""
        rows = []
        for layer in range(self.curves.shape[0]):
            row: dict[str, float] = {"layer": layer}
            for level, r in self.ranks.items():
                row[f"rank@{level:g}"] = float(r[layer].mean())
            row["n"] = self.n
            rows.append(row)
        return rows


@validate_params({"att": [Array(ndim=4)]})
def map_spectrum(att) -> MapSpectrum:
    """Spectra of one sequence's maps (layers, heads, n, n) -> :class:`MapSpectrum`."""
    a = check_attention(att, caller="map_spectrum")
    L, H, n, _ = a.shape
    curves = np.empty((L, H, n))
    for layer in range(L):
        for head in range(H):
            curves[layer, head] = cumulative_singular_values(a[layer, head])
    ranks = {lv: np.array([[rank_at(curves[i, j], lv) for j in range(H)] for i in range(L)])
             for lv in ENERGY_LEVELS}
    return MapSpectrum(curves=curves, ranks=ranks, n=n)
