r"""Depth-efficiency limits of self-attention (Levine, Wies, Sharir, Bata, Shashua, NeurIPS 2020).

"Limits to Depth Efficiencies of Self-Attention" (arXiv 2006.12467) proves a depth threshold
logarithmic in the network width :math:`d_x`:

.. math:: L_{th}(d_x) = \log_3 d_x .

Below it (:math:`L < L_{th}`) stacking self-attention layers is double-exponentially efficient:
a shallower network needs a double-exponentially wider one to express a deeper one. Above it
the width is the bottleneck: adding a layer is worth about as much as widening. The paper's
empirical signature: at a matched parameter count, deeper networks overtake shallower ones only
once they are wide enough, i.e. roughly where :math:`d_x \ge 3^L`.

Parameter counts here follow the paper and Kaplan et al. (2020): non-embedding parameters of a
pre-LN Transformer block, :math:`12 d^2 + 13 d` (Q, K, V, O with biases, a 4x MLP with biases,
two LayerNorms).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral

import numpy as np

from attnlens._validation import Array, Interval, raise_invalid, validate_params
from attnlens.lenses.projection import int_array

__all__ = [
    "COMMON_MODELS",
    "DepthComparison",
    "ModelShape",
    "compare_depths",
    "depth_regime",
    "depth_threshold",
    "threshold_table",
    "transformer_params",
    "width_for_params",
]

#: log base of the threshold (the paper's L_th = log_3 d_x).
THRESHOLD_BASE = 3.0
#: MLP expansion of a standard Transformer block.
MLP_RATIO = 4


@dataclass(frozen=True)
class ModelShape:
    """A published architecture: its width ``d_x`` (hidden size) and depth (layers)."""

    name: str
    width: int
    depth: int


#: Common models and their published (width, depth).
COMMON_MODELS: tuple[ModelShape, ...] = (
    ModelShape("all-MiniLM-L6-v2", 384, 6),
    ModelShape("ViT-S/14 (attnlens vision backbone)", 384, 12),
    ModelShape("BERT-base", 768, 12),
    ModelShape("ViT-B/16", 768, 12),
    ModelShape("GPT-2 small", 768, 12),
    ModelShape("BERT-large", 1024, 24),
    ModelShape("GPT-2 medium", 1024, 24),
    ModelShape("ViT-L/16", 1024, 24),
    ModelShape("GPT-2 large", 1280, 36),
    ModelShape("GPT-2 XL", 1600, 48),
    ModelShape("GPT-3 175B", 12288, 96),
)


@validate_params({"width": [Interval(Integral, 1, None)]})
def depth_threshold(width: int) -> float:
    r"""The depth threshold :math:`L_{th} = \log_3 d_x` of Levine et al. (2020).

    Parameters
    ----------
    width : the network width :math:`d_x` (hidden size), a positive int.

    Returns
    -------
    float: the threshold depth (27 -> 3, 81 -> 4, 243 -> 5, 768 -> 6.04).
    """
    th = math.log(width) / math.log(THRESHOLD_BASE)
    k = round(th)
    return float(k) if THRESHOLD_BASE ** k == width else th  # exact at powers of 3


@validate_params({"depth": [Interval(Integral, 1, None)], "width": [Interval(Integral, 1, None)]})
def depth_regime(depth: int, width: int) -> str:
    """``"depth-efficient"`` when ``depth < log_3 width``, else ``"width-bottlenecked"``."""
    return "depth-efficient" if depth < depth_threshold(width) else "width-bottlenecked"


@validate_params({"depth": [Interval(Integral, 1, None)], "width": [Interval(Integral, 1, None)],
                  "vocab": [Interval(Integral, 0, None)], "context": [Interval(Integral, 0, None)]})
def transformer_params(depth: int, width: int, vocab: int = 0, context: int = 0) -> int:
    r"""Parameters of a pre-LN Transformer: :math:`L(12 d^2 + 13 d) + 2d + (V + n) d`.

    ``vocab`` and ``context`` add the (tied) token and the learned position embeddings; leave
    them 0 for the non-embedding count the paper (and Kaplan et al.) plot against.
    """
    block = 4 * (width * width + width) + 2 * MLP_RATIO * width * width + (MLP_RATIO + 1) * width
    block += 4 * width  # two LayerNorms
    return depth * block + 2 * width + (vocab + context) * width


@validate_params({"depth": [Interval(Integral, 1, None)], "params": [Interval(Integral, 1, None)],
                  "multiple": [Interval(Integral, 1, None)]})
def width_for_params(depth: int, params: int, multiple: int = 1) -> int:
    """The width (a multiple of ``multiple``) whose non-embedding count is closest to ``params``."""
    # solve 12 L d^2 + (13 L + 2) d = params for d, then round to the nearest allowed width
    a, b = 12.0 * depth, 13.0 * depth + 2.0
    d = (-b + math.sqrt(b * b + 4 * a * params)) / (2 * a)
    candidates = {max(multiple, multiple * math.floor(d / multiple)),
                  max(multiple, multiple * math.ceil(d / multiple))}
    return min(sorted(candidates), key=lambda w: abs(transformer_params(depth, w) - params))


@validate_params({"models": [None, Sequence]})
def threshold_table(models: Sequence[ModelShape] | None = None) -> list[dict[str, object]]:
    """One row per model: width, depth, ``log_3 width``, depth / threshold and the regime."""
    models = COMMON_MODELS if models is None else models
    rows = []
    for m in models:
        if not isinstance(m, ModelShape):
            raise_invalid("models", "a sequence of ModelShape", m,
                          "Build rows with ModelShape(name, width, depth).", "threshold_table")
        th = depth_threshold(m.width)
        rows.append({"model": m.name, "width": m.width, "depth": m.depth,
                     "threshold log3(width)": round(th, 2),
                     "depth / threshold": round(m.depth / th, 2),
                     "regime": depth_regime(m.depth, m.width)})
    return rows


@dataclass(frozen=True)
class DepthComparison:
    """Deeper vs shallower at matched parameter counts (log-params interpolation).

    ``params``: the common grid (non-embedding parameters); ``loss``: (depths, grid) the
    interpolated loss of each depth (NaN outside its measured range); ``best_depth``: the
    depth with the lowest loss at each grid point; ``gain``: (depths - 1, grid) the loss of
    depth ``k-1`` minus that of depth ``k`` (positive: the deeper network is better);
    ``crossover``: for each deeper depth, the smallest parameter count from which it stays
    better than the next shallower one (NaN if never); ``predicted_crossover``: the parameter
    count at which its width reaches ``3^L`` (the threshold), for comparison.
    """

    depths: tuple[int, ...]
    params: np.ndarray
    loss: np.ndarray
    best_depth: np.ndarray
    gain: np.ndarray
    crossover: np.ndarray
    predicted_crossover: np.ndarray


@validate_params({"depths": [Array(ndim=1, dtype=None)],
                  "params": [Array(ndim=1)], "losses": [Array(ndim=1)],
                  "grid": [Interval(Integral, 2, None)]})
def compare_depths(depths, params, losses, grid: int = 64) -> DepthComparison:
    """Compare depths at matched parameter counts from a sweep's (depth, params, loss) triples.

    Each depth's loss is interpolated linearly in ``log(params)``; the predicted crossover of
    depth ``L`` is :func:`transformer_params` at width ``3^L`` (Levine et al.'s threshold).
    """
    depths = int_array(depths, "depths", "compare_depths")
    params = np.asarray(params, dtype=np.float64)
    losses = np.asarray(losses, dtype=np.float64)
    if not (len(depths) == len(params) == len(losses)):
        raise_invalid("losses", f"as long as depths and params ({len(depths)}, {len(params)})",
                      f"got length {len(losses)}", "Pass one loss per run.", "compare_depths")
    if np.any(depths < 1) or np.any(params <= 0):
        raise_invalid("depths", "positive ints with positive params", depths,
                      "Depths and parameter counts are positive.", "compare_depths")
    levels = tuple(int(d) for d in np.unique(depths))
    if len(levels) < 2:
        raise_invalid("depths", "at least two distinct depths", levels,
                      "Sweep at least two depths to compare them.", "compare_depths")
    logp = np.log(params)
    xs = np.linspace(logp.min(), logp.max(), grid)
    curves = np.full((len(levels), grid), np.nan)
    for a, L in enumerate(levels):
        sel = depths == L
        order = np.argsort(logp[sel])
        lx, ly = logp[sel][order], losses[sel][order]
        ux = np.unique(lx)  # average repeated sizes (seeds)
        uy = np.array([ly[lx == u].mean() for u in ux])
        inside = (xs >= ux[0]) & (xs <= ux[-1])
        curves[a, inside] = np.interp(xs[inside], ux, uy)
    gain = curves[:-1] - curves[1:]
    best = np.full(grid, np.nan)
    for g in range(grid):
        col = curves[:, g]
        if np.isfinite(col).sum() >= 2:
            best[g] = levels[int(np.nanargmin(col))]
    crossover = np.full(len(levels) - 1, np.nan)
    for k in range(len(levels) - 1):
        ok = np.isfinite(gain[k])
        wins = ok & (gain[k] > 0)
        if wins.any():
            # the first grid point after which the deeper depth wins at every measured point
            idx = np.flatnonzero(ok)
            tail = [i for i in idx if np.all(gain[k][idx[idx >= i]] > 0)]
            if tail:
                crossover[k] = float(np.exp(xs[tail[0]]))
    predicted = np.array([float(transformer_params(L, int(round(THRESHOLD_BASE ** L))))
                          for L in levels[1:]])
    return DepthComparison(levels, np.exp(xs), curves, best, gain, crossover, predicted)
