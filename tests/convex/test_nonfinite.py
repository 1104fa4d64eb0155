"""Non-finite numbers in the solvers: gesdd's non-convergence, float32 products that overflow or
come back wrong, and a divergent problem -- each recovered from or named, never an opaque
LinAlgError from deep inside a FISTA step."""

import logging

import numpy as np
import pytest

from attnlens.convex import _linalg
from attnlens.convex.certificate import certificate
from attnlens.convex.nuclear import fista
from attnlens.errors import NonFiniteError


def _failing_gesdd(*args, **kwargs):
    raise np.linalg.LinAlgError("SVD did not converge")


@pytest.mark.parametrize("shape", [(9, 6), (80, 70)])  # below and above the limiter's size
def test_svd_falls_back_to_gesvd_when_gesdd_does_not_converge(monkeypatch, caplog, shape):
    Z = np.random.default_rng(1).standard_normal(shape)
    U, s, Vt = np.linalg.svd(Z, full_matrices=False)
    monkeypatch.setattr(np.linalg, "svd", _failing_gesdd)
    with caplog.at_level(logging.WARNING, logger="attnlens.convex._linalg"):
        U2, s2, Vt2 = _linalg.svd(Z)
        s3 = _linalg.svd(Z, compute_uv=False)
    assert "using gesvd" in caplog.text
    np.testing.assert_allclose(s2, s, rtol=1e-12)
    np.testing.assert_allclose(s3, s, rtol=1e-12)
    np.testing.assert_allclose((U2 * s2) @ Vt2, Z, atol=1e-12)


def test_svd_of_a_non_finite_block_names_the_problem():
    Z = np.ones((9, 6))
    Z[2, 3] = np.nan
    Z[4, 1] = np.inf
    with pytest.raises(NonFiniteError, match=r"9 x 6 block has 2 NaN or infinite"):
        _linalg.svd(Z)


def test_fista_leaves_float32_when_its_products_are_not_finite(monkeypatch, caplog, gated_problem):
    """A float32 product that returns NaN (overflow, or a faulty float32 GEMM) switches the
    run to float64 products; it reaches the optimum of the float64 run."""
    prog, Y = gated_problem()
    ref = fista(prog, Y, 0.05, "squared", tol=1e-8, max_iter=20000, precision="double")
    forward = prog.forward_flat

    def nan_in_float32(x, single=False):
        out = forward(x, single)
        return np.full_like(out, np.nan) if single else out

    monkeypatch.setattr(prog, "forward_flat", nan_in_float32)
    with caplog.at_level(logging.WARNING, logger="attnlens.convex.nuclear"):
        res = fista(prog, Y, 0.05, "squared", tol=1e-8, max_iter=20000, precision="auto")
    assert "float64 from here" in caplog.text
    assert res.certificate <= 1e-8 and ref.certificate <= 1e-8
    assert abs(res.objective - ref.objective) <= 1e-7 * ref.objective


def test_float32_certificate_with_a_non_finite_product_is_evaluated_in_float64(monkeypatch, gated_problem):
    prog, Y = gated_problem()
    Zs = [np.random.default_rng(2).standard_normal(sh) * 0.1 for sh in prog.zshapes()]
    want = certificate(prog, Zs, Y, 0.05, "squared")
    forward = prog.forward
    monkeypatch.setattr(prog, "forward", lambda Zs, single=False: (
        np.full((prog.n, 2), np.nan) if single else forward(Zs, single)))
    got = certificate(prog, Zs, Y, 0.05, "squared", single=True)
    assert np.isfinite(got.certificate)
    assert (got.primal, got.dual, got.certificate) == (want.primal, want.dual, want.certificate)


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
def test_fista_with_non_finite_float64_products_raises_a_named_error(monkeypatch, gated_problem):
    prog, Y = gated_problem()
    monkeypatch.setattr(prog, "forward_flat",
                        lambda x, single=False: np.full((prog.n, 2), np.inf))
    with pytest.raises(NonFiniteError, match=r"gradient step at iteration 1 is not finite"):
        fista(prog, Y, 0.05, "squared", precision="double", lipschitz=1.0)
