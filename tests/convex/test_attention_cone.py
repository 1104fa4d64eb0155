"""The matrix-free self-attention cone against the dense constraint matrix it replaces."""

import numpy as np
import pytest

from attnlens.convex import cones as cones_mod
from attnlens.convex.cones import ConeBlock, attention_cones, pre_activation_rows
from attnlens.convex.operators import pattern_block
from attnlens.convex.programs import build_program, sample_gates
from attnlens.convex.relu import solve_relu
from attnlens.convex.relu_program import ReluProgram, make_feasible


def _case(n=9, s=4, d=3, m=3, seed=3):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, s, d))
    X[2, 1] = 0.0  # a padding token: its rows are dropped (dense) / zero (matrix-free)
    y = (X[:, :, 0].mean(axis=1) > 0).astype(int)
    gates = sample_gates("self_attention", m, s, d, rng)
    return X, np.eye(2)[y], gates, rng


def _dense_cones(X, gates):
    """The reference: explicit unit rows, zero rows dropped (the pre-matrix-free code path)."""
    M = pre_activation_rows(X, "self_attention")  # (n s s, d^2)
    norms = np.linalg.norm(M, axis=1)
    keep = norms > 0
    Mn = M[keep] / norms[keep, None]
    out = []
    for H in gates:
        D = (M @ H.ravel() >= 0).astype(float)
        out.append(ConeBlock(Mn, (2 * D - 1)[keep], H.ravel()))
    return out, keep


def test_attention_cone_products_and_projection_match_dense_rows():
    X, _, gates, rng = _case()
    free, patterns = attention_cones(X, gates)
    dense, keep = _dense_cones(X, gates)
    W = rng.standard_normal((9, 5))
    for fc, dc, D in zip(free, dense, patterns, strict=True):
        np.testing.assert_array_equal(2 * D - 1, fc.signs)
        np.testing.assert_array_equal(fc.signs[keep], dc.signs)
        V = fc.apply(W)
        np.testing.assert_allclose(V[keep], dc.apply(W), rtol=1e-12, atol=1e-12)
        assert np.all(V[~keep] == 0.0)
        np.testing.assert_allclose(fc.dense()[keep], dc.dense(), rtol=1e-12, atol=1e-12)
        L = rng.standard_normal((len(fc.signs), 4))
        np.testing.assert_allclose(fc.adjoint(L), dc.adjoint(L[keep]), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(fc.rows(np.flatnonzero(keep)), dc.M, rtol=1e-12, atol=1e-15)
        P_free, _ = fc.project(W)
        P_dense, _ = dc.project(W)
        np.testing.assert_allclose(P_free, P_dense, rtol=1e-9, atol=1e-10)
        assert fc.min_values(P_free).min() >= -1e-10  # the projection is feasible


def test_attention_cone_chunked_products_equal_whole(monkeypatch):
    X, Y, gates, rng = _case()
    prog = build_program(X, "self_attention", "relu", 2, gates=gates)
    Xs = [rng.standard_normal((c.p, 6)) for c in prog.cones]
    whole_min = [c.min_values(x) for c, x in zip(prog.cones, Xs, strict=True)]
    whole = make_feasible(prog, Xs)
    monkeypatch.setattr(cones_mod, "CHUNK_ELEMENTS", 1)  # one column per chunk
    assert len(prog.cones[0].column_chunks(6)) == 6
    for c, x, ref in zip(prog.cones, Xs, whole_min, strict=True):
        np.testing.assert_array_equal(c.min_values(x), ref)
    chunked = make_feasible(prog, Xs)
    for a, b in zip(whole[0], chunked[0], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-13)
    assert whole[2] == chunked[2]
    for c, x in zip(prog.cones, chunked[0], strict=True):
        assert c.min_values(x).min() >= -1e-12  # repaired into the cone


@pytest.mark.parametrize("c", [1, 2])
def test_matrix_free_relu_program_has_the_dense_program_optimum(c):
    """Same sampled patterns, same dictionary: the matrix-free program (gated blocks and
    cones without dense features) and the dense one (per-gate features, explicit rows) solve
    to the same objective and the same network outputs."""
    X, Y, gates, _ = _case(n=16)
    Y = Y[:, :c]
    free = build_program(X, "self_attention", "relu", c, gates=gates)
    dense_cones, _ = _dense_cones(X, gates)
    _, patterns = attention_cones(X, gates)
    blocks = [pattern_block(X, "self_attention", D.reshape(X.shape[0], 4, 4))
              for D in patterns]
    dense = ReluProgram(blocks, c, "self_attention", "relu", dict(free.meta), cones=dense_cones)
    assert free.fused is not None and dense.fused is None
    beta = 1e-2
    a = solve_relu(free, Y, beta, "squared", tol=1e-6, rng=np.random.default_rng(0))
    b = solve_relu(dense, Y, beta, "squared", tol=1e-6, rng=np.random.default_rng(0))
    assert a.certificate <= 1e-6 and b.certificate <= 1e-6
    np.testing.assert_allclose(a.objective, b.objective, rtol=2e-6)  # both within 1e-6
    np.testing.assert_allclose(a.lower_bound, b.lower_bound, rtol=1e-5)
    np.testing.assert_allclose(free.forward(a.Z), dense.forward(b.Z), atol=1e-3)


def _cvxpy_projection(C, z):
    import cvxpy as cp

    x = cp.Variable(len(z))
    cp.Problem(cp.Minimize(cp.sum_squares(x - z)), [C @ x >= 0]).solve(
        solver=cp.CLARABEL, tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
    return x.value


def test_cone_projection_equals_cvxpy_projection():
    """Every column (cold, then warm-started from the active sets) against Clarabel's QP."""
    pytest.importorskip("cvxpy")
    X, _, gates, rng = _case(n=12, s=4, d=3)
    cone = attention_cones(X, gates)[0][1]
    C = cone.dense()  # (N, 9)
    h = cone.interior / np.linalg.norm(cone.interior)
    Z = np.hstack([rng.standard_normal((9, 4)),  # mostly far outside: projections near 0
                   3.0 * h[:, None] + 0.5 * rng.standard_normal((9, 4))])  # near the cone
    P, active = cone.project(Z)
    Z2 = Z + 1e-2 * rng.standard_normal(Z.shape)
    P2, _ = cone.project(Z2, active)
    for Zc, Pc in ((Z, P), (Z2, P2)):
        for k in range(Z.shape[1]):
            np.testing.assert_allclose(Pc[:, k], _cvxpy_projection(C, Zc[:, k]), atol=1e-6)
        assert cone.min_values(Pc).min() >= -1e-10
    assert np.linalg.norm(P[:, 4:], axis=0).min() > 0.1  # some projections are not the apex


def test_make_feasible_leaves_zero_columns_and_repairs_the_others_alone():
    """Zero columns are skipped (they are feasible): the others are repaired as they would be
    without the zero columns beside them, and the violation is the same."""
    X, Y, gates, rng = _case()
    prog = build_program(X, "self_attention", "relu", 2, gates=gates)
    Xs = [rng.standard_normal((c.p, 6)) for c in prog.cones]
    for x in Xs:
        x[:, [1, 4]] = 0.0
    out, worst, ok = make_feasible(prog, Xs)
    alone, worst_alone, ok_alone = make_feasible(prog, [x[:, [0, 2, 3, 5]] for x in Xs])
    assert worst == worst_alone > 0 and ok == ok_alone
    for full, part, c in zip(out, alone, prog.cones, strict=True):
        assert not full[:, [1, 4]].any()
        np.testing.assert_array_equal(full[:, [0, 2, 3, 5]], part)
        assert c.min_values(full).min() >= -1e-12
