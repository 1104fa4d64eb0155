"""The matrix-free gated self-attention operator vs the dense per-gate features (issue 16.2)."""

import numpy as np
import pytest

from attnlens.convex import solve
from attnlens.convex.gated_attention import low_rank
from attnlens.convex.operators import Program, pattern_block
from attnlens.convex.programs import build_program, sample_gates


def _data(n=40, s=6, d=4, c=3, m=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, s, d))
    X[: n // 4, s - 2:] = 0.0  # padded sentences: all-zero tokens at the end
    gates = sample_gates("self_attention", m, s, d, rng)
    return X, gates, rng


def _dense(X, gates, c):
    """The previous operator: one materialized (n, d^2, d) tensor per gate (pattern_block)."""
    blocks = []
    for H in gates:
        S = np.einsum("nta,ab,nub->ntu", X, H, X)  # (n, s, s) scores x_t^T H x_u
        blocks.append(pattern_block(X, "self_attention", (S >= 0).astype(np.float64)))
    return Program(blocks, c, "self_attention", "gated_relu")


@pytest.mark.parametrize("path", ["features", "tokens"])
def test_matrix_free_products_equal_dense_features_and_are_adjoint(path, monkeypatch):
    """Both product paths: the cached per-sample features, and the token products used when
    the features do not fit their budget (set to 0 bytes here)."""
    import attnlens.convex.gated_attention as ga

    if path == "tokens":
        monkeypatch.setattr(ga, "FEATURE_CACHE_BYTES", 0)
    X, gates, rng = _data()
    c = 3
    prog = build_program(X, "self_attention", "gated_relu", c, gates=gates)
    dense = _dense(X, gates, c)
    assert prog.zshapes() == dense.zshapes()
    Zs = [rng.standard_normal(sh) for sh in prog.zshapes()]
    R = rng.standard_normal((len(X), c))
    ref_f = dense.forward(Zs)
    np.testing.assert_allclose(prog.forward(Zs), ref_f, rtol=1e-12, atol=1e-12 * abs(ref_f).max())
    for got, ref in zip(prog.adjoint(R), dense.adjoint(R), strict=True):
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12 * abs(ref).max())
    # float32 products (float64 accumulation) to float32 tolerance
    np.testing.assert_allclose(prog.forward(Zs, single=True), ref_f, atol=1e-5 * abs(ref_f).max())
    for got, ref in zip(prog.adjoint(R, single=True), dense.adjoint(R), strict=True):
        np.testing.assert_allclose(got, ref, atol=1e-5 * abs(ref).max())
    # <A x, y> = <x, A^T y> on the flat vectors the solvers use
    x = prog.flatten(Zs)
    lhs = float(np.sum(prog.forward_flat(x) * R))
    rhs = float(np.dot(x, prog.adjoint_flat(R)))
    assert abs(lhs - rhs) <= 1e-11 * abs(lhs)
    # a low-rank point (what the iterates are) gives the same products as its dense matrix
    Zlow = [rng.standard_normal((sh[0], 2)) @ rng.standard_normal((2, sh[1])) for sh in
            prog.zshapes()]
    # (the token path applies it through its factors; the features path has no such branch)
    assert [low_rank(Z)[0].shape[1] for Z in Zlow] == [2] * len(Zlow)
    assert low_rank(Zs[0])[0].shape[1] == min(Zs[0].shape)  # full rank: the dense product
    np.testing.assert_allclose(prog.forward(Zlow), dense.forward(Zlow), rtol=1e-11,
                               atol=1e-11 * abs(dense.forward(Zlow)).max())
    np.testing.assert_allclose(prog.forward(Zlow, single=True), dense.forward(Zlow),
                               atol=1e-5 * abs(dense.forward(Zlow)).max())
    # per-gate views (cvxpy reference, Burer-Monteiro) and sample subsets
    for j, (blk, ref) in enumerate(zip(prog.blocks, dense.blocks, strict=True)):
        np.testing.assert_allclose(blk.phi, ref.phi, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(blk.forward(Zs[j], c), ref.forward(Zs[j], c), rtol=1e-11,
                                   atol=1e-12 * abs(ref_f).max())
    idx = np.array([5, 0, 39, 5, 12])
    np.testing.assert_allclose(prog.take(idx).forward(Zs), ref_f[idx], rtol=1e-12,
                               atol=1e-12 * abs(ref_f).max())
    cached = {k: v is not None for k, v in prog.fused._F.items()}
    assert cached == ({"float64": True, "float32": True} if path == "features" else
                      {"float64": False, "float32": False})


@pytest.mark.parametrize("loss", ["squared", "cross_entropy"])
def test_matrix_free_program_has_the_dense_optimum(loss):
    X, gates, _ = _data(n=60, s=5, d=3, m=3)
    rng = np.random.default_rng(1)
    Y = np.eye(2)[rng.integers(0, 2, len(X))]
    beta, tol = 0.01, 1e-7
    free = solve(build_program(X, "self_attention", "gated_relu", 2, gates=gates), Y, beta,
                 loss, tol=tol, max_iter=20000)
    ref = solve(_dense(X, gates, 2), Y, beta, loss, tol=tol, max_iter=20000)
    assert free.certificate <= tol and ref.certificate <= tol
    assert abs(free.objective - ref.objective) <= 2 * tol * ref.objective
    dense = _dense(X, gates, 2)
    pf, pr = dense.forward(free.Z), dense.forward(ref.Z)  # both optima through one operator
    np.testing.assert_allclose(pf, pr, atol=1e-2 * abs(pr).max())
    assert np.mean(pf.argmax(1) == pr.argmax(1)) >= 0.95  # same predictions (ties aside)


def test_token_cache_filled_in_chunks_equals_dense_features(monkeypatch):
    """The (T, P) token products are filled chunk by chunk (memory peak, issue 16.2): with
    chunks of 64 tokens (many chunks) the cached float64 products still give the dense
    operator's outputs."""
    import attnlens.convex.gated_attention as ga

    monkeypatch.setattr(ga, "CHUNK_ELEMENTS", 1)  # _chunk() floors at 64 tokens per chunk
    monkeypatch.setattr(ga, "FEATURE_CACHE_BYTES", 0)  # the token path
    X, gates, rng = _data(n=60)
    c = 2
    prog = build_program(X, "self_attention", "gated_relu", c, gates=gates)
    assert prog.fused.T > 64 and prog.fused._q(np.float64) is not None  # cached, several chunks
    Zs = [rng.standard_normal(sh) for sh in prog.zshapes()]
    ref = _dense(X, gates, c).forward(Zs)
    np.testing.assert_allclose(prog.forward(Zs), ref, rtol=1e-12, atol=1e-12 * abs(ref).max())


def test_features_built_one_sample_at_a_time_equal_dense_features(monkeypatch):
    """The per-sample features are built in chunks of samples (their tokens zero-padded to
    the longest one): one sample per chunk, padded sentences included, still gives the dense
    operator's products."""
    import attnlens.convex.gated_attention as ga

    monkeypatch.setattr(ga, "CHUNK_ELEMENTS", 1)  # one sample per chunk
    X, gates, rng = _data(n=30)
    c = 2
    prog = build_program(X, "self_attention", "gated_relu", c, gates=gates)
    Zs = [rng.standard_normal(sh) for sh in prog.zshapes()]
    R = rng.standard_normal((len(X), c))
    dense = _dense(X, gates, c)
    ref = dense.forward(Zs)
    np.testing.assert_allclose(prog.forward(Zs), ref, rtol=1e-12, atol=1e-12 * abs(ref).max())
    for got, want in zip(prog.adjoint(R), dense.adjoint(R), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * abs(want).max())
    assert prog.fused._F["float64"].shape == (30, len(gates) * X.shape[2], prog.fused.P)


def test_feature_budget_follows_the_environment(monkeypatch):
    import attnlens.convex.gated_attention as ga

    monkeypatch.setenv(ga.FEATURE_CACHE_ENV, "0")
    assert ga.feature_budget() == 0
    X, gates, rng = _data(n=20)
    prog = build_program(X, "self_attention", "gated_relu", 2, gates=gates)
    prog.forward([rng.standard_normal(sh) for sh in prog.zshapes()])
    assert prog.fused._F == {"float64": None}  # no features: the token products
    monkeypatch.setenv(ga.FEATURE_CACHE_ENV, "0.5")
    assert 0 < ga.feature_budget() <= 2**29
    for bad in ("lots", "-1", "nan"):
        monkeypatch.setenv(ga.FEATURE_CACHE_ENV, bad)
        with pytest.raises(ValueError, match=f"{ga.FEATURE_CACHE_ENV}.*{bad}"):
            ga.feature_budget()


def test_auto_precision_stays_float32_at_loose_tol_and_is_still_certified(caplog):
    """tol >= 1e-3: float32 products to the end, the certificate confirmed in float64."""
    import logging

    from attnlens.convex.certificate import certificate
    from attnlens.convex.nuclear import FLOAT32_FLOOR, fista, float64_switch

    assert float64_switch(1e-3) == 0.0 and float64_switch(10 * FLOAT32_FLOOR) == 0.0
    assert float64_switch(1e-4) == 1e-3 and float64_switch(1e-6) == 1e-3
    X, gates, _ = _data(n=60, s=5, d=3, m=3)
    Y = np.eye(2)[np.random.default_rng(1).integers(0, 2, len(X))]
    prog = build_program(X, "self_attention", "gated_relu", 2, gates=gates)
    runs = {}
    for tol in (1e-3, 1e-5):
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger="attnlens.convex.nuclear"):
            runs[tol] = fista(prog, Y, 0.01, "squared", tol=tol, max_iter=20000,
                              precision="auto")
        modes = [r.getMessage().split("(")[-1].rstrip(")") for r in caplog.records
                 if "fista it" in r.getMessage()]
        assert modes and (set(modes) == {"f32"} if tol == 1e-3 else modes[-1] == "f64")
    loose, tight = runs[1e-3], runs[1e-5]
    # the reported certificate is float64, recomputed here independently of the solver
    again = certificate(prog, loose.Z, Y, 0.01, "squared")
    assert loose.certificate <= 1e-3 and abs(again.certificate - loose.certificate) <= 1e-9
    assert tight.certificate <= 1e-5
    assert tight.objective <= loose.objective <= tight.objective * (1 + 1.01e-3)


def test_factored_forward_never_contracts_an_empty_axis(monkeypatch):
    """A zero block's factors have rank 0. numpy's einsum contracting that empty axis returned
    uninitialized memory (found with valgrind; garbage that was NaN on a CI machine fails the
    fit's first SVD), so rank-0 factors are skipped. Guarded here: every einsum of the
    operator gets non-empty operands, and the forward of zero blocks is exactly zero."""
    import attnlens.convex.gated_attention as ga

    real = np.einsum

    def guarded(subscripts, *operands, **kwargs):
        assert all(np.asarray(op).size for op in operands), f"empty operand in {subscripts}"
        return real(subscripts, *operands, **kwargs)

    monkeypatch.setattr(ga, "FEATURE_CACHE_BYTES", 0)  # the token products' factored path
    X, gates, rng = _data(n=30, s=4, d=3, m=2)
    prog = build_program(X, "self_attention", "gated_relu", 2, gates=gates)
    monkeypatch.setattr(ga.np, "einsum", guarded)
    zero = [np.zeros(sh) for sh in prog.zshapes()]
    np.testing.assert_array_equal(prog.forward(zero), np.zeros((30, 2)))
    u, v = rng.standard_normal((9, 1)), rng.standard_normal((6, 1))
    mixed = [u @ v.T, np.zeros((9, 6))]  # gate 0 rank one (factored path), gate 1 zero
    ref = _dense(X, gates, 2).forward(mixed)
    np.testing.assert_allclose(prog.forward(mixed), ref, rtol=1e-12, atol=1e-12 * abs(ref).max())


def test_a_dropped_program_frees_its_features_without_the_cycle_collector():
    """The group keeps no list of its blocks, so the last reference to a program frees the
    cached per-sample features at once (a reference cycle kept 7 GiB of them alive into the
    next fit of a transfer grid, which then fell back to the token path)."""
    import gc
    import weakref

    rng = np.random.default_rng(0)
    X = rng.standard_normal((12, 4, 3))
    program = build_program(X, "self_attention", "gated_relu", 2,
                            gates=sample_gates("self_attention", 2, 4, 3, rng))
    program.forward(program.zeros())  # fills the caches
    group = weakref.ref(program.fused)
    assert group()._F  # the features (or the decision not to keep them) are cached
    gc.disable()
    try:
        del program
        assert group() is None
    finally:
        gc.enable()
