"""The ReLU program: cone constraints, exactness of the map back, bounds, references."""

import dataclasses

import numpy as np
import pytest
import torch

from attnlens.convex import ConvexAttentionClassifier, _pyscnn
from attnlens.convex.cones import build_cones
from attnlens.convex.heads import ConvexHead
from attnlens.convex.programs import build_program, sample_gates
from attnlens.convex.relu import default_directions
from attnlens.convex.relu_program import ReluProgram, certify_relu
from attnlens.convex.solvers import solve


def _tokens(n=40, s=4, d=3, c=2, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    X = rng.standard_normal((n, s, d))
    X[:, :, 0] += 0.7 * y[:, None]
    return X, y, np.eye(c)[y], rng


@pytest.mark.parametrize("head", ["self_attention", "mixer", "fno", "mlp"])
def test_cone_rows_reproduce_gate_pre_activations(head):
    """M h equals the head's own pre-activation of a unit whose first layer is h."""
    X, _, _, rng = _tokens(n=6, s=4, d=3)
    gates = sample_gates(head, 2, 4, 3, rng)
    cones, patterns = build_cones(X, head, gates)
    h = gates[0]
    W2 = torch.ones((1, 3, 1) if head in ("self_attention", "mixer") else (1, 1),
                    dtype=torch.float64)
    net = ConvexHead(head, "relu", 1, 4, 3, 1)
    with torch.no_grad():
        net.W1.copy_(torch.as_tensor(h[None]))
        net.W2.copy_(W2)
    # the pattern is 1 exactly where the ReLU unit with weight h is active
    Xt = torch.as_tensor(X)
    if head == "self_attention":
        pre = torch.einsum("nta,ae,nue->ntu", Xt, torch.as_tensor(h), Xt).numpy().ravel()
    elif head == "mixer":
        pre = torch.einsum("tu,nue->nte", torch.as_tensor(h), Xt).numpy().ravel()
    elif head == "fno":
        from attnlens.convex.heads import circ

        pre = circ(Xt, torch.as_tensor(h[None]))[:, 0].numpy().ravel()
    else:
        pre = (Xt.mean(1) @ torch.as_tensor(h)).numpy()
    np.testing.assert_array_equal(patterns[0], (pre >= 0).astype(float))
    # h lies in its own cone, strictly where its pre-activation is non-zero
    assert cones[0].apply(h.reshape(-1, 1)).min() > 0


def _relu_net_in_cones(head, X, gates, c, rng):
    """A ReLU network whose unit k has first layer a positive multiple of gate k's generator."""
    m = len(gates)
    s, d = X.shape[1:]
    W1 = np.stack([rng.uniform(0.5, 2.0) * g for g in gates])
    shp2 = {"self_attention": (m, d, c), "mixer": (m, d, c)}.get(head, (m, c))
    net = ConvexHead(head, "relu", m, s, d, c)
    with torch.no_grad():
        net.W1.copy_(torch.as_tensor(W1))
        net.W2.copy_(torch.as_tensor(rng.standard_normal(shp2)))
    return net


@pytest.mark.parametrize("head", ["self_attention", "mixer", "fno", "mlp"])
def test_relu_network_equals_program_inside_cones(head):
    X, _, _, rng = _tokens(n=7, s=5, d=4)
    c = 3
    gates = sample_gates(head, 3, 5, 4, rng)
    net = _relu_net_in_cones(head, X, gates, c, rng)
    prog = build_program(X, head, "relu", c, gates=gates)
    assert isinstance(prog, ReluProgram) and prog.activation == "relu"
    W1 = net.W1.detach().numpy()
    W2 = net.W2.detach().numpy()
    Zs = [np.outer(W1[k].ravel(), W2[k].ravel()) for k in range(len(gates))]
    with torch.no_grad():
        out = net(torch.as_tensor(X)).numpy()
    np.testing.assert_allclose(prog.forward(Zs), out, rtol=1e-10, atol=1e-12)
    assert np.abs(out).max() > 1e-3


CASES = [("self_attention", 2), ("mixer", 2), ("fno", 2), ("bfno", 2), ("mlp", 3)]


@pytest.mark.parametrize("head,c", CASES)
def test_relu_fast_solver_matches_cvxpy(head, c):
    d = 3 if head == "self_attention" else 4
    X, _, Y, rng = _tokens(n=30, s=4, d=d, c=c)
    groups = 2 if head == "bfno" else 1
    gates = sample_gates(head, 2, 4, d, rng, groups)
    prog = build_program(X, head, "relu", c, gates=gates, groups=groups)
    beta = 0.03
    relax = solve(prog.as_gated(), Y, beta, "squared", tol=1e-9, max_iter=20000)
    prog = dataclasses.replace(prog, directions=default_directions(prog, relax.Z))
    res = solve(prog, Y, beta, "squared", tol=1e-7, max_iter=20000)
    ref = solve(prog, Y, beta, "squared", solver="cvxpy", tol=1e-3)
    assert res.certificate <= 1e-7
    # both are feasible points of the same program: ours is certified within 1e-7, so the
    # reference can only be above it; they agree to the reference's own accuracy
    assert ref.objective >= res.objective * (1 - 1e-7)
    assert abs(res.objective - ref.objective) <= max(1e-5, 2 * ref.certificate) * ref.objective
    assert res.dual_objective <= ref.objective
    # bounds: gated relaxation <= ReLU program
    assert res.lower_bound <= res.objective
    assert relax.objective <= res.objective * (1 + 1e-7)


@pytest.mark.parametrize("head", ["self_attention", "mixer", "fno", "bfno", "mlp"])
def test_relu_to_network_is_a_relu_net_with_the_convex_outputs(head):
    X, y, Y, _ = _tokens(n=30, s=4, d=3 if head == "self_attention" else 4, c=3)
    beta = 0.05
    groups = {"n_groups": 2} if head == "bfno" else {}
    clf = ConvexAttentionClassifier(head=head, activation="relu", beta=beta, n_gates=2,
                                    tol=1e-7, max_iter=20000, random_state=0,
                                    **groups).fit(X, y)
    net = clf.to_network()
    assert net.activation == "relu" and net.gates is None
    with torch.no_grad():
        out = net(torch.as_tensor(X)).numpy()
        pen = float(net.penalty())
    # on the training data the ReLU network's outputs are the convex model's (fixed patterns)
    convex_out = clf._program(X).forward(clf.Z_)
    np.testing.assert_allclose(out, convex_out, rtol=1e-9, atol=1e-11)
    obj = 0.5 * np.sum((out - Y) ** 2) / len(y) + beta * pen
    assert abs(obj - clf.objective_) <= 1e-10 * clf.objective_
    assert clf.certificate_ <= 1e-7
    assert clf.lower_bound_ <= clf.objective_
    assert np.abs(out).max() > 1e-3  # not the trivial Z = 0
    np.testing.assert_allclose(clf.decision_function(X), out, rtol=1e-12, atol=1e-14)


def test_relu_certificate_detects_suboptimal_feasible_point():
    X, _, Y, rng = _tokens()
    gates = sample_gates("mixer", 2, 4, 3, rng)
    prog = build_program(X, "mixer", "relu", 2, gates=gates)
    Xs = [0.3 * np.tile(c.interior[:, None], (1, E.shape[1]))
          for c, E in zip(prog.cones, prog.signed_directions(), strict=True)]
    cert = certify_relu(prog, Xs, Y, 0.02, "squared")
    assert cert.violation == 0.0  # generators are feasible
    assert cert.certificate > 1e-2
    assert cert.dual <= cert.primal


def test_relu_rejects_solvers_that_ignore_cones():
    X, y, Y, rng = _tokens()
    with pytest.raises(ValueError, match="cone"):
        ConvexAttentionClassifier(activation="relu", solver="bm", n_gates=1).fit(X, y)
    prog = build_program(X, "mlp", "relu", 2, gates=sample_gates("mlp", 2, 4, 3, rng))
    with pytest.raises(ValueError, match="solver"):
        solve(prog, Y, 0.1, "squared", solver="newton")


@pytest.mark.skipif(not _pyscnn.available(), reason="pyscnn not importable: pip install "
                    "--no-deps pyscnn==0.0.10 linalg-backends==0.0.1b0 opt-einsum==3.4.0")
def test_relu_mlp_single_output_matches_pyscnn_and_cvxpy():
    """One output: the dictionary {+1, -1} is complete -- the exact Pilanci-Ergen program."""
    rng = np.random.default_rng(0)
    n, d, m, beta = 60, 4, 4, 2e-2
    X = rng.standard_normal((n, d))
    y = np.sign(X @ rng.standard_normal(d) + 0.3 * rng.standard_normal(n))
    H = rng.standard_normal((m, d))
    prog = build_program(X[:, None, :], "mlp", "relu", 1, gates=H)
    res = solve(prog, y[:, None], beta, "squared", tol=1e-9, max_iter=20000)
    ref = solve(prog, y[:, None], beta, "squared", solver="cvxpy", tol=1e-3)
    assert res.certificate <= 1e-9
    assert abs(res.objective - ref.objective) <= 1e-6 * ref.objective
    obj_scnn, viol, _ = _pyscnn.solve_relu(X, y, H, beta, tol=1e-6, constraint_tol=1e-6)
    # pyscnn's augmented Lagrangian stops slightly infeasible (viol ~1e-3 here), so its
    # objective is close to, but not a bound on, the certified optimum
    assert viol < 1e-2
    assert abs(obj_scnn - res.objective) <= 1e-3 * res.objective
