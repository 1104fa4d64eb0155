"""Dinic's max-flow on the dense layered attention graph, compiled with numba.

Graph (Abnar & Zuidema 2020): layers 0..L of ``n`` nodes; node ``(l, u)`` for ``l >= 1`` has an
edge to every ``(l - 1, v)`` of capacity ``cap[l - 1, u, v]`` (layer ``l``'s attention of query
``u`` on key ``v``). The source is ``(L, j)``, the sink ``(0, i)``. Other nodes of layer 0 have
no way out and other nodes of layer L no way in, so both end layers shrink to one node.
Capacities and flows are dense ``(L, n, n)`` float64 arrays, so nothing is built per pair.
"""

from __future__ import annotations

import numba as nb
import numpy as np

#: residual capacities at or below this count as saturated (capacities lie in [0, 1])
FLOW_EPS = 1e-14


@nb.njit(cache=True, nogil=True)
def _bfs(cap, F, level, ql, qu, j, i, eps):  # pragma: no cover - compiled
    L, n = cap.shape[0], cap.shape[1]
    level[:] = -1
    level[L, j] = 0
    head, tail = 0, 1
    ql[0], qu[0] = L, j
    sink_level = -1
    while head < tail:
        lay, u = ql[head], qu[head]
        head += 1
        lv = level[lay, u]
        if sink_level >= 0 and lv + 1 >= sink_level:
            continue  # nodes at or past the sink's level cannot lie on a shortest path
        if lay >= 1:  # forward arcs (lay, u) -> (lay - 1, v)
            k = lay - 1
            if k == 0:
                if level[0, i] < 0 and cap[0, u, i] - F[0, u, i] > eps:
                    level[0, i] = lv + 1
                    sink_level = lv + 1
            else:
                for v in range(n):
                    if level[k, v] < 0 and cap[k, u, v] - F[k, u, v] > eps:
                        level[k, v] = lv + 1
                        ql[tail], qu[tail] = k, v
                        tail += 1
        if lay + 1 < L:  # backward (residual) arcs (lay, u) -> (lay + 1, w)
            for w in range(n):
                if level[lay + 1, w] < 0 and F[lay, w, u] > eps:
                    level[lay + 1, w] = lv + 1
                    ql[tail], qu[tail] = lay + 1, w
                    tail += 1
    return sink_level


@nb.njit(cache=True, nogil=True)
def _residual(cap, F, lay, u, a, n):  # pragma: no cover - compiled
    if a < n:
        return cap[lay - 1, u, a] - F[lay - 1, u, a]
    return F[lay, a - n, u]


@nb.njit(cache=True, nogil=True)
def max_flow(cap, F, level, ptr, ql, qu, pl, pu, pa, j, i, eps):  # pragma: no cover - compiled
    """Max-flow value from ``(L, j)`` to ``(0, i)``; ``F`` and the other arrays are scratch."""
    L, n = cap.shape[0], cap.shape[1]
    F[:] = 0.0
    total = 0.0
    while _bfs(cap, F, level, ql, qu, j, i, eps) >= 0:
        ptr[:] = 0
        while True:  # one augmenting path per pass, current-arc pointers keep it linear
            depth = 0
            pl[0], pu[0] = L, j
            found = False
            while True:
                lay, u = pl[depth], pu[depth]
                if lay == 0:
                    found = True
                    break
                advanced = False
                nxt = level[lay, u] + 1
                while ptr[lay, u] < 2 * n:
                    a = ptr[lay, u]
                    if a < n:
                        v = a
                        if (lay - 1 > 0 or v == i) and level[lay - 1, v] == nxt \
                                and cap[lay - 1, u, v] - F[lay - 1, u, v] > eps:
                            pa[depth] = a
                            depth += 1
                            pl[depth], pu[depth] = lay - 1, v
                            advanced = True
                            break
                    elif lay + 1 < L:
                        w = a - n
                        if level[lay + 1, w] == nxt and F[lay, w, u] > eps:
                            pa[depth] = a
                            depth += 1
                            pl[depth], pu[depth] = lay + 1, w
                            advanced = True
                            break
                    else:
                        ptr[lay, u] = 2 * n
                        break
                    ptr[lay, u] += 1
                if not advanced:
                    if depth == 0:
                        break
                    level[lay, u] = -1  # dead end for the rest of this phase
                    depth -= 1
                    ptr[pl[depth], pu[depth]] += 1
            if not found:
                break
            push = np.inf
            for d in range(depth):
                r = _residual(cap, F, pl[d], pu[d], pa[d], n)
                if r < push:
                    push = r
            for d in range(depth):
                lay, u, a = pl[d], pu[d], pa[d]
                if a < n:
                    F[lay - 1, u, a] += push
                else:
                    F[lay, a - n, u] -= push
            total += push
    return total


@nb.njit(cache=True, parallel=True)
def all_pairs_max_flow(cap, sources, eps):  # pragma: no cover - compiled
    """(len(sources), n) max-flow values from last-layer nodes ``sources`` to every input."""
    L, n = cap.shape[0], cap.shape[1]
    out = np.zeros((sources.shape[0], n))
    nodes = (L + 1) * n
    for r in nb.prange(sources.shape[0]):
        j = sources[r]
        F = np.zeros((L, n, n))
        level = np.empty((L + 1, n), dtype=np.int64)
        ptr = np.empty((L + 1, n), dtype=np.int64)
        ql = np.empty(nodes, dtype=np.int64)
        qu = np.empty(nodes, dtype=np.int64)
        pl = np.empty(nodes + 1, dtype=np.int64)
        pu = np.empty(nodes + 1, dtype=np.int64)
        pa = np.empty(nodes + 1, dtype=np.int64)
        for i in range(n):
            out[r, i] = max_flow(cap, F, level, ptr, ql, qu, pl, pu, pa, j, i, eps)
    return out
