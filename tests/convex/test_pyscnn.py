"""Gated-ReLU MLP head vs pyscnn (R-FISTA) on the same gates and data."""

import numpy as np
import pytest

from attnlens.convex import _pyscnn
from attnlens.convex.programs import build_program
from attnlens.convex.solvers import solve

pytestmark = pytest.mark.skipif(
    not _pyscnn.available(),
    reason="pyscnn not importable: pip install --no-deps pyscnn==0.0.10 "
    "linalg-backends==0.0.1b0 opt-einsum==3.4.0 (see Makefile)",
)


def test_gated_relu_mlp_matches_pyscnn():
    rng = np.random.default_rng(0)
    n, d, m, beta = 200, 8, 10, 1e-2
    X = rng.standard_normal((n, d))
    y = np.sign(X @ rng.standard_normal(d) + 0.3 * rng.standard_normal(n))
    H = rng.standard_normal((m, d))
    obj_scnn, _ = _pyscnn.solve_gated_relu(X, y, H, beta, tol=1e-10)
    prog = build_program(X[:, None, :], "mlp", "gated_relu", 1, gates=H)
    res = solve(prog, y[:, None], beta, "squared", solver="fista", tol=1e-9, max_iter=20000)
    assert res.certificate <= 1e-9
    # ours is certified optimal; pyscnn may stop slightly above it, never below
    assert obj_scnn >= res.objective * (1 - 1e-9)
    assert abs(obj_scnn - res.objective) <= 1e-5 * res.objective
