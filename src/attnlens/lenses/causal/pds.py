r"""Possible-d-separation (PDS) tree rooted at a node, and the legal subsets it orders.

Rohekar et al., "Iterative Causal Discovery in the Possible Presence of Latent Confounders and
Selection Bias", NeurIPS 2021 (the PDS-tree of ICD), used by CLEANN (NeurIPS 2023) to order the
candidate explanations of a target token. A node ``v`` enters the tree below ``u`` when the
path root, ..., ``w``, ``u``, ``v`` is a possible-d-separating path: every inner triple
``(w, u, v)`` is a triangle (``w`` adjacent to ``v``) or ``u`` is a collider
(``w *-> u <-* v``). Each skeleton edge is walked once (breadth first), as in the official
``create_pds_tree``. A node's distance is its smallest depth in the tree (neighbours: 1).

A subset ``S`` is *legal* (ICD-Sep condition 2-b) when each of its nodes is reachable from the
root along tree paths whose nodes all lie in ``S``. Candidate explanations of size ``k`` are
the legal subsets ordered by the sum of their nodes' distances (ties: combination order).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from itertools import combinations

import numpy as np

__all__ = ["PDSTree", "build_pds_tree", "legal_subsets"]


@dataclass(frozen=True)
class PDSTree:
    """A PDS-tree: ``labels[v]`` (graph node) and ``parents[v]`` of each tree vertex (root: -1).

    ``depth[v]`` is the vertex depth (root 0); ``distance[u]`` the smallest depth of node ``u``
    (``inf`` when ``u`` is not in the tree); ``members`` the PDS set (tree nodes but the root),
    in order of first appearance.
    """

    root: int
    labels: np.ndarray
    parents: np.ndarray
    depth: np.ndarray
    distance: np.ndarray
    members: tuple[int, ...]


def build_pds_tree(adjacency: np.ndarray, arrowheads: np.ndarray, root: int,
                   max_depth: int | None = None, nodes=None) -> PDSTree:
    """Breadth-first PDS-tree from ``root`` over the skeleton restricted to ``nodes``.

    ``arrowheads[x, z]``: an arrowhead at ``z`` on the edge ``x - z``. No input checks
    (internal; :func:`attnlens.lenses.causal.explain.causal_explanation` checks its inputs).
    """
    n = adjacency.shape[0]
    keep = np.zeros(n, dtype=bool)
    keep[list(range(n)) if nodes is None else list(nodes)] = True
    keep[root] = True
    adj = adjacency & keep[:, None] & keep[None, :]
    walk = adj.copy()  # edges not yet walked
    limit = n - 1 if max_depth is None else max_depth
    labels, parents, depth = [root], [-1], [0]
    queue: deque[tuple[int, int, int]] = deque()  # (previous node, node, tree vertex)
    for nb in np.flatnonzero(walk[root]):
        walk[root, nb] = walk[nb, root] = False
        labels.append(int(nb)), parents.append(0), depth.append(1)
        queue.append((root, int(nb), len(labels) - 1))
    while queue:
        prev, node, vertex = queue.popleft()
        if depth[vertex] >= limit:
            continue
        for nxt in np.flatnonzero(walk[node]):
            nxt = int(nxt)
            if nxt == prev:
                continue
            triangle = adj[prev, nxt]
            collider = arrowheads[prev, node] and arrowheads[nxt, node]
            if not (triangle or collider):
                continue
            walk[node, nxt] = walk[nxt, node] = False
            labels.append(nxt), parents.append(vertex), depth.append(depth[vertex] + 1)
            queue.append((node, nxt, len(labels) - 1))
    labels_a = np.array(labels, dtype=np.int64)
    depth_a = np.array(depth, dtype=np.int64)
    distance = np.full(n, np.inf)
    for lab, d in zip(labels_a[1:], depth_a[1:], strict=True):
        distance[lab] = min(distance[lab], d)
    members = tuple(dict.fromkeys(int(v) for v in labels_a[1:] if v != root))
    return PDSTree(root=root, labels=labels_a, parents=np.array(parents, dtype=np.int64),
                   depth=depth_a, distance=distance, members=members)


def _is_legal(tree: PDSTree, subset: frozenset[int]) -> bool:
    """Every node of ``subset`` reachable from the root through tree vertices labelled in it."""
    ok = np.zeros(len(tree.labels), dtype=bool)
    ok[0] = True
    reached = set()
    for v in range(1, len(tree.labels)):  # parents precede children (breadth-first order)
        if tree.labels[v] in subset and ok[tree.parents[v]]:
            ok[v] = True
            reached.add(int(tree.labels[v]))
    return len(reached) == len(subset)


def legal_subsets(tree: PDSTree, size: int, candidates=None) -> list[tuple[int, ...]]:
    """Legal subsets of ``size`` nodes of the PDS set (optionally within ``candidates``),
    ordered by the sum of the nodes' distances (stable for ties)."""
    pool = [v for v in tree.members if candidates is None or v in candidates]
    subsets = [s for s in combinations(pool, size) if _is_legal(tree, frozenset(s))]
    subsets.sort(key=lambda s: float(sum(tree.distance[v] for v in s)))
    return subsets
