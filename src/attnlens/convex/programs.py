r"""Build the convex program of a head on tokens: ``build_program`` and the gate sampler.

Sahiner, Ergen, Ozturkler, Pauly, Mardani, Pilanci, "Unraveling Attention via Convex Duality",
ICML 2022 (arXiv 2205.08078). Training a head with weight decay equals

.. math::  \min_{Z_1..Z_m}\ L\Big(\sum_j \mathcal{A}_j(Z_j),\, Y\Big) + \beta \sum_j \|Z_j\|_*

with the operators :math:`\mathcal{A}_j` of :mod:`attnlens.convex.operators`: one Kronecker block
for the linear self-attention and MLP-Mixer heads, the matrix-free
:class:`~attnlens.convex.gated_attention.GatedAttention` for gated self-attention, dense per-gate
blocks for the other gated heads, FNO and MLP (the gated MLP also fused), and for ``activation="relu"`` the
:class:`~attnlens.convex.relu_program.ReluProgram` (gated blocks plus one cone per gate).

Score convention (self-attention): ``score_{tu} = x_t^T W1 x_u``, i.e. ``W1 = K Q^T`` and
``score_t = x_t^T W z`` with ``z`` the query token.
"""

from __future__ import annotations

import numpy as np

from attnlens._validation import (
    Array,
    InstanceOf,
    Integral,
    Interval,
    Options,
    check_array,
    raise_invalid,
    validate_params,
    warn_ignored,
)
from attnlens.convex.gated_attention import GatedAttention
from attnlens.convex.heads import ACTIVATIONS, HEADS
from attnlens.convex.operators import (
    DenseBlock,
    KronBlock,
    MaskedGroup,
    Program,
    check_dense_size,
    circ_apply,
    circ_pool,
    group_slices,
    pattern_block,
)
from attnlens.convex.relu_program import build_relu_program


def _divisors(d: int) -> list[int]:
    return [g for g in range(1, d + 1) if d % g == 0]


def _gate_shape(head: str, s: int, d: int, groups: int) -> tuple[int, ...]:
    """Shape of one gate generator of ``head`` (see :func:`sample_gates`)."""
    return {"self_attention": (d, d), "mixer": (s, s), "fno": (s, d),
            "bfno": (s, d // groups), "mlp": (d,)}[head]


def _check_gates(gates, head: str, activation: str, s: int, d: int,
                 groups: int) -> np.ndarray | None:
    if activation == "linear":
        if gates is not None:
            warn_ignored("gates", gates, "the linear activation has no gates")
        return None
    if gates is None:
        raise_invalid("gates", f"an array of gate generators for activation={activation!r}",
                      None, "Draw them with sample_gates().", "build_program")
    return check_array(gates, "gates", shape=(None, *_gate_shape(head, s, d, groups)),
                       caller="build_program")


@validate_params({
    "head": [Options(*HEADS)],
    "n_gates": [Interval(Integral, 1, None)],
    "s": [Interval(Integral, 1, None)],
    "d": [Interval(Integral, 1, None)],
    "rng": [InstanceOf(np.random.Generator)],
    "groups": [Interval(Integral, 1, None)],
})
def sample_gates(head: str, n_gates: int, s: int, d: int, rng: np.random.Generator,
                 groups: int = 1) -> np.ndarray:
    """Random gate generators ``H_j`` (standard Gaussian), shaped for ``head``.

    self_attention: (m, d, d), gate ``1[X H_j X^T >= 0]``; mixer: (m, s, s), ``1[H_j X >= 0]``;
    fno / bfno: (m, s, d_group), ``1[circ(X_g) vec(H_j) >= 0]``; mlp: (m, d), ``1[xbar^T h_j >= 0]``.
    """
    if head == "self_attention":
        return rng.standard_normal((n_gates, d, d))
    if head == "mixer":
        return rng.standard_normal((n_gates, s, s))
    if head in ("fno", "bfno"):
        return rng.standard_normal((n_gates, s, d // groups))
    return rng.standard_normal((n_gates, d))


@validate_params({
    "X": [Array(ndim=3)],
    "head": [Options(*HEADS)],
    "activation": [Options(*ACTIVATIONS)],
    "n_outputs": [Interval(Integral, 1, None)],
    "gates": [None, Array(ndim=(2, 3))],
    "groups": [Interval(Integral, 1, None)],
})
def build_program(X: np.ndarray, head: str, activation: str, n_outputs: int,
                  gates: np.ndarray | None = None, groups: int = 1) -> Program:
    """Build the operator of ``head`` on tokens ``X`` (n, s, d) (float64, validated by caller).

    ``gates`` are the ``H_j`` from :func:`sample_gates` (needed for gated ReLU and ReLU).
    ``groups`` is the number B of channel groups of the block FNO head.
    """
    X = np.asarray(X, dtype=np.float64)
    n, s, d = X.shape
    xbar = X.mean(axis=1)  # (n, d)
    gated = activation != "linear"
    if head != "bfno" and groups != 1:
        warn_ignored("groups", groups, f"only the block FNO head has channel groups, not {head!r}")
    if head == "bfno" and d % groups:
        raise_invalid("groups", f"a divisor of the feature dimension d={d}", groups,
                      f"Pick one of {_divisors(d)}.", "build_program")
    gates = _check_gates(gates, head, activation, s, d, groups)
    if activation == "relu":
        return build_relu_program(X, head, n_outputs, gates, groups)
    blocks: list = []
    if head == "self_attention":
        if not gated:
            G = np.einsum("nta,ntb->nab", X, X, optimize=True)  # (n, d, d)
            blocks.append(KronBlock(xbar, G))
        else:  # matrix-free: tokens and gated token means, never the n x m x d^3 features
            fused = GatedAttention(X, gates)
            return Program(fused.blocks, n_outputs, head, activation,
                           {"groups": groups, "s": s, "d": d}, fused=fused)
    elif head == "mixer":
        if not gated:
            blocks.append(KronBlock(np.full((n, s), 1.0 / s), X))
        else:
            check_dense_size(n * s * s * d * len(gates), "a gated MLP-Mixer head")
            for H in gates:
                D = (np.einsum("tu,nue->nte", H, X, optimize=True) >= 0).astype(np.float64)
                blocks.append(pattern_block(X, head, D))
    elif head in ("fno", "bfno"):
        nb = groups if head == "bfno" else 1
        for sl in group_slices(d, nb):
            Xg = X[:, :, sl]
            if not gated:
                blocks.append(DenseBlock(circ_pool(Xg, np.ones((n, s))).reshape(n, -1, 1)))
            else:
                for h in gates:
                    blocks.append(pattern_block(Xg, head, (circ_apply(Xg, h) >= 0).astype(float)))
    else:  # mlp on pooled tokens
        if not gated:
            blocks.append(DenseBlock(xbar[:, :, None]))
        else:
            D = (xbar @ gates.T >= 0).astype(np.float64)  # (n, m)
            for j in range(len(gates)):
                blocks.append(pattern_block(X, head, D[:, j]))
            return Program(blocks, n_outputs, head, activation,
                           {"groups": groups, "s": s, "d": d}, fused=MaskedGroup(xbar, D))
    return Program(blocks, n_outputs, head, activation, {"groups": groups, "s": s, "d": d})
