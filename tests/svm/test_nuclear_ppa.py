"""Att-SVM* by the proximal point method (``method="proximal_point"``): against the cvxpy
reference and the interior-point method, its certificate, the automatic choice, bad input."""

import numpy as np
import pytest

import attnlens.svm.attsvm as attsvm_mod
from attnlens._results import Status
from attnlens.errors import InfeasibleError
from attnlens.svm import att_svm, planted_problem, random_problem
from attnlens.svm._solvers.certificate import dual_bound
from attnlens.svm._solvers.constraints import build_constraints


@pytest.mark.parametrize("seed", range(3))
def test_matches_cvxpy_and_interior_point(seed):
    rng = np.random.default_rng(seed)
    n, T, d = int(rng.integers(5, 20)), int(rng.integers(3, 9)), int(rng.integers(4, 12))
    p, sel = planted_problem(n, T, d, seed=seed)
    ref = att_svm(p.X, p.Z, sel, norm="nuc", method="cvxpy")
    ipm = att_svm(p.X, p.Z, sel, norm="nuc", method="interior_point")
    ppa = att_svm(p.X, p.Z, sel, norm="nuc", method="proximal_point", tol=1e-6)
    assert ppa.method == "proximal_point"
    assert ppa.status is Status.OPTIMAL and ppa.certificate <= 1e-6
    assert abs(ppa.objective - ref.objective) <= 1e-5 * ref.objective
    assert abs(ppa.objective - ipm.objective) <= 2e-6 * ipm.objective
    # weak duality across independent solves: each dual bound below the other's objective
    cs = build_constraints(p.X, p.Z, sel, "cross")
    assert dual_bound(cs, ppa.duals[:, None], "nuc") <= ipm.objective * (1 + 1e-9)
    assert dual_bound(cs, ipm.duals[:, None], "nuc") <= ppa.objective * (1 + 1e-9)
    assert ppa.margins[np.isfinite(ppa.margins)].min() >= 1 - 1e-12  # feasible W
    assert ppa.rank == ipm.rank


def test_certificate_is_recomputed_honestly():
    """The public layer's certificate (feasible W, dual bound) equals the one recomputed here."""
    p, sel = planted_problem(30, 8, 10, seed=4)
    r = att_svm(p.X, p.Z, sel, norm="nuc", method="proximal_point", tol=1e-6)
    cs = build_constraints(p.X, p.Z, sel, "cross")
    M = cs.margins(r.W)
    assert M[cs.mask].min() == pytest.approx(1.0, abs=1e-12)
    lower = dual_bound(cs, r.duals[:, None], "nuc")
    upper = np.linalg.norm(r.W, "nuc")
    assert (upper - lower) / upper == pytest.approx(r.certificate, abs=1e-12)


def test_auto_choice_by_size(monkeypatch):
    p, sel = planted_problem(12, 6, 8, seed=1)  # 60 constraints
    assert att_svm(p.X, p.Z, sel, norm="nuc").method == "interior_point"
    monkeypatch.setattr(attsvm_mod, "AUTO_IPM_MAX_CONSTRAINTS", 50)
    r = att_svm(p.X, p.Z, sel, norm="nuc", tol=1e-6)
    assert r.method == "proximal_point" and r.certificate <= 1e-6
    assert att_svm(p.X, p.Z, sel, norm="fro").method == "active_set"


def test_infeasible_raises_with_ray():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((4, 5, 1))
    Z = rng.standard_normal((4, 1))
    sel = np.argsort(X[:, :, 0], axis=1)[:, 2]  # not separable in d = 1
    with pytest.raises(InfeasibleError) as err:
        att_svm(X, Z, sel, norm="nuc", method="proximal_point")
    assert err.value.evidence["dual_ray"].sum() > 0


def test_bad_input():
    p = random_problem(4, 4, 3, seed=0)
    sel = np.zeros(4, dtype=int)
    with pytest.raises(ValueError, match="method='proximal_point'"):
        att_svm(p.X, p.Z, sel, norm="fro", method="proximal_point")
    with pytest.raises(ValueError, match="method"):
        att_svm(p.X, p.Z, sel, norm="nuc", method="proximal")
    with pytest.raises(ValueError, match="max_iter"):
        att_svm(p.X, p.Z, sel, norm="nuc", method="proximal_point", max_iter=0)
