"""Fast solvers vs the cvxpy reference; certificates; warnings."""

import warnings

import numpy as np
import pytest

from attnlens.convex import certify, solve
from attnlens.convex.nuclear import fista_path
from attnlens.convex.programs import build_program, sample_gates
from attnlens.errors import ConvergenceWarning


def _data(n=80, s=5, d=3, c=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, s, d))
    y = rng.integers(0, c, n)
    return X, np.eye(c)[y], rng


CASES = [("self_attention", "linear", "squared"), ("self_attention", "gated_relu", "squared"),
         ("self_attention", "linear", "cross_entropy"), ("mixer", "gated_relu", "squared"),
         ("fno", "gated_relu", "cross_entropy"), ("bfno", "linear", "squared"),
         ("mlp", "gated_relu", "squared")]


@pytest.mark.parametrize("head,activation,loss", CASES)
def test_fast_solvers_match_cvxpy(head, activation, loss):
    X, Y, rng = _data()
    groups = 3 if head == "bfno" else 1
    if head == "bfno":
        X = np.concatenate([X, X[:, :, :3] ** 2], axis=2)  # d = 6, 3 groups of 2
        groups = 3
    gates = (sample_gates(head, 2, X.shape[1], X.shape[2], rng, groups)
             if activation != "linear" else None)
    prog = build_program(X, head, activation, Y.shape[1], gates=gates, groups=groups)
    beta = 0.02
    ref = solve(prog, Y, beta, loss, solver="cvxpy", tol=1e-4)
    for solver in ("auto", "fista", "bm"):
        res = solve(prog, Y, beta, loss, solver=solver, tol=1e-7, max_iter=20000)
        assert res.certificate <= 1e-7
        assert abs(res.objective - ref.objective) <= 1e-5 * abs(ref.objective)
        # the certificate is an honest bound: gap >= 0 and dual <= primal
        assert res.dual_objective <= res.objective + 1e-12
        assert res.grad_ratio <= 1 + 1e-3


def test_certificate_detects_suboptimal_point():
    X, Y, rng = _data()
    prog = build_program(X, "self_attention", "linear", 3)
    Z = [rng.standard_normal(s) for s in prog.zshapes()]
    _, _, cert, ratio = certify(prog, Z, Y, 0.02, "squared")
    assert cert > 1e-2


def test_non_convergence_warns_with_certificate():
    X, Y, _ = _data()
    prog = build_program(X, "self_attention", "linear", 3)
    with pytest.warns(ConvergenceWarning, match="certificate"):
        res = solve(prog, Y, 1e-3, "squared", solver="fista", tol=1e-12, max_iter=3)
    assert res.status == "max_iter"


def test_unknown_solver_raises():
    X, Y, _ = _data()
    prog = build_program(X, "mlp", "linear", 3)
    with pytest.raises(ValueError, match="solver"):
        with warnings.catch_warnings():
            solve(prog, Y, 0.1, "squared", solver="newton")


def test_large_block_svt_and_spectral_norm_match_lapack():
    from attnlens.convex._linalg import GRAM_SVT_MIN, spectral_norm, svt

    rng = np.random.default_rng(3)
    Z = rng.standard_normal((300, GRAM_SVT_MIN + 2)) @ np.diag(np.linspace(0.01, 3, 130))
    U, sv, Vt = np.linalg.svd(Z, full_matrices=False)
    tau = float(np.median(sv))
    ref = (U * np.maximum(sv - tau, 0)) @ Vt
    np.testing.assert_allclose(svt(Z, tau), ref, atol=1e-10 * sv[0])
    np.testing.assert_allclose(svt(Z.T, tau), ref.T, atol=1e-10 * sv[0])
    assert sv[0] <= spectral_norm(Z) <= sv[0] * (1 + 1e-10)


def test_mid_block_gram_svt_matches_lapack_on_a_wide_spectrum():
    """The (2000,16,12,10) self-attention block shape (144 x 120), singular values spread over
    seven decades and a small threshold: the Gram route equals LAPACK's SVD thresholding."""
    from attnlens.convex._linalg import SVT_GRAM_MIN, svt

    rng = np.random.default_rng(4)
    Q1, _ = np.linalg.qr(rng.standard_normal((144, 120)))
    Q2, _ = np.linalg.qr(rng.standard_normal((120, 120)))
    sv = np.logspace(-6, 1, 120)[::-1]
    Z = (Q1 * sv) @ Q2.T
    assert min(Z.shape) >= SVT_GRAM_MIN
    for tau in (1e-4, 1e-1):
        U, s, Vt = np.linalg.svd(Z, full_matrices=False)
        ref = (U * np.maximum(s - tau, 0)) @ Vt
        np.testing.assert_allclose(svt(Z, tau), ref, atol=1e-11 * sv[0])
        np.testing.assert_allclose(svt(Z.T, tau), ref.T, atol=1e-11 * sv[0])


def test_float32_products_and_fused_gated_mlp_match_reference():
    X, Y, rng = _data(n=50, s=6, d=4)
    prog = build_program(X, "self_attention", "linear", 3)
    b = prog.blocks[0]
    assert b.symmetric  # G_i = X_i^T X_i: half-size products
    Z = rng.standard_normal(b.zshape(3))
    R = rng.standard_normal((50, 3))
    ref_f, ref_a = b.forward(Z, 3), b.adjoint(R)
    np.testing.assert_allclose(b.forward(Z, 3, single=True), ref_f,
                               atol=1e-5 * np.abs(ref_f).max())
    np.testing.assert_allclose(b.adjoint(R, single=True), ref_a,
                               atol=1e-5 * np.abs(ref_a).max())
    # the gated MLP's fused operator equals the per-gate blocks
    gates = sample_gates("mlp", 7, 6, 4, rng)
    mlp = build_program(X, "mlp", "gated_relu", 3, gates=gates)
    assert mlp.fused is not None
    Zs = [rng.standard_normal(s) for s in mlp.zshapes()]
    blockwise = sum(bl.forward(z, 3) for bl, z in zip(mlp.blocks, Zs, strict=True))
    np.testing.assert_allclose(mlp.forward(Zs), blockwise, rtol=1e-12, atol=1e-12)
    for g_fused, bl in zip(mlp.adjoint(R), mlp.blocks, strict=True):
        np.testing.assert_allclose(g_fused, bl.adjoint(R), rtol=1e-12, atol=1e-12)


def test_continuation_path_is_used_at_small_beta_and_certifies():
    X, Y, _ = _data(n=120, s=5, d=3)
    prog = build_program(X, "self_attention", "linear", 3)
    # "auto" runs SSNAL on this squared-loss Kronecker program; the path serves the others
    res = fista_path(prog, Y, 1e-3, "squared", tol=1e-6, max_iter=20000)
    ref = solve(prog, Y, 1e-3, "squared", solver="fista", tol=1e-8, max_iter=50000)
    assert res.method == "fista-path"
    assert res.certificate <= 1e-6
    assert abs(res.objective - ref.objective) <= 2e-6 * ref.objective
