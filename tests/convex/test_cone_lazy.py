"""The lazy cone paths (prox that skips columns, exact max of dual norms) against exhaustive ones.

``ConeBlock.norm_bounds`` must bound every projection's norm from above, whatever the warm
sets; ``prox`` must equal shrink(project) column for column; ``max_dual_norm`` must equal the
maximum over every column's exact projection.
"""

import dataclasses

import numpy as np
import pytest

from attnlens.convex.cones import attention_cones, build_cones
from attnlens.convex.programs import sample_gates
from attnlens.convex.relu_program import max_dual_norm


def _cones(head, seed=5, n=14, s=4, d=4):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, s, d))
    gates = sample_gates(head, 3, s, d, rng, 2 if head == "bfno" else 1)
    if head == "self_attention":
        return attention_cones(X, gates)[0], rng
    return build_cones(X, head, gates, 2 if head == "bfno" else 1)[0], rng


def _columns(cone, rng, k=8):
    """Half far outside the cone (projections near the apex), half near its generator."""
    h = cone.interior / np.linalg.norm(cone.interior)
    return np.hstack([rng.standard_normal((cone.p, k // 2)),
                      2.0 * h[:, None] + 0.7 * rng.standard_normal((cone.p, k - k // 2))])


def _shrink(P, tau):
    nrm = np.linalg.norm(P, axis=0)
    return P * np.maximum(1.0 - tau / np.maximum(nrm, 1e-300), 0.0)[None, :]


@pytest.mark.parametrize("head", ["self_attention", "fno", "bfno", "mixer"])
def test_norm_bounds_bound_the_projection_and_are_exact_on_its_active_set(head):
    cones, rng = _cones(head)
    cone = cones[0]
    Z = _columns(cone, rng)
    P, active = cone.project(Z)
    exact = np.linalg.norm(P, axis=0)
    # no warm sets: ||z||; the right active sets: the projection itself
    np.testing.assert_allclose(cone.norm_bounds(Z), np.linalg.norm(Z, axis=0), rtol=1e-14)
    np.testing.assert_allclose(cone.norm_bounds(Z, active), exact, rtol=1e-8, atol=1e-10)
    # wrong warm sets (another column's, truncated ones, random rows): still upper bounds
    wrong = [np.roll(active, 1, axis=0), np.where(np.arange(cone.p) < 2, active, -1),
             rng.integers(0, len(cone.signs), size=active.shape)]
    for warm in wrong:
        assert np.all(cone.norm_bounds(Z, warm) >= exact * (1 - 1e-12))
    assert np.any(exact < 0.95 * np.linalg.norm(Z, axis=0))  # the cones do cut


@pytest.mark.parametrize("head", ["self_attention", "fno"])
def test_prox_equals_shrink_of_projection(head):
    cones, rng = _cones(head)
    cone = cones[1]
    Z = _columns(cone, rng, k=10)
    P, active = cone.project(Z)
    nrm = np.linalg.norm(P, axis=0)
    tau = float(np.median(nrm))  # about half of the columns shrink to zero
    for warm in (None, active, np.roll(active, 3, axis=0)):
        X, _ = cone.prox(Z, tau, warm)
        np.testing.assert_allclose(X, _shrink(P, tau), rtol=1e-8, atol=1e-10)
    assert 0 < np.sum(np.linalg.norm(X, axis=0) == 0) < Z.shape[1]


@pytest.mark.parametrize("head", ["self_attention", "bfno"])
def test_max_dual_norm_equals_the_exhaustive_maximum(head):
    cones, rng = _cones(head)
    Hs = [_columns(c, rng, k=6) for c in cones]
    exhaustive = max(float(np.linalg.norm(c.project(H)[0], axis=0).max())
                     for c, H in zip(cones, Hs, strict=True))
    value, warm = max_dual_norm(cones, Hs)
    assert value == pytest.approx(exhaustive, rel=1e-9)
    # warm-started again on slightly moved columns: still the exhaustive maximum
    Hs2 = [H + 1e-3 * rng.standard_normal(H.shape) for H in Hs]
    exhaustive2 = max(float(np.linalg.norm(c.project(H)[0], axis=0).max())
                      for c, H in zip(cones, Hs2, strict=True))
    assert max_dual_norm(cones, Hs2, warm)[0] == pytest.approx(exhaustive2, rel=1e-9)


@pytest.mark.parametrize("head", ["self_attention", "fno"])
def test_active_set_repair_gives_the_cutting_plane_projection(head, monkeypatch):
    """Warm starts that fail their KKT check are repaired by active-set steps; the projections
    equal the cold cutting-plane NNLS ones, with fewer NNLS solves."""
    from attnlens.convex import cones as cones_mod

    cones, rng = _cones(head, n=30)
    cone = cones[2]
    Z = _columns(cone, rng, k=12)
    _, active = cone.project(Z)
    Z2 = Z + 0.1 * rng.standard_normal(Z.shape)  # moved enough to change the active sets
    cold, _ = cone.project(Z2)
    calls = {"n": 0}
    nnls = cones_mod.ConeBlock._nnls_project

    def counted(self, *args, **kwargs):
        calls["n"] += 1
        return nnls(self, *args, **kwargs)

    monkeypatch.setattr(cones_mod.ConeBlock, "_nnls_project", counted)
    counts = {}
    for rounds in (0, cones_mod.REPAIR_ROUNDS):
        monkeypatch.setattr(cones_mod, "REPAIR_ROUNDS", rounds)
        calls["n"] = 0
        warm_proj, _ = cone.project(Z2, active)
        counts[rounds] = calls["n"]
        np.testing.assert_allclose(warm_proj, cold, rtol=1e-8, atol=1e-10)
        assert cone.min_values(warm_proj).min() >= -1e-10
    assert counts[cones_mod.REPAIR_ROUNDS] < counts[0]  # the repair path was taken


@pytest.mark.parametrize("head", ["self_attention", "fno"])
def test_project_or_bound_stops_only_where_the_bound_is_below_stop(head):
    cones, rng = _cones(head, n=30)
    cone = cones[0]
    Z = _columns(cone, rng, k=12)
    P, _ = cone.project(Z)
    exact_norm = np.linalg.norm(P, axis=0)
    stop = np.full(Z.shape[1], float(np.median(exact_norm)))
    X, _, exact = cone.project_or_bound(Z, stop)
    np.testing.assert_allclose(X[:, exact], P[:, exact], rtol=1e-8, atol=1e-10)
    nrm = np.linalg.norm(X[:, ~exact], axis=0)
    assert np.all(nrm <= stop[~exact])  # the reason to stop
    assert np.all(nrm >= exact_norm[~exact] * (1 - 1e-12))  # and still an upper bound
    assert (~exact).any()  # some columns stopped early


def test_dual_spacing_doubles_only_far_from_tol_and_when_costly():
    from attnlens.convex.relu import MAX_DUAL_SPACING, _dual_spacing

    assert _dual_spacing(10, 10, ratio=1e3, cold=3) == 20
    assert _dual_spacing(40, 10, ratio=1e3, cold=1) == 80
    assert _dual_spacing(10 * MAX_DUAL_SPACING, 10, 1e3, 5) == 10 * MAX_DUAL_SPACING  # capped
    assert _dual_spacing(80, 10, ratio=2.0, cold=5) == 10  # near tol: every check
    assert _dual_spacing(80, 10, ratio=1e3, cold=0) == 10  # cheap (warm) evaluations


def test_spaced_dual_evaluations_leave_the_iterates_unchanged(monkeypatch):
    """The same iterates whether the dual part runs at every check or is spaced out; a solve
    to tol still ends certified."""
    from attnlens.convex import relu as relu_mod
    from attnlens.convex.programs import build_program

    rng = np.random.default_rng(11)
    X = rng.standard_normal((40, 4, 3))
    y = (X[:, :, 0].mean(axis=1) > 0).astype(int)
    Y = np.eye(2)[y]
    gates = sample_gates("self_attention", 3, 4, 3, rng)
    prog = build_program(X, "self_attention", "relu", 2, gates=gates)
    runs, duals = {}, {}
    certify = relu_mod.certify_relu

    def counted(*args, dual=True, **kwargs):
        duals[far] += dual
        return certify(*args, dual=dual, **kwargs)

    monkeypatch.setattr(relu_mod, "certify_relu", counted)
    for far in (np.inf, 0.0):  # never spaced / always spaced (when cold projections ran)
        monkeypatch.setattr(relu_mod, "FAR_FROM_TOL", far)
        duals[far] = 0
        runs[far] = relu_mod.cone_fista(prog, Y, 1e-2, "squared", tol=0.0, max_iter=120,
                                        rng=np.random.default_rng(0))
    assert duals[0.0] < duals[np.inf] == 12  # the spacing was exercised
    a, b = runs[np.inf], runs[0.0]
    assert a.iterations == b.iterations == 120
    assert a.objective == b.objective
    for za, zb in zip(a.Z, b.Z, strict=True):
        np.testing.assert_array_equal(za, zb)
    res = relu_mod.cone_fista(prog, Y, 1e-2, "squared", tol=1e-6, max_iter=20000,
                              rng=np.random.default_rng(0))
    assert res.certificate <= 1e-6 and str(res.status) == "optimal"


@pytest.mark.parametrize("head", ["self_attention", "fno"])
@pytest.mark.parametrize("cap", [1, 4])
def test_cutting_plane_bounds_its_working_set_and_still_projects(head, cap, monkeypatch):
    """The cutting plane holds at most ``WORKING_SET * p`` rows plus the new violated ones
    (zero-multiplier rows with the most slack leave), over several rounds, and ends at the
    projection given by scipy's NNLS over every row at once."""
    from scipy.optimize import nnls

    from attnlens.convex import cones as cones_mod

    monkeypatch.setattr(cones_mod, "WORKING_SET", cap)
    cones, rng = _cones(head, n=60, s=6, d=4)
    cone = cones[1]
    C = cone.dense()  # (N, p)
    Z = _columns(cone, rng, k=6)
    sizes = []
    real = cones_mod.nnls

    def recorded(A, b, **kwargs):
        sizes.append(A.shape[1])
        return real(A, b, **kwargs)

    monkeypatch.setattr(cones_mod, "nnls", recorded)
    P, _ = cone.project(Z)
    assert len(sizes) > Z.shape[1]  # some columns needed more than one round
    assert max(sizes) <= (cap + 2) * cone.p
    assert C.shape[0] > 10 * cone.p
    for k in range(Z.shape[1]):
        mu, _ = nnls(C.T, -Z[:, k], maxiter=50 * C.shape[0])
        np.testing.assert_allclose(P[:, k], Z[:, k] + C.T @ mu, atol=1e-8)


@pytest.mark.parametrize("head", ["self_attention", "fno"])
def test_active_sets_of_projections_contain_their_support(head):
    """A projection's own support (positive multipliers) is among the rows ``active_sets``
    reads off the projected point, and warm-starting from them reproduces it without NNLS."""
    cones, rng = _cones(head, n=30)
    cone = cones[0]
    Z = _columns(cone, rng, k=8)
    P, support = cone.project(Z)
    guess = cone.active_sets(P)
    outside = 0
    for k in range(Z.shape[1]):
        if np.linalg.norm(P[:, k]) <= 1e-10 * np.linalg.norm(Z[:, k]):  # the apex: no support
            outside += 1
            continue
        assert set(support[k][support[k] >= 0]) <= set(guess[k][guess[k] >= 0])
    assert outside < Z.shape[1]
    assert np.all(cone.active_sets(np.zeros((cone.p, 2))) == -1)
    before = cone.nnls_calls
    again, _ = cone.project(Z, guess)
    assert cone.nnls_calls - before < Z.shape[1]
    np.testing.assert_allclose(again, P, rtol=1e-9, atol=1e-12)


def test_warm_started_relu_solve_uses_the_start_active_sets(monkeypatch):
    """``cone_fista(x0=...)`` starts its projections from ``x0``'s active sets: the same
    iterates as without them (20 iterations from a solution), with fewer cutting-plane NNLS
    solves."""
    from attnlens.convex import cones as cones_mod
    from attnlens.convex.programs import build_program
    from attnlens.convex.relu import cone_fista, solve_relu

    rng = np.random.default_rng(3)
    X = rng.standard_normal((40, 4, 3))
    Y = np.eye(2)[(np.einsum("nta,nub->n", X, X) > 0).astype(int)]
    gates = sample_gates("self_attention", 3, 4, 3, rng)
    program = build_program(X, "self_attention", "relu", 2, gates=gates)
    first = solve_relu(program, Y, 1e-2, "squared", tol=1e-2)
    x0 = [x for x, _ in first.cone_factors]
    program = dataclasses.replace(program, directions=[E[:, : E.shape[1] // 2]
                                                       for _, E in first.cone_factors])
    runs = {}
    for hint in (True, False):
        if not hint:
            monkeypatch.setattr(cones_mod.ConeBlock, "active_sets",
                                lambda self, X, rtol=1e-9: np.full((X.shape[1], self.p), -1))
        start = sum(c.nnls_calls for c in program.cones)
        res = cone_fista(program, Y, 1e-2, "squared", tol=0.0, max_iter=20, x0=x0)
        runs[hint] = (res, sum(c.nnls_calls for c in program.cones) - start)
    assert runs[True][0].objective == pytest.approx(runs[False][0].objective, rel=1e-10)
    for a, b in zip(runs[True][0].cone_factors, runs[False][0].cone_factors, strict=True):
        np.testing.assert_allclose(a[0], b[0], rtol=1e-8, atol=1e-12)
    assert runs[True][1] < runs[False][1]
