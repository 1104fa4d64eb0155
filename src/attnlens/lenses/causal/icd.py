r"""Iterative Causal Discovery (ICD) with Fisher-z tests on a correlation matrix (own implementation).

Rohekar, Nisimov, Gurwicz & Novik, "Iterative Causal Discovery in the Possible Presence of
Latent Confounders and Selection Bias", NeurIPS 2021 (arXiv 2111.04095): the structure search
that CLEANN (Rohekar, Gurwicz & Nisimov, NeurIPS 2023) runs on the correlation of the deepest
attention layer; official code ``causal_discovery_algs/icd.py`` of IntelLabs/causality-lab.

ICD learns a partial ancestral graph (PAG; latent confounders allowed) in iterations
:math:`r = 0, 1, 2, \dots`; after iteration :math:`r` the PAG is *r-representing*. Start from the
complete graph with circle marks ``o-o``; at iteration :math:`r` every remaining edge
:math:`X - Y` is tested against conditioning sets :math:`S` of size :math:`r` that satisfy
ICD-Sep:

1. :math:`|S| = r`;
2. :math:`S \subseteq \mathrm{PDS}_r(X)` (or of :math:`Y`), the nodes within distance :math:`r`
   of the PDS-tree of :math:`X`, and each node of :math:`S` reaches :math:`X` along PDS-tree
   paths inside :math:`S` (:mod:`attnlens.lenses.causal.pds`);
3. every node of :math:`S` is a possible ancestor of :math:`X` or of :math:`Y`;

tried in order of the sum of PDS-tree distances. An edge is deleted at once when
:math:`p > \alpha` (so, unlike stable PC, the result depends on the node order, as the official
code's); after each iteration the marks are reset to circles and re-oriented with R0
(v-structures) and Zhang's rules R1-R4 (arrowhead complete). ICD stops when no edge has an
admissible set. :math:`r = 0, 1` use plain (conditioning on one adjacent node) tests, as the
official code.

Not implemented: the selection-bias and tail rules R5-R10 (they only turn circles into tails,
never change the skeleton or an arrowhead; they are skipped in the possible-ancestor test too).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from itertools import combinations
from numbers import Integral, Real

import numpy as np

from attnlens._validation import Array, Interval, validate_params
from attnlens.lenses.causal.covariance import check_correlation
from attnlens.lenses.causal.pc import _scalar_pvalue
from attnlens.lenses.causal.pds import build_pds_tree, legal_subsets

__all__ = ["ARROW", "CIRCLE", "ICDResult", "NONE", "TAIL", "icd_search", "orient_pag"]

#: edge marks of ``marks[i, j]`` = the mark at ``j`` on the edge ``i - j``
NONE, CIRCLE, ARROW, TAIL = 0, 1, 2, 3


@dataclass(frozen=True)
class ICDResult:
    """Outcome of ICD: the PAG as ``marks`` (n, n) int8, ``marks[i, j]`` the mark at ``j`` on
    the edge ``i - j`` (NONE, CIRCLE, ARROW, TAIL); ``adjacency`` its skeleton; ``sepsets``
    ``{(i, j): S}`` (i < j) for removed edges; ``n_tests``; ``r`` the last iteration."""

    adjacency: np.ndarray
    marks: np.ndarray = field(repr=False)
    sepsets: dict[tuple[int, int], tuple[int, ...]] = field(repr=False)
    n_tests: int
    r: int
    seconds: float

    @property
    def arrowheads(self) -> np.ndarray:
        """(n, n) bool: an arrowhead at ``j`` on the edge ``i - j``."""
        return self.marks == ARROW


def _sep(sepsets, a: int, b: int) -> tuple[int, ...]:
    return sepsets[(min(a, b), max(a, b))]


def _discriminating_source(marks, adj, a: int, b: int, c: int) -> int | None:
    """A node ``d`` starting a discriminating path ``d *-> ... <-> a <-* b *-* c`` for ``b``."""
    frontier, visited = {a}, {a, b, c}
    while frontier:
        nxt = set()
        for cur in sorted(frontier):
            for d in np.flatnonzero(marks[:, cur] == ARROW):  # d *-> cur
                d = int(d)
                if d in (a, b, c):
                    continue
                if not adj[d, c]:
                    return d
                if (d not in visited and marks[d, c] == ARROW and marks[c, d] == TAIL
                        and marks[cur, d] == ARROW):  # d -> c and d <-> cur
                    nxt.add(d)
        visited |= nxt
        frontier = nxt
    return None


def _rule(marks, adj, sepsets) -> bool:
    """One pass of R1-R4; True when a mark changed."""
    changed = False
    n = len(adj)
    for b in range(n):
        for a in np.flatnonzero(marks[:, b] == ARROW):  # R1: a *-> b o-* c, a, c apart
            for c in np.flatnonzero(marks[:, b] == CIRCLE):
                if a != c and not adj[a, c]:
                    marks[c, b], marks[b, c] = TAIL, ARROW
                    changed = True
    for b in range(n):  # R2: a *-> b -> c or a -> b *-> c, and a *-o c
        for a in np.flatnonzero(marks[:, b] == ARROW):
            for c in np.flatnonzero(adj[b]):
                if c == a or not adj[a, c] or marks[a, c] != CIRCLE:
                    continue
                if (marks[b, c] == ARROW and marks[c, b] == TAIL) or (
                        marks[b, a] == TAIL and marks[b, c] == ARROW):
                    marks[a, c] = ARROW
                    changed = True
    for b in range(n):  # R3: a *-> b <-* c, a *-o d o-* c, a, c apart, d *-o b
        for d in np.flatnonzero(marks[:, b] == CIRCLE):
            ac = np.flatnonzero((marks[:, b] == ARROW) & (marks[:, d] == CIRCLE))
            if any(not adj[a, c] for a, c in combinations(ac, 2)):
                marks[d, b] = ARROW
                changed = True
    for b in range(n):  # R4: discriminating path (d, ..., a, b, c) with b o-* c
        for c in np.flatnonzero(marks[:, b] == CIRCLE):
            for a in np.flatnonzero((marks[:, c] == ARROW) & (marks[c, :] == TAIL)):
                if marks[b, a] != ARROW:
                    continue
                d = _discriminating_source(marks, adj, int(a), b, int(c))
                if d is None:
                    continue
                if b in _sep(sepsets, d, int(c)):
                    marks[b, c], marks[c, b] = ARROW, TAIL
                else:
                    marks[b, a] = marks[a, b] = marks[b, c] = marks[c, b] = ARROW
                changed = True
                break
    return changed


def orient_pag(adjacency: np.ndarray, sepsets) -> np.ndarray:
    """Circle marks on ``adjacency``, then R0 (v-structures from ``sepsets``) and R1-R4."""
    adj = np.asarray(adjacency, dtype=bool)
    marks = np.where(adj, CIRCLE, NONE).astype(np.int8)
    n = len(adj)
    for z in range(n):
        for x, y in combinations(np.flatnonzero(adj[z]), 2):
            if not adj[x, y] and z not in _sep(sepsets, int(x), int(y)):
                marks[x, z] = marks[y, z] = ARROW
    while _rule(marks, adj, sepsets):
        pass
    return marks


def _possible_ancestors(marks: np.ndarray, adj: np.ndarray, node: int) -> np.ndarray:
    """Nodes with a possibly directed path into ``node`` (no head at the tail end, no tail at
    the head end of each edge), as a boolean mask."""
    pp = adj & (marks.T != ARROW) & (marks != TAIL)  # pp[u, v]: u is a possible parent of v
    seen = np.zeros(len(adj), dtype=bool)
    queue = deque([node])
    while queue:
        v = queue.popleft()
        for u in np.flatnonzero(pp[:, v] & ~seen):
            seen[u] = True
            queue.append(int(u))
    seen[node] = False
    return seen


def _icd_sets(marks, adj, x: int, y: int, r: int) -> list[tuple[int, ...]]:
    heads = marks == ARROW
    anc = _possible_ancestors(marks, adj, x) | _possible_ancestors(marks, adj, y)
    scored: dict[tuple[int, ...], float] = {}
    for root in (x, y):
        tree = build_pds_tree(adj, heads, root, max_depth=r)
        for s in legal_subsets(tree, r):
            if x in s or y in s or not all(anc[v] for v in s):
                continue
            key = tuple(sorted(s))
            dist = float(sum(tree.distance[v] for v in s))
            scored[key] = min(dist, scored.get(key, dist))
    return sorted(scored, key=lambda s: scored[s])


@validate_params({
    "corr": [Array(ndim=2)],
    "n_samples": [Interval(Real, 3, None, closed="neither")],
    "alpha": [Interval(Real, 0, 1, closed="neither")],
    "max_r": [None, Interval(Integral, 0, None)],
})
def icd_search(corr, n_samples: float, alpha: float = 0.01, max_r: int | None = None
               ) -> ICDResult:
    """ICD with Fisher-z tests on ``corr`` (see the module docstring).

    Parameters
    ----------
    corr : (n, n) correlation matrix.
    n_samples : sample size of the tests (for attention: the hidden size, as the paper).
    alpha : significance level (independent when ``p > alpha``).
    max_r : last iteration to run (``None``: until ICD concludes).
    """
    t0 = time.perf_counter()
    corr = check_correlation(corr, caller="icd_search")
    n = corr.shape[0]
    adj = ~np.eye(n, dtype=bool)
    sepsets: dict[tuple[int, int], tuple[int, ...]] = {}
    n_tests = 0

    def test(x: int, y: int, cond: tuple[int, ...]) -> bool:
        nonlocal n_tests
        n_tests += 1
        if n_samples - len(cond) - 3 <= 0:
            return False
        if _scalar_pvalue(corr, x, y, cond, n_samples) > alpha:
            adj[x, y] = adj[y, x] = False
            sepsets[(x, y)] = cond
            return True
        return False

    for x, y in combinations(range(n), 2):  # r = 0
        test(x, y, ())
    marks = orient_pag(adj, sepsets)
    r = 0
    while max_r is None or r < max_r:
        r += 1
        done = True
        for x, y in combinations(range(n), 2):
            if not adj[x, y]:
                continue
            if r == 1:
                cands = [(int(z),) for z in dict.fromkeys(
                    [*np.flatnonzero(adj[x]).tolist(), *np.flatnonzero(adj[y]).tolist()])
                    if z not in (x, y)]
            else:
                cands = _icd_sets(marks, adj, x, y, r)
            for cond in cands:
                done = False
                if test(x, y, cond):
                    break
        if done and r > 1:
            break
        marks = orient_pag(adj, sepsets)
        if done:
            break
    return ICDResult(adjacency=adj, marks=marks, sepsets=sepsets, n_tests=n_tests, r=r,
                     seconds=time.perf_counter() - t0)
