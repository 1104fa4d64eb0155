"""SSNAL (semismooth Newton augmented Lagrangian): Jacobian, reformulation, optimum vs cvxpy/FISTA."""

import numpy as np
import pytest

from attnlens.convex import solve
from attnlens.convex._linalg import svt
from attnlens.convex.programs import build_program, sample_gates
from attnlens.convex.ssnal import least_squares_form, ssnal, svt_jacobian
from attnlens.errors import InvalidParameterError

SEED = 0
FD_STEP = 1e-6


@pytest.mark.parametrize("shape", [(9, 6), (6, 9), (7, 7), (8, 1), (1, 8)])
def test_svt_jacobian_matches_finite_differences(shape):
    rng = np.random.default_rng(SEED)
    W = rng.standard_normal(shape)
    s = np.linalg.svd(W, compute_uv=False)
    # threshold between two singular values: active and inactive ones, differentiable point
    tau = 0.5 * (s[0] + s[1]) if s.size > 1 else 0.5 * s[0]
    J = svt_jacobian(W, tau)
    for _ in range(3):
        H = rng.standard_normal(shape)
        fd = (svt(W + FD_STEP * H, tau) - svt(W - FD_STEP * H, tau)) / (2 * FD_STEP)
        np.testing.assert_allclose(J.apply(H), fd, atol=1e-7)
    # symmetric with eigenvalues in [0, 1]: <J H1, H2> = <H1, J H2>, 0 <= <J H, H> <= ||H||^2
    H1, H2 = rng.standard_normal(shape), rng.standard_normal(shape)
    assert abs(np.vdot(J.apply(H1), H2) - np.vdot(H1, J.apply(H2))) <= 1e-10
    q = np.vdot(J.apply(H1), H1)
    assert -1e-12 <= q <= np.vdot(H1, H1) + 1e-12


def _data(n=80, s=5, d=3, c=3, seed=SEED):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, s, d))
    return X, np.eye(c)[rng.integers(0, c, n)], rng


@pytest.mark.parametrize("head,activation", [("self_attention", "linear"),
                                             ("mixer", "linear"),
                                             ("self_attention", "gated_relu")])
def test_least_squares_form_equals_the_loss(head, activation):
    X, Y, rng = _data()
    gates = sample_gates(head, 2, 5, 3, rng) if activation != "linear" else None
    prog = build_program(X, head, activation, 3, gates=gates)
    ls = least_squares_form(prog, Y)
    Zs = [rng.standard_normal(s) for s in prog.zshapes()]
    direct = np.sum((prog.forward(Zs) - Y) ** 2)
    assert np.sum((ls.forward(Zs) - ls.b) ** 2) + ls.const == pytest.approx(direct, rel=1e-10)
    xi = rng.standard_normal(ls.b.shape)  # adjoint: <B Z, xi> = <Z, B^* xi>
    lhs = np.vdot(ls.forward(Zs), xi)
    rhs = sum(np.vdot(Z, G) for Z, G in zip(Zs, ls.adjoint(xi), strict=True))
    assert lhs == pytest.approx(rhs, rel=1e-10)
    if head == "self_attention" and activation == "linear":
        assert ls.kind == "gram-eigenbasis"


@pytest.mark.parametrize("head,activation,beta", [("self_attention", "linear", 0.02),
                                                  ("self_attention", "linear", 0.002),
                                                  ("mixer", "linear", 0.02),
                                                  ("self_attention", "gated_relu", 0.02)])
def test_ssnal_matches_cvxpy_and_fista(head, activation, beta):
    X, Y, rng = _data()
    gates = sample_gates(head, 2, 5, 3, rng) if activation != "linear" else None
    prog = build_program(X, head, activation, 3, gates=gates)
    ref = solve(prog, Y, beta, "squared", solver="cvxpy", tol=1e-4)
    fista = solve(prog, Y, beta, "squared", solver="fista", tol=1e-8, max_iter=50000)
    loose = solve(prog, Y, beta, "squared", solver="fista", tol=1e-2, warn=False)
    runs = [ssnal(prog, Y, beta, "squared", tol=1e-8),  # from Z = 0
            ssnal(prog, Y, beta, "squared", tol=1e-8, Z0=loose.Z),  # warm start
            solve(prog, Y, beta, "squared", solver="ssnal", tol=1e-8),
            solve(prog, Y, beta, "squared", solver="auto", tol=1e-8)]
    for res in runs:
        assert res.certificate <= 1e-8
        assert res.dual_objective <= res.objective + 1e-12
        assert abs(res.objective - fista.objective) <= 1e-7 * fista.objective
        assert abs(res.objective - ref.objective) <= 1e-5 * ref.objective
    assert runs[2].method == "ssnal"
    # "auto" picks SSNAL on one Kronecker block with a Gram at beta < beta_max / 30
    bmax = np.linalg.norm(prog.adjoint(-Y / len(Y))[0], 2)
    assert (runs[3].method == "ssnal") == (prog.has_normal() and beta < bmax / 30)


def test_ssnal_refuses_cross_entropy():
    X, Y, _ = _data()
    prog = build_program(X, "self_attention", "linear", 3)
    with pytest.raises(InvalidParameterError, match="loss"):
        solve(prog, Y, 0.02, "cross_entropy", solver="ssnal")
