r"""Maps between network weights and the convex variable ``Z`` (one block per gate / group).

Forward map (any weights): ``Z_b = sum_{k in block b} vec(W1_k) vec(W2_k)^T`` with the row-major
``vec`` of :mod:`attnlens.convex.programs`; then ``sum_b ||Z_b||_* <= (1/2) sum_k
(||W1_k||^2 + ||W2_k||^2)`` so the convex optimum lower-bounds every network's regularized loss.

Recovery (Sahiner et al., ICML 2022, arXiv 2205.08078): the SVD ``Z_b = sum_r sigma_r u_r v_r^T``
gives one unit per singular pair, ``W1 = sqrt(sigma_r) u_r``, ``W2 = sqrt(sigma_r) v_r`` (gate of
block b), whose weight decay ``(1/2)(||W1||^2 + ||W2||^2) = sigma_r`` sums to ``||Z_b||_*``: the
recovered head attains the convex optimum. Score convention: ``score_t = x_t^T W1 z``.
"""

from __future__ import annotations

import numpy as np
import torch

from attnlens._validation import (
    Array,
    InstanceOf,
    Integral,
    Interval,
    Options,
    Real,
    raise_invalid,
    validate_params,
)
from attnlens.convex._linalg import spectral_norm, svd
from attnlens.convex.heads import HEADS, ConvexHead
from attnlens.convex.operators import group_slices

_COUNT = Interval(Integral, 1, None)
_BLOCKS = InstanceOf(list, tuple, name="a list of arrays, one per block")


def block_layout(head: str, activation: str, n_gates: int, groups: int) -> list[tuple[int, int]]:
    """``(group, gate)`` of each block, in the order :func:`build_program` emits them."""
    gated = activation != "linear"
    ng = groups if head == "bfno" else 1
    gates = range(n_gates) if gated else [0]
    return [(g, j) for g in range(ng) for j in gates]


def _unit_shapes(head: str, s: int, d: int, c: int, groups: int):
    dg = d // groups if head == "bfno" else d
    return {"self_attention": ((d, d), (d, c)), "mixer": ((s, s), (d, c)),
            "fno": ((s, d), (c,)), "bfno": ((s, dg), (c,)), "mlp": ((d,), (c,))}[head]


@validate_params({
    "net": [InstanceOf(ConvexHead)],
    "gate_index": [Array(ndim=1)],
    "group_index": [Array(ndim=1)],
    "n_gates": [_COUNT],
    "groups": [_COUNT],
})
def network_to_blocks(net: ConvexHead, gate_index: np.ndarray, group_index: np.ndarray,
                      n_gates: int, groups: int) -> list[np.ndarray]:
    """Z blocks built from a network's weights (unit k sits in block (group_index[k], gate_index[k]))."""
    layout = block_layout(net.head, net.activation, n_gates, groups)
    W1 = net._w1().detach().cpu().numpy()
    W2 = net.W2.detach().cpu().numpy()
    d = net.group_mask.shape[1]
    m = W1.shape[0]
    for name, index, count in (("gate_index", gate_index, n_gates),
                               ("group_index", group_index, groups)):
        index = np.asarray(index)
        if len(index) != m or np.any((index < 0) | (index >= count) | (index % 1 != 0)):
            raise_invalid(name, f"{m} integers in [0, {count}) (one per unit of net)", index,
                          "Give the block of every unit.", "network_to_blocks")
    Zs: dict[int, np.ndarray] = {}
    for k in range(W1.shape[0]):
        g = int(group_index[k]) if net.head == "bfno" else 0
        j = int(gate_index[k]) if net.activation != "linear" else 0
        w1 = W1[k][:, group_slices(d, groups)[g]] if net.head == "bfno" else W1[k]
        b = layout.index((g, j))
        term = np.outer(w1.ravel(), W2[k].ravel())
        Zs[b] = Zs.get(b, 0) + term
    shape0 = None
    out = []
    for b in range(len(layout)):
        if b in Zs:
            shape0 = Zs[b].shape
    for b in range(len(layout)):
        out.append(Zs[b] if b in Zs else np.zeros(shape0))
    return out


@validate_params({
    "Zs": [_BLOCKS],
    "head": [Options(*HEADS)],
    "activation": [Options("linear", "gated_relu")],
    "n_tokens": [_COUNT],
    "n_features": [_COUNT],
    "n_outputs": [_COUNT],
    "gates": [None, Array(ndim=(2, 3))],
    "groups": [_COUNT],
    "rtol": [Interval(Real, 0, 1, closed="left")],
})
def recover_network(Zs: list[np.ndarray], head: str, activation: str, n_tokens: int,
                    n_features: int, n_outputs: int, gates: np.ndarray | None, groups: int = 1,
                    rtol: float = 1e-9) -> ConvexHead:
    """Equivalent non-convex head from the convex solution (one unit per singular pair)."""
    s, d, c = n_tokens, n_features, n_outputs
    layout = block_layout(head, activation, 0 if gates is None else len(gates), groups)
    shp1, shp2 = _unit_shapes(head, s, d, c, groups)
    W1s, W2s, G, masks = [], [], [], []
    smax = max((spectral_norm(Z) for Z in Zs), default=0.0)
    for Z, (g, j) in zip(Zs, layout, strict=True):
        U, sv, Vt = svd(Z)
        for r in np.flatnonzero(sv > rtol * max(smax, 1e-300)):
            w1 = (np.sqrt(sv[r]) * U[:, r]).reshape(shp1)
            w2 = (np.sqrt(sv[r]) * Vt[r]).reshape(shp2)
            mask = np.zeros(d) if head == "bfno" else np.ones(d)
            if head == "bfno":
                sl = group_slices(d, groups)[g]
                full = np.zeros((s, d))
                full[:, sl] = w1
                w1 = full
                mask[sl] = 1.0
            W1s.append(w1)
            W2s.append(w2)
            masks.append(mask)
            if gates is not None:
                gj = gates[j]
                if head == "bfno":
                    full = np.zeros((s, d))
                    full[:, group_slices(d, groups)[g]] = gj
                    gj = full
                G.append(gj)
    m = max(len(W1s), 1)
    if not W1s:  # Z = 0: one silent unit keeps the module well formed
        W1s, W2s = [np.zeros(shp1 if head != "bfno" else (s, d))], [np.zeros(shp2)]
        masks = [np.ones(d)]
        if gates is not None:
            G = [np.zeros_like(W1s[0])]
    gate_t = torch.as_tensor(np.stack(G)) if gates is not None else None
    net = ConvexHead(head, "gated_relu" if activation != "linear" else "linear", m, s, d, c,
                     gates=gate_t, group_mask=torch.as_tensor(np.stack(masks)))
    with torch.no_grad():
        net.W1.copy_(torch.as_tensor(np.stack(W1s)))
        net.W2.copy_(torch.as_tensor(np.stack(W2s)))
    return net


@validate_params({
    "cone_factors": [_BLOCKS],
    "head": [Options(*HEADS)],
    "n_tokens": [_COUNT],
    "n_features": [_COUNT],
    "n_outputs": [_COUNT],
    "n_gates": [_COUNT],
    "groups": [_COUNT],
    "rtol": [Interval(Real, 0, 1, closed="left")],
})
def recover_relu_network(cone_factors: list, head: str, n_tokens: int, n_features: int,
                         n_outputs: int, n_gates: int, groups: int = 1,
                         rtol: float = 1e-9) -> ConvexHead:
    """The ReLU head of a solved ReLU program (:mod:`attnlens.convex.relu`).

    ``cone_factors[b] = (X_b, E_b)`` with ``Z_b = X_b E_b^T``; every column ``x`` of ``X_b``
    (inside the cone ``K_b``) with signed direction ``e`` becomes one ReLU unit with first
    layer ``sqrt(||x||) x/||x||`` and second layer ``sqrt(||x||) e``: its activation pattern
    on the training data is the gate's, so its outputs there are the convex model's, and its
    weight decay ``(1/2)(||w1||^2 + ||w2||^2) = ||x||`` sums to the convex penalty.
    """
    s, d, c = n_tokens, n_features, n_outputs
    layout = block_layout(head, "relu", n_gates, groups)
    shp1, shp2 = _unit_shapes(head, s, d, c, groups)
    scale = max((float(np.linalg.norm(X, axis=0).max(initial=0.0)) for X, _ in cone_factors),
                default=0.0)
    W1s, W2s, masks = [], [], []
    for (X, E), (g, _j) in zip(cone_factors, layout, strict=True):
        norms = np.linalg.norm(X, axis=0)
        for k in np.flatnonzero(norms > rtol * max(scale, 1e-300)):
            r = np.sqrt(norms[k])
            w1 = (r * X[:, k] / norms[k]).reshape(shp1)
            mask = np.ones(d)
            if head == "bfno":
                sl = group_slices(d, groups)[g]
                full = np.zeros((s, d))
                full[:, sl] = w1
                w1 = full
                mask = np.zeros(d)
                mask[sl] = 1.0
            W1s.append(w1)
            W2s.append((r * E[:, k]).reshape(shp2))
            masks.append(mask)
    if not W1s:  # Z = 0: one silent unit keeps the module well formed
        W1s = [np.zeros(shp1 if head != "bfno" else (s, d))]
        W2s, masks = [np.zeros(shp2)], [np.ones(d)]
    net = ConvexHead(head, "relu", len(W1s), s, d, c,
                     group_mask=torch.as_tensor(np.stack(masks)))
    with torch.no_grad():
        net.W1.copy_(torch.as_tensor(np.stack(W1s)))
        net.W2.copy_(torch.as_tensor(np.stack(W2s)))
    return net
