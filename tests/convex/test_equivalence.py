"""Non-convex heads == convex operator applied to the Z built from their weights."""

import numpy as np
import pytest
import torch

from attnlens.convex.heads import ConvexHead
from attnlens.convex.programs import build_program, group_slices, sample_gates
from attnlens.convex.recover import network_to_blocks

HEADS = ["self_attention", "mixer", "fno", "bfno", "mlp"]


def _net_with_gates(head, activation, n_gates, s, d, c, groups, rng):
    gates = sample_gates(head, n_gates, s, d, rng, groups) if activation != "linear" else None
    m = 2 * max(n_gates, groups)  # two units per gate/group
    gate_index = np.arange(m) % n_gates
    group_index = (np.arange(m) // n_gates) % groups if head == "bfno" else np.zeros(m, int)
    mask = torch.ones(m, d, dtype=torch.float64)
    g_t = None
    if head == "bfno":
        mask.zero_()
        for k in range(m):
            mask[k, group_slices(d, groups)[group_index[k]]] = 1.0
    if gates is not None:
        G = gates[gate_index]
        if head == "bfno":
            full = np.zeros((m, s, d))
            for k in range(m):
                full[k][:, group_slices(d, groups)[group_index[k]]] = G[k]
            G = full
        g_t = torch.as_tensor(G)
    net = ConvexHead(head, activation, m, s, d, c, gates=g_t, group_mask=mask,
                     generator=torch.Generator().manual_seed(1), init_scale=1.0)
    return net, gates, gate_index, group_index


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("activation", ["linear", "gated_relu"])
def test_network_equals_convex_operator(head, activation):
    rng = np.random.default_rng(0)
    n, s, d, c, n_gates = 7, 5, 4, 3, 3
    groups = 2 if head == "bfno" else 1
    X = rng.standard_normal((n, s, d))
    net, gates, gi, gri = _net_with_gates(head, activation, n_gates, s, d, c, groups, rng)
    with torch.no_grad():
        out_net = net(torch.as_tensor(X)).numpy()
    prog = build_program(X, head, activation, c, gates=gates, groups=groups)
    Zs = network_to_blocks(net, gi, gri, n_gates, groups)
    out_cvx = prog.forward(Zs)
    np.testing.assert_allclose(out_cvx, out_net, rtol=1e-10, atol=1e-10)
    assert np.abs(out_net).max() > 1e-3  # non-trivial outputs


def test_kron_operator_matches_dense_design_and_adjoint():
    from attnlens.convex._reference import dense_design

    rng = np.random.default_rng(1)
    X = rng.standard_normal((9, 6, 3))
    prog = build_program(X, "self_attention", "linear", 2)
    b = prog.blocks[0]
    Phi = dense_design(b)  # explicit (n, d^3), built independently of forward()
    Z = rng.standard_normal(b.zshape(2))
    np.testing.assert_allclose(b.forward(Z, 2), Phi @ Z.reshape(-1, 2), rtol=1e-12)
    R = rng.standard_normal((9, 2))
    lhs = np.sum(b.forward(Z, 2) * R)
    rhs = np.sum(Z * b.adjoint(R))
    assert abs(lhs - rhs) < 1e-10 * abs(lhs)
    U, V = rng.standard_normal((9, 4)), rng.standard_normal((6, 4))
    out, Q = b.forward_factored(U, V, 2)
    np.testing.assert_allclose(out, b.forward(U @ V.T, 2), rtol=1e-11)
    gU, gV = b.grads_factored(R, U, V, Q, 2)
    G = b.adjoint(R)
    np.testing.assert_allclose(gU, G @ V, rtol=1e-11)
    np.testing.assert_allclose(gV, G.T @ U, rtol=1e-11)


@pytest.mark.parametrize("head", ["self_attention", "mixer"])
def test_kron_gram_normal_matches_dense_design(head):
    """``A^* A Z`` through the Gram of the reduced features (symmetric pairs summed for
    self-attention) equals ``Phi^T Phi vec(Z)`` with the explicit design."""
    from attnlens.convex._reference import dense_design

    rng = np.random.default_rng(2)
    X = rng.standard_normal((40, 5, 3))
    prog = build_program(X, head, "linear", 2)
    b = prog.blocks[0]
    Phi = dense_design(b)  # (n, p q), independent of the Gram
    Z = rng.standard_normal(b.zshape(2))
    ref = (Phi.T @ (Phi @ Z.reshape(-1, 2))).reshape(Z.shape)
    np.testing.assert_allclose(b.normal(Z, 2), ref, rtol=1e-11, atol=1e-11 * np.abs(ref).max())
    assert prog.has_normal() == (b.gram_size() <= 40)
