r"""Stable PC skeleton search with Fisher-z tests on a correlation matrix (own implementation).

PC (Spirtes, Glymour & Scheines 2000) in its order-independent "stable" form (Colombo &
Maathuis, JMLR 2014): start from the complete graph; for depth :math:`\ell = 0, 1, \dots`
while some node has more than :math:`\ell` neighbours, test every remaining edge
:math:`x - y` against every :math:`S \subseteq \operatorname{adj}(x) \setminus \{y\}` and every
:math:`S \subseteq \operatorname{adj}(y) \setminus \{x\}` with :math:`|S| = \ell`, where the
adjacencies are frozen at the start of the depth; remove the edges found independent
(:math:`p > \alpha`, :mod:`attnlens.lenses.causal.citest`) only when the depth ends.
This is causal-learn's ``pc(data, alpha, fisherz, stable=True)`` skeleton (same loop bound
``max_degree - 1 > depth``, same test arithmetic), which the tests check edge for edge.

Rohekar, Gurwicz & Nisimov (NeurIPS 2023, arXiv 2310.20307) run such constraint-based searches
on the correlation of the deepest attention layer (:mod:`attnlens.lenses.causal.covariance`);
their default is ICD, PC is an option of their code. The v-structures of the skeleton (rule R0:
:math:`x \ast\!\!\to z \leftarrow\!\!\ast y` for unshielded :math:`x - z - y` with
:math:`z \notin \operatorname{sepset}(x, y)`) are returned for the explanation search.

Speed: depths 0 and 1 are vectorized over all pairs (closed-form partial correlations); depth
:math:`\geq 2` inverts all conditioning sets of an edge as one batch. p-values within
``1e-9`` of ``alpha`` are recomputed with causal-learn's scalar arithmetic so decisions at the
boundary agree bit for bit.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from itertools import combinations
from numbers import Integral, Real

import numpy as np
from scipy.stats import norm

from attnlens._validation import Array, Interval, raise_invalid, validate_params
from attnlens.lenses.causal.citest import fisher_z_pvalues
from attnlens.lenses.causal.covariance import check_correlation

__all__ = ["PCResult", "pc_search", "pc_skeleton"]

#: p-values closer than this to alpha are recomputed with causal-learn's scalar arithmetic
BOUNDARY_BAND = 1e-9
#: conditioning sets inverted per batch at depth >= 2 (memory vs early exit)
BATCH = 512
#: (pair, z) entries per depth-1 block: ~8 float64 arrays of this size live at once (~130 MB)
DEPTH1_CHUNK = 2 ** 21
_EPS = np.finfo(float).eps


@dataclass(frozen=True)
class PCResult:
    """Outcome of the stable PC search.

    adjacency : (n, n) bool, symmetric skeleton.
    sepsets : ``{(i, j): S}`` for each removed edge ``i < j``, the first separating set found.
    arrowheads : (n, n) bool, ``arrowheads[x, z]`` = an arrowhead at ``z`` on the edge ``x - z``
        (v-structures, rule R0).
    n_tests : conditional-independence tests computed (unordered, after de-duplication).
    depth : the largest conditioning-set size tested.
    seconds : wall time.
    """

    adjacency: np.ndarray
    sepsets: dict[tuple[int, int], tuple[int, ...]] = field(repr=False)
    arrowheads: np.ndarray = field(repr=False)
    n_tests: int
    depth: int
    seconds: float


def _scalar_pvalue(corr: np.ndarray, x: int, y: int, cond: tuple[int, ...], n: float) -> float:
    """causal-learn's ``FisherZ.__call__`` arithmetic, for decisions at the boundary."""
    idx = (x, y, *cond)
    inv = np.linalg.inv(corr[np.ix_(idx, idx)])
    r = -inv[0, 1] / math.sqrt(abs(inv[0, 0] * inv[1, 1]))
    if abs(r) >= 1:
        r = (1.0 - _EPS) * np.sign(r)
    z = 0.5 * math.log((1 + r) / (1 - r))
    rest = n - len(cond) - 3
    if rest < 0:
        return float("nan")
    stat = math.sqrt(rest) * abs(z)
    return float(2 * (1 - norm.cdf(abs(stat))))


def _independent(p: np.ndarray, alpha: float, recheck) -> np.ndarray:
    """``p > alpha`` with the boundary cases re-decided by ``recheck(index) -> p``."""
    with np.errstate(invalid="ignore"):
        out = p > alpha
        near = np.flatnonzero(np.abs(p - alpha) <= BOUNDARY_BAND)
    for k in near:
        out.flat[k] = recheck(int(k)) > alpha
    return out


def _singular(x: int, y: int, cond: tuple[int, ...]):
    raise_invalid("corr", "non-singular on every tested set",
                  f"got a singular sub-matrix on {(x, y, *cond)}",
                  "Drop duplicated or deterministic variables (causal-learn refuses it too).",
                  "pc_search")


def _depth0(corr, adj, n, alpha):
    iu = np.argwhere(np.triu(adj, 1))
    r = corr[iu[:, 0], iu[:, 1]]
    with np.errstate(invalid="ignore", divide="ignore"):
        p = fisher_z_pvalues(r, n, 0)
    ind = _independent(p, alpha, lambda k: _scalar_pvalue(corr, *map(int, iu[k]), (), n))
    return [((int(a), int(b)), ()) for (a, b), i in zip(iu, ind, strict=True) if i], len(iu)


def _depth1(corr, adj, n, alpha):
    nv = corr.shape[0]
    iu = np.argwhere(np.triu(adj, 1))  # (m, 2)
    step = max(1, DEPTH1_CHUNK // max(nv, 1))
    removed, n_tests = [], 0
    for lo in range(0, len(iu), step):  # chunks of pairs: memory O(step * nv), not O(n^3)
        part_removed, part_tests = _depth1_pairs(corr, adj, n, alpha, iu[lo:lo + step])
        removed += part_removed
        n_tests += part_tests
    return removed, n_tests


def _depth1_pairs(corr, adj, n, alpha, pairs):
    """Depth-1 tests of the edges ``pairs`` (m, 2) against every z adjacent to x or y."""
    nv = corr.shape[0]
    x, y = pairs[:, 0], pairs[:, 1]
    rxy = corr[x, y][:, None]  # (m, 1)
    rxz, ryz = corr[x], corr[y]  # (m, nv)
    valid = (adj[x] | adj[y])  # z adjacent to x or to y (frozen adjacencies)
    valid[np.arange(len(x)), x] = False
    valid[np.arange(len(x)), y] = False
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (rxy - rxz * ryz) / np.sqrt((1 - rxz ** 2) * (1 - ryz ** 2))
        r = np.where(np.isfinite(r), r, np.nan)
        p = fisher_z_pvalues(r, n, 1)
    p = np.where(valid, p, -1.0)
    bad = np.argwhere(valid & np.isnan(p))
    for m_i, z in bad:  # |r_xz| = 1: let the scalar path decide (or refuse a singular set)
        try:
            p[m_i, z] = _scalar_pvalue(corr, int(x[m_i]), int(y[m_i]), (int(z),), n)
        except np.linalg.LinAlgError:
            _singular(int(x[m_i]), int(y[m_i]), (int(z),))

    def recheck(k: int) -> float:
        m_i, z = divmod(k, nv)
        return _scalar_pvalue(corr, int(x[m_i]), int(y[m_i]), (int(z),), n)

    ind = _independent(p, alpha, recheck)
    removed = []
    for m_i in np.flatnonzero(ind.any(axis=1)):
        z = int(np.flatnonzero(ind[m_i])[0])
        removed.append(((int(x[m_i]), int(y[m_i])), (z,)))
    return removed, int(valid.sum())


def _batch_pvalues(corr, x, y, sets, n):
    idx = np.array([(x, y, *s) for s in sets], dtype=np.int64)  # (m, k+2)
    sub = corr[idx[:, :, None], idx[:, None, :]]  # (m, k+2, k+2)
    try:
        inv = np.linalg.inv(sub)
    except np.linalg.LinAlgError:
        for s in sets:
            try:
                np.linalg.inv(corr[np.ix_((x, y, *s), (x, y, *s))])
            except np.linalg.LinAlgError:
                _singular(x, y, s)
        raise
    with np.errstate(invalid="ignore", divide="ignore"):
        r = -inv[:, 0, 1] / np.sqrt(np.abs(inv[:, 0, 0] * inv[:, 1, 1]))
        return fisher_z_pvalues(r, n, len(sets[0]))


def _depth_k(corr, adj, n, alpha, depth):
    removed, n_tests = [], 0
    neigh = [np.flatnonzero(row) for row in adj]
    for x, y in np.argwhere(np.triu(adj, 1)):
        x, y = int(x), int(y)
        sets = list(dict.fromkeys(
            tuple(sorted(s)) for side, other in ((x, y), (y, x))
            for s in combinations([int(v) for v in neigh[side] if v != other], depth)))
        for lo in range(0, len(sets), BATCH):
            chunk = sets[lo:lo + BATCH]
            p = _batch_pvalues(corr, x, y, chunk, n)
            n_tests += len(chunk)
            ind = _independent(p, alpha,
                               lambda k, c=chunk, a=x, b=y: _scalar_pvalue(corr, a, b, c[k], n))
            hit = np.flatnonzero(ind)
            if hit.size:
                removed.append(((x, y), chunk[int(hit[0])]))
                break
    return removed, n_tests


def _orient_colliders(adj: np.ndarray, sepsets) -> np.ndarray:
    """Rule R0: ``x *-> z <-* y`` for unshielded ``x - z - y`` with ``z`` not in sepset(x, y)."""
    heads = np.zeros_like(adj)
    for (x, y), sep in sepsets.items():
        for z in np.flatnonzero(adj[x] & adj[y]):
            if int(z) not in sep:
                heads[x, z] = heads[y, z] = True
    return heads


@validate_params({
    "corr": [Array(ndim=2)],
    "n_samples": [Interval(Real, 3, None, closed="neither")],
    "alpha": [Interval(Real, 0, 1, closed="neither")],
    "max_depth": [None, Interval(Integral, 0, None)],
})
def pc_search(corr, n_samples: float, alpha: float = 0.01, max_depth: int | None = None
              ) -> PCResult:
    """Stable PC with Fisher-z tests on ``corr``; skeleton, separating sets and v-structures.

    Parameters
    ----------
    corr : (n, n) correlation matrix (PSD, unit diagonal).
    n_samples : sample size of the tests; for attention, the paper's effective sample size
        (the hidden size ``d``).
    alpha : significance level (independent when ``p > alpha``).
    max_depth : largest conditioning-set size (``None``: until no node has enough neighbours,
        as causal-learn's ``max_k=None``).
    """
    t0 = time.perf_counter()
    corr = check_correlation(corr, caller="pc_search")
    nv = corr.shape[0]
    adj = ~np.eye(nv, dtype=bool)
    sepsets: dict[tuple[int, int], tuple[int, ...]] = {}
    n_tests, depth = 0, -1
    while adj.sum(axis=1).max() - 1 > depth:
        depth += 1
        if max_depth is not None and depth > max_depth:
            depth -= 1
            break
        if depth == 0:
            removed, k = _depth0(corr, adj, n_samples, alpha)
        elif depth == 1:
            removed, k = _depth1(corr, adj, n_samples, alpha)
        else:
            removed, k = _depth_k(corr, adj, n_samples, alpha, depth)
        n_tests += k
        for (x, y), sep in removed:  # stable: remove after the whole depth
            adj[x, y] = adj[y, x] = False
            sepsets[(x, y)] = tuple(int(s) for s in sep)
    return PCResult(adjacency=adj, sepsets=sepsets, arrowheads=_orient_colliders(adj, sepsets),
                    n_tests=n_tests, depth=depth, seconds=time.perf_counter() - t0)


@validate_params({
    "corr": [Array(ndim=2)],
    "n_samples": [Interval(Real, 3, None, closed="neither")],
    "alpha": [Interval(Real, 0, 1, closed="neither")],
    "max_depth": [None, Interval(Integral, 0, None)],
})
def pc_skeleton(corr, n_samples: float, alpha: float = 0.01, max_depth: int | None = None
                ) -> np.ndarray:
    """Boolean (n, n) adjacency of the stable-PC skeleton (see :func:`pc_search`).

    Equals causal-learn's ``pc(data, alpha, fisherz, stable=True).G.graph != 0`` when
    ``corr = np.corrcoef(data, rowvar=False)`` and ``n_samples = data.shape[0]``.
    """
    return pc_search(corr, n_samples, alpha, max_depth).adjacency
