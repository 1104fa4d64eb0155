"""Tightening the ReLU program's bracket (issue 16.3): both ends checked against references.

The reference for ``P_relu(S)`` is independent of the code under test: on blocks with two
output columns (``q c = 2``) the cone-constrained nuclear norm is a problem over directions on
a circle, so cvxpy/Clarabel on a dense circle of directions gives an attained upper value, and
the exact dual norm at its residual -- a maximum over the circle, taken on a fine grid with the
Lipschitz slack of the projection (scipy's NNLS, not the library's projection) -- gives a lower
value. The true ``P_relu(S)`` lies between them, and the reference bracket is narrow.
"""

import dataclasses

import numpy as np
import pytest
from scipy.optimize import nnls

from attnlens.convex import ConvexAttentionClassifier
from attnlens.convex.losses import get_loss
from attnlens.convex.programs import build_program, sample_gates
from attnlens.convex.relu import solve_relu
from attnlens.convex.relu_bracket import (
    cone_norm_search,
    cone_norm_upper,
    refine_bracket,
    relu_lower_bound,
    solve_relu_bracket,
)
from attnlens.errors import IgnoredParameterWarning


def _cone_support(C: np.ndarray, u: np.ndarray) -> float:
    """``max_{w: C w >= 0, ||w|| <= 1} u^T w = min_{mu >= 0} ||u + C^T mu||`` (scipy NNLS)."""
    mu, res = nnls(C.T, -u, maxiter=50 * C.shape[0])
    return float(res)


def _grid_dual_norm(H: np.ndarray, C: np.ndarray, rtol: float = 1e-6) -> float:
    """Upper bound on ``max_{|v|=1} ||Pi_K(H v)||`` for ``H`` (p, 2), by branch and bound.

    ``v -> ||Pi_K(H v)||`` is ``||H||_2``-Lipschitz, so an arc of half-width ``h`` around
    ``v(a)`` holds no value above ``f(a) + ||H||_2 h``; arcs that cannot beat the best value
    are dropped, the others halved, until the bound is within ``rtol ||H||_2`` of the best.
    """
    lip = np.linalg.norm(H, 2)
    f = lambda a: _cone_support(C, H @ np.array([np.cos(a), np.sin(a)]))  # noqa: E731
    half = np.pi / 256
    arcs = [(a, half, f(a)) for a in np.arange(256) * 2 * half]
    best = max(v for _, _, v in arcs)
    while True:
        bound = max(v + lip * h for _, h, v in arcs)
        if bound - best <= rtol * lip:
            return bound
        keep = [(a, h, v) for a, h, v in arcs if v + lip * h > best + rtol * lip]
        arcs = []
        for a, h, _ in keep:
            for b in (a - h / 2, a + h / 2):
                arcs.append((b, h / 2, f(b)))
        best = max([best] + [v for _, _, v in arcs])


def _reference_bracket(program, Y, beta, n_dirs=180):
    """(lower, upper) enclosing P_relu(S) for two-column blocks, by cvxpy + a dual grid."""
    th = np.linspace(0.0, np.pi, n_dirs, endpoint=False)
    circle = np.stack([np.cos(th), np.sin(th)])  # signed: covers the whole circle
    dense = dataclasses.replace(program, directions=[circle] * len(program.blocks))
    ref = solve_relu(dense, Y, beta, "squared", solver="cvxpy", tol=1e-3)
    loss = get_loss("squared")
    R = loss.gradient(dense.forward(ref.Z), Y)
    gam = max(_grid_dual_norm(-blk.adjoint(R), cone.dense())
              for blk, cone in zip(dense.blocks, dense.cones, strict=True))
    lower = loss.dual_value(R, Y, min(1.0, beta / gam))
    return lower, ref.objective


def _attention_case(seed=0):
    """Self-attention with d = 2 and one output: blocks of q c = 2 columns."""
    rng = np.random.default_rng(seed)
    n, s, d = 10, 3, 2
    X = rng.standard_normal((n, s, d))
    y = np.sign(np.einsum("nta,nub->n", X, X) * 0.2 + X[:, 0, 0] + 0.3 * rng.standard_normal(n))
    gates = sample_gates("self_attention", 2, s, d, rng)
    return build_program(X, "self_attention", "relu", 1, gates=gates), y[:, None]


def _mlp_all_arrangements(n=8, seed=1):
    """Two-layer ReLU MLP, d = 2, two outputs, with EVERY activation pattern of the data.

    The hyperplane arrangement of ``n`` points in the plane (no bias) has ``2 n`` cells: one
    gate per cell (the bisector of two consecutive boundary angles), so ``P_relu(S)`` is the
    global optimum of the ReLU network's regularized training problem.
    """
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 1, 2))
    y = (X[:, 0, 0] * X[:, 0, 1] > 0).astype(int)
    ang = np.arctan2(X[:, 0, 1], X[:, 0, 0])
    bounds = np.sort(np.mod(np.concatenate([ang + np.pi / 2, ang - np.pi / 2]), 2 * np.pi))
    mids = (bounds + np.diff(np.concatenate([bounds, [bounds[0] + 2 * np.pi]])) / 2)
    gates = np.stack([np.cos(mids), np.sin(mids)], axis=1)
    patterns = {tuple((X[:, 0] @ h >= 0).astype(int)) for h in gates}
    assert len(patterns) == 2 * n  # every cell, each once
    return build_program(X, "mlp", "relu", 2, gates=gates), np.eye(2)[y]


@pytest.mark.parametrize("case", ["attention", "mlp_all_arrangements"])
def test_refined_bracket_encloses_reference_and_is_narrower(case):
    program, Y = _attention_case() if case == "attention" else _mlp_all_arrangements()
    beta = 0.02 if case == "attention" else 0.01
    ref_lo, ref_up = _reference_bracket(program, Y, beta)
    assert (ref_up - ref_lo) / ref_up < 1e-4  # the reference pins P_relu(S) down
    res = solve_relu_bracket(program, Y, beta, "squared", bracket_tol=1e-2, max_rounds=6,
                             tol=1e-6)
    info = res.bracket
    # both ends honest: lower <= P_relu(S) <= upper, with P_relu(S) in [ref_lo, ref_up]
    assert res.lower_bound <= ref_up * (1 + 1e-7)
    assert res.objective >= ref_lo * (1 - 1e-7)
    # never wider than the initial bracket; monotone ends; materially narrower here
    assert info.width <= info.initial_width
    assert np.all(np.diff(info.upper) <= 1e-12) and np.all(np.diff(info.lower) >= 0)
    assert info.upper[0] >= info.upper[-1] and info.lower[-1] >= info.relaxation_lower_bound
    assert info.initial_width > 0.02
    assert info.width < 0.2 * info.initial_width
    assert info.rounds <= 6 and len(info.upper) == info.rounds + 1


def test_upper_end_is_attained_by_a_relu_network():
    program, Y = _attention_case(seed=3)
    beta = 0.02
    # tol: the attained network is exact at any solver accuracy, so a loose one keeps this fast
    res = solve_relu_bracket(program, Y, beta, "squared", bracket_tol=1e-3, max_rounds=2,
                             tol=1e-4)
    loss = get_loss("squared")
    # the cone factors define the network: feasible (C x >= 0) and of this objective
    pen = 0.0
    Zs = []
    for (Xc, E), cone in zip(res.cone_factors, program.cones, strict=True):
        V = cone.apply(Xc)
        assert V.min() >= -1e-12 * np.abs(V).max()  # feasible up to rounding
        pen += np.linalg.norm(Xc, axis=0).sum()
        Zs.append(Xc @ E.T)
    assert np.all([np.allclose(np.linalg.norm(E, axis=0), 1) for _, E in res.cone_factors])
    obj = loss.value(program.forward(Zs), Y) + beta * pen
    assert abs(obj - res.objective) <= 1e-10 * res.objective


def test_cone_norm_bounds_enclose_the_grid_maximum():
    program, Y = _attention_case(seed=2)
    rng = np.random.default_rng(0)
    R = rng.standard_normal(Y.shape) / Y.shape[0]
    for blk, cone in zip(program.blocks, program.cones, strict=True):
        H = -blk.adjoint(R)
        C = cone.dense()
        n_grid = 2880
        th = np.linspace(0.0, 2 * np.pi, n_grid, endpoint=False)
        grid_max = max(_cone_support(C, H @ np.array([np.cos(a), np.sin(a)])) for a in th)
        exact_up = _grid_dual_norm(H, C)
        up = cone_norm_upper(H, cone)
        vals, V = cone_norm_search(H, cone)
        assert up >= grid_max * (1 - 1e-9)  # an upper bound
        assert up <= np.linalg.norm(H, 2) * (1 + 1e-9)  # never worse than the spectral norm
        assert vals[0] <= exact_up + 1e-12
        assert vals[0] >= 0.999 * grid_max  # the search finds the maximum on a circle
        assert np.allclose(np.linalg.norm(V, axis=0), 1.0)


def test_stopping_rule_stops():
    program, Y = _attention_case(seed=4)
    beta = 0.02
    base = solve_relu(program, Y, beta, "squared", tol=1e-8)
    prog = dataclasses.replace(program, directions=[E[:, : E.shape[1] // 2]
                                                    for _, E in base.cone_factors])
    width0 = (base.objective - base.lower_bound) / base.objective
    assert width0 > 0.02
    # a tolerance the initial bracket already meets: no re-solve
    _, res = refine_bracket(prog, Y, beta, "squared", base, bracket_tol=min(0.999, 2 * width0))
    assert res.bracket.rounds == 0 and str(res.bracket.status) == "optimal"
    assert res.objective == base.objective
    # a round budget: stops there, short of the tolerance
    _, res = refine_bracket(prog, Y, beta, "squared", base, bracket_tol=1e-9, max_rounds=1)
    assert res.bracket.rounds <= 1
    assert str(res.bracket.status) in ("max_iter", "optimal_inaccurate")
    assert res.bracket.width <= width0
    # zero rounds: only the cone-aware lower bound at the current point
    _, res = refine_bracket(prog, Y, beta, "squared", base, bracket_tol=1e-9, max_rounds=0)
    assert res.bracket.rounds == 0 and str(res.bracket.status) == "max_iter"
    assert res.lower_bound >= base.lower_bound


@pytest.fixture(scope="module")
def solved_attention_case():
    program, Y = _attention_case()
    return program, Y, solve_relu(program, Y, 0.02, "squared", tol=1e-4)


@pytest.mark.parametrize("name,value", [("bracket_tol", 0.0), ("bracket_tol", 1.5),
                                        ("max_rounds", -1), ("solver", "bm")])
def test_refine_bracket_validates_parameters(name, value, solved_attention_case):
    program, Y, base = solved_attention_case
    with pytest.raises(ValueError, match=name):
        refine_bracket(program, Y, 0.02, "squared", base, **{name: value})


def test_estimator_bracket_option():
    rng = np.random.default_rng(5)
    X = rng.standard_normal((30, 3, 3))
    y = (X[:, 0, 0] + 0.5 * X[:, 1, 1] > 0).astype(int)
    common = dict(activation="relu", beta=0.02, n_gates=2, random_state=0, tol=1e-5)
    plain = ConvexAttentionClassifier(**common).fit(X, y)
    tight = ConvexAttentionClassifier(bracket_tol=1e-2, bracket_rounds=3, **common).fit(X, y)
    assert plain.bracket_ is None
    info = tight.bracket_
    assert info.rounds <= 3
    assert tight.objective_ <= plain.objective_ * (1 + 1e-9)
    assert tight.lower_bound_ >= plain.lower_bound_ * (1 - 1e-9)
    assert tight.lower_bound_ <= tight.objective_
    # re-solves run to 1e-3 here (bracket_tol / 10); the last one is polished to tol
    assert tight.certificate_ <= 1e-5
    # the reported objective is the ReLU network's own regularized objective
    import torch

    net = tight.to_network()
    with torch.no_grad():
        out = net(torch.as_tensor(X)).numpy()
        pen = float(net.penalty())
    obj = 0.5 * np.sum((out - np.eye(2)[y]) ** 2) / len(y) + 0.02 * pen
    assert abs(obj - tight.objective_) <= 1e-9 * tight.objective_
    with pytest.raises(ValueError, match="bracket_tol"):
        ConvexAttentionClassifier(bracket_tol=-1.0, **common).fit(X, y)
    with pytest.raises(ValueError, match="bracket_rounds"):
        ConvexAttentionClassifier(bracket_tol=1e-2, bracket_rounds=-2, **common).fit(X, y)
    with pytest.warns(IgnoredParameterWarning, match="bracket_tol"):
        ConvexAttentionClassifier(activation="linear", bracket_tol=1e-2).fit(X, y)


def _wide_attention_case(seed=0):
    """Self-attention with d = 3 and two outputs: blocks of 9 x 6 (six singular pairs)."""
    rng = np.random.default_rng(seed)
    n, s, d = 12, 3, 3
    X = rng.standard_normal((n, s, d))
    y = (np.einsum("nta,nub->n", X, X) > 0).astype(int)
    gates = sample_gates("self_attention", 3, s, d, rng)
    return build_program(X, "self_attention", "relu", 2, gates=gates), np.eye(2)[y]


def _reference_cone_norm_upper(H: np.ndarray, C: np.ndarray) -> float:
    """The module's bound with every ``c_k`` exact (scipy NNLS) and every ``r`` tried."""
    U, S, _ = np.linalg.svd(H, full_matrices=False)
    c = np.minimum([max(_cone_support(C, u), _cone_support(C, -u)) for u in U.T], 1.0)
    s2 = S**2
    tails = np.append(s2[1:], 0.0)
    return float(np.sqrt(min([s2[0]] + [tails[r - 1] + np.sum((s2[:r] - tails[r - 1])
                                                               * c[:r] ** 2)
                                         for r in range(1, S.size + 1)])))


def test_cone_norm_upper_early_stops_keep_the_bound():
    program, Y = _wide_attention_case()
    rng = np.random.default_rng(1)
    R = rng.standard_normal(Y.shape) / Y.shape[0]
    for blk, cone in zip(program.blocks, program.cones, strict=True):
        H = -blk.adjoint(R)
        ref = _reference_cone_norm_upper(H, cone.dense())
        for batch in (1, 2, 6):  # the stopping rule may end the batches early: same value
            assert cone_norm_upper(H, cone, batch=batch) == pytest.approx(ref, rel=1e-9)
        above = cone_norm_upper(H, cone, floor=1.05 * ref, batch=1)
        assert ref * (1 - 1e-9) <= above <= 1.05 * ref  # some valid bound under the floor
        assert cone_norm_upper(H, cone, floor=0.5 * ref) == pytest.approx(ref, rel=1e-9)


@pytest.mark.parametrize("beta", [1e-3, 0.7, 0.9, 10.0])
def test_relu_lower_bound_equals_the_bound_of_the_full_block_bounds(beta):
    program, Y = _wide_attention_case(seed=3)
    rng = np.random.default_rng(2)
    R = rng.standard_normal(Y.shape) / Y.shape[0]
    full = [_reference_cone_norm_upper(-blk.adjoint(R), cone.dense())
            for blk, cone in zip(program.blocks, program.cones, strict=True)]
    gmax = max(full)
    expected = get_loss("squared").dual_value(R, Y, min(1.0, beta / gmax))
    bound, gammas = relu_lower_bound(program, R, Y, beta, "squared")
    assert bound == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert np.all(np.array(gammas) >= np.array(full) * (1 - 1e-9))  # each still an upper bound
    if gmax > beta:  # the maximum is computed in full
        assert max(gammas) == pytest.approx(gmax, rel=1e-9)
    else:  # only known to be at most beta
        assert max(gammas) <= beta * (1 + 1e-12)


def test_refine_bracket_reports_every_round_to_the_callback(solved_attention_case):
    program, Y, base = solved_attention_case
    seen = []
    _, res = refine_bracket(program, Y, 0.02, "squared", base, bracket_tol=1e-9, max_rounds=2,
                            callback=lambda r, lo, up: seen.append((r, lo, up)))
    info = res.bracket
    assert [r for r, _, _ in seen] == list(range(len(seen)))
    assert len(seen) == info.rounds + 1
    # the last round's values may be replaced by the polish; the others are the reported ones
    assert [lo for _, lo, _ in seen][:-1] == info.lower[:-1]
    assert [up for _, _, up in seen][:-1] == info.upper[:-1]
    with pytest.raises(ValueError, match="callback"):
        refine_bracket(program, Y, 0.02, "squared", base, callback=3)


def test_refine_bracket_resumes_from_a_checkpoint(solved_attention_case):
    program, Y, base = solved_attention_case
    kw = dict(bracket_tol=1e-9, max_rounds=2)
    _, full = refine_bracket(program, Y, 0.02, "squared", base, rng=np.random.default_rng(4),
                             **kw)
    assert full.bracket.rounds == 2  # the case needs both rounds (else nothing is resumed)
    saved = []
    rng = np.random.default_rng(4)
    refine_bracket(program, Y, 0.02, "squared", base, rng=rng,
                   on_resolve=lambda r, res: saved.append((r, res, rng.bit_generator.state)),
                   **kw)
    assert [r for r, _, _ in saved] == [1, 2]
    rounds, res1, state = saved[0]  # stopped after the first re-solve
    assert res1.lower_bound == full.bracket.lower[0]
    assert res1.objective == full.bracket.upper[1]
    rng = np.random.default_rng()
    rng.bit_generator.state = state
    _, resumed = refine_bracket(program, Y, 0.02, "squared", res1, rng=rng,
                                **kw | {"max_rounds": 2 - rounds})
    assert resumed.objective == full.objective
    assert resumed.lower_bound == full.lower_bound
    assert resumed.bracket.lower == full.bracket.lower[rounds:]
    assert resumed.bracket.upper == full.bracket.upper[rounds:]
    with pytest.raises(ValueError, match="on_resolve"):
        refine_bracket(program, Y, 0.02, "squared", base, on_resolve="save")
