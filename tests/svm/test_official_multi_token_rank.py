"""The official multi-token head, W^fin / W^SVMeq, the multi-token loop and the rank procedure,
each checked against an independent path (literal transcriptions of the official notebook in
torch or numpy, cvxpy formulations as written there, pinv, Clarabel at high accuracy)."""

from __future__ import annotations

import itertools
import json
import warnings

import cvxpy as cp
import numpy as np
import pytest
import torch

from attnlens.experiments import get, load
from attnlens.experiments import svm_multi_token as mt
from attnlens.experiments import svm_rank as rk
from attnlens.svm import MLPHead, ProblemBatch, correlation, log_ratio_fin, loss_and_grad, svm_eq
from attnlens.svm._heads import head_output, sum_relu_head


def _official_instance(seed=3, d=4):
    dd = mt.official_data(seed, mt.N, mt.T, d)
    return dd["X"], dd["Y"], dd["Z"], dd["V"]


def _torch_forward(X, Z, V, W):
    """Literal transcription of base_nonlinear.SelfAttn(mode='relu', univariate=True) with
    value.weight = V.T, v = ones, W.weight = W^T (the notebook reads W = W.weight^T)."""
    n, T, d = X.shape
    Xt, Zt = torch.tensor(X), torch.tensor(Z)
    Ww = torch.tensor(W.T.copy(), requires_grad=True)  # nn.Linear weight
    value = torch.tensor(V.T.copy())
    out = torch.softmax(Zt.reshape(n, 1, d) @ (Xt @ Ww.T).transpose(-2, -1), dim=-1)
    out = torch.relu(out @ (Xt @ value.T)) @ torch.ones(d, dtype=torch.float64)
    return out.view(-1), Ww


def test_sum_relu_head_matches_its_definition_and_the_official_model():
    X, Y, Z, V = _official_instance()
    d = X.shape[2]
    assert np.linalg.norm(V) == pytest.approx(1.0, abs=1e-6)  # ||V||_F = 1 (float32 draw)
    r = np.random.default_rng(0).standard_normal((7, d))
    literal = np.array([np.ones(d) @ np.maximum(V.T @ ri, 0.0) for ri in r])
    np.testing.assert_allclose(sum_relu_head(r, V), literal, rtol=1e-14)
    f, _ = head_output(r[None], None, MLPHead.sum_relu(V))
    np.testing.assert_allclose(f[0], literal, rtol=1e-14)
    # the whole model and the loss gradient against autograd on the official torch module
    W = np.random.default_rng(1).standard_normal((d, d))
    out_t, Ww = _torch_forward(X, Z, V, W)
    batch = ProblemBatch(X[None], Y[None], np.zeros((1, d)), Z[None])
    lg = loss_and_grad(batch, W[None], mlp=MLPHead.sum_relu(V))
    np.testing.assert_allclose(lg.outputs[0], out_t.detach().numpy(), rtol=1e-12)
    loss = torch.log(1 + torch.exp(-torch.tensor(Y) * out_t)).mean()
    loss.backward()
    np.testing.assert_allclose(lg.grad_W[0], Ww.grad.numpy().T, rtol=1e-9, atol=1e-13)


def test_official_gd_matches_a_literal_torch_transcription_of_the_notebook_loop():
    X, Y, Z, V = _official_instance(seed=5, d=6)
    d = X.shape[2]
    W0 = mt.initial_W(5, d)
    batch = ProblemBatch(X[None], Y[None], np.zeros((1, d)), Z[None])
    logs, probs = mt.official_gd(batch, MLPHead.sum_relu(V), W0[None], 41, 0.1, 10)
    # notebook: SGD(lr) on W.weight, grad /= (||grad|| + eps), log after the step at it % feq
    Ww = torch.tensor(W0.T.copy(), requires_grad=True)
    opt = torch.optim.SGD([Ww], lr=0.1)
    eps = torch.finfo(torch.double).eps
    ref = []
    Xt, Zt, Yt = torch.tensor(X), torch.tensor(Z), torch.tensor(Y)
    for it in range(41):
        opt.zero_grad()
        att = torch.softmax(Zt.reshape(3, 1, d) @ (Xt @ Ww.T).transpose(-2, -1), dim=-1)
        out = (torch.relu(att @ (Xt @ torch.tensor(V))) @ torch.ones(d, dtype=torch.float64))
        torch.log(1 + torch.exp(-Yt * out.view(-1))).mean().backward()
        Ww.grad /= Ww.grad.norm() + eps
        opt.step()
        if it % 10 == 0:
            ref.append(Ww.detach().numpy().T.copy())
    np.testing.assert_allclose(logs[0], np.stack(ref), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(probs[0], att.detach().numpy().reshape(3, -1), rtol=1e-9)


def _multi_token_case():
    rng = np.random.default_rng(7)
    n, T, d = 3, 4, 5
    X = rng.standard_normal((n, T, d))
    X /= np.linalg.norm(X, axis=-1, keepdims=True)
    Z = rng.standard_normal((n, d))
    probs = np.array([[0.6, 0.4 - 1e-9, 1e-9, 0.0],
                      [0.2, 0.3, 0.5 - 2e-8, 2e-8],
                      [1 - 1e-8, 1e-8, 0.0, 0.0]])
    sets = [[0, 1], [0, 1, 2], [0]]
    return X, Z, probs, sets


def test_log_ratio_fin_is_the_minimum_norm_solution_of_the_equalities():
    X, Z, probs, sets = _multi_token_case()
    d = X.shape[2]
    W_fin = log_ratio_fin(X, Z, probs, sets)
    rows, b = [], []
    for i, s in enumerate(sets):
        for t, tau in itertools.combinations(s, 2):  # all pairs, as the official code
            rows.append(np.outer(X[i, tau] - X[i, t], Z[i]).ravel())
            b.append(np.log(probs[i, tau] / probs[i, t]))
    A, b = np.asarray(rows), np.asarray(b)
    np.testing.assert_allclose(A @ W_fin.ravel(), b, atol=1e-10)  # equalities hold
    np.testing.assert_allclose(W_fin.ravel(), np.linalg.pinv(A) @ b, atol=1e-10)  # min norm
    # the official formulation (cvxpy, norm minimized under the equalities)
    Wv = cp.Variable((d, d))
    cons = [((X[i, tau] - X[i, t]).reshape(1, -1) @ Wv @ Z[i].reshape(-1, 1))
            == np.log(probs[i, tau] / probs[i, t])
            for i, s in enumerate(sets) for t, tau in itertools.combinations(s, 2)]
    cp.Problem(cp.Minimize(cp.norm(Wv, "fro")), cons).solve(solver="CLARABEL")
    np.testing.assert_allclose(W_fin, Wv.value, atol=1e-6)
    assert not np.any(log_ratio_fin(X, Z, probs, [[0], [1], [2]]))  # singletons: W_fin = 0


def test_svm_eq_is_w_fin_plus_the_least_squares_multiple_of_the_official_w_dir():
    X, Z, probs, sets = _multi_token_case()
    n, T, d = X.shape
    W = np.random.default_rng(3).standard_normal((d, d))
    res = svm_eq(W, X, Z, probs, threshold=1e-3)
    assert [s.tolist() for s in res.sets] == sets
    # W_dir: the official cvxpy program (equalities inside O_i, margin 1 against the rest)
    Wd = cp.Variable((d, d))
    cons = []
    for i, s in enumerate(sets):
        for t1, t2 in itertools.combinations(range(T), 2):
            a = (X[i, t1] - X[i, t2]).reshape(1, -1) @ Wd @ Z[i].reshape(-1, 1)
            if t1 in s and t2 in s:
                cons.append(a == 0)
            elif t1 in s:
                cons.append(-a <= -1)
            elif t2 in s:
                cons.append(a <= -1)
    cp.Problem(cp.Minimize(cp.norm(Wd, "fro")), cons).solve(solver="CLARABEL")
    np.testing.assert_allclose(res.W_dir, Wd.value, atol=1e-6)
    R = np.linalg.lstsq(res.W_dir.reshape(-1, 1), (W - res.W_fin).ravel(), rcond=None)[0][0]
    assert res.R == pytest.approx(R, rel=1e-10)
    np.testing.assert_allclose(res.W_eq, res.W_fin + R * res.W_dir, atol=1e-12)


def test_multi_token_small_run_reports_the_official_quantities(tmp_path):
    load("svm")
    m = get("svm", "multi-token")(tmp_path / "mt", seeds=2, ds=(4,), steps=401, progress=False)
    row = m["d=4"]
    assert row["runs"] == 2 and sum(row["candidate_fates"].values()) >= 2
    assert len(row["mean_curves"]["svm_eq"]) == 5  # iterations 0, 100, ..., 400
    # recompute the first counted run's final 1 - corr independently (cvxpy, lstsq)
    unit = next(u for u in (tmp_path / "mt" / "units").iterdir())
    run0 = json.loads(unit.read_text())["runs"][0]
    X, Y, Z, V = _official_instance(seed=run0["seed"], d=4)
    batch = ProblemBatch(X[None], Y[None], np.zeros((1, 4)), Z[None])
    logs, probs = mt.official_gd(batch, MLPHead.sum_relu(V), mt.initial_W(run0["seed"], 4)[None],
                                 401, 0.1, 100)
    W, p = logs[0, -1], probs[0]
    sets = [np.flatnonzero(pi >= 1e-3).tolist() for pi in p]
    rows = [np.outer(X[i, b] - X[i, a], Z[i]).ravel()
            for i, s in enumerate(sets) for a, b in itertools.combinations(s, 2)]
    rhs = [np.log(p[i, b] / p[i, a]) for i, s in enumerate(sets)
           for a, b in itertools.combinations(s, 2)]
    W_fin = (np.linalg.pinv(np.asarray(rows)) @ np.asarray(rhs)).reshape(4, 4) if rows else 0
    W_dir = svm_eq(W, X, Z, p).W_dir
    R = np.sum(W_dir * (W - W_fin)) / np.sum(W_dir**2)
    expected = 1 - float(correlation(W, W_fin + R * W_dir))
    assert run0["svm_eq"][-1] == pytest.approx(expected, rel=1e-6, abs=1e-12)
    assert run0["gen_svm"][-1] == pytest.approx(1 - float(correlation(W, W_dir)), rel=1e-9)
    assert (tmp_path / "mt" / "multi_token.png").exists()


def test_rank_official_procedure_and_certified_rank_on_a_known_instance():
    dd = rk.official_data(0, 5, 5, 5)
    X, Z, a = dd["X"], dd["Z"], dd["selection"]
    n, T, d = X.shape
    # independent high-accuracy solve of the nuclear program (Clarabel)
    Wv = cp.Variable((d, d))
    cons = [cp.sum(cp.multiply(Wv, np.outer(X[i, a[i]] - X[i, t], Z[i]))) >= 1
            for i in range(n) for t in range(T) if t != a[i]]
    prob = cp.Problem(cp.Minimize(cp.normNuc(Wv)), cons)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Clarabel may call 1e-11 "inaccurate"; the gap decides
        prob.solve(solver="CLARABEL", tol_gap_abs=1e-11, tol_gap_rel=1e-11, tol_feas=1e-11)
    sv = np.linalg.svd(Wv.value, compute_uv=False)
    true_rank = int(np.sum(sv > 1e-6 * sv[0]))
    assert sv[true_rank - 1] > 1e-2 * sv[0] and (true_rank == d or sv[true_rank] < 1e-8 * sv[0])
    assert rk.certified_rank(X, Z, a, "nuc") == (true_rank, "optimal")
    # the paper's procedure: cvxpy's default solver, matrix_rank(tol=1e-7), written out again
    W2 = cp.Variable((d, d))
    c2 = [(X[i, t] - X[i, a[i]]).reshape(1, -1) @ W2 @ Z[i].reshape(-1, 1) <= -1
          for i in range(n) for t in range(T) if t != a[i]]
    p2 = cp.Problem(cp.Minimize(cp.norm(W2, "nuc")), c2)
    p2.solve()
    procedure = int(np.linalg.matrix_rank(W2.value, tol=1e-7))
    W_off, status, solver = rk.official_solve(X, Z, a, "nuc")
    assert rk.official_rank(W_off) == procedure
    assert solver == p2.solver_stats.solver_name
    # with SCS at its default accuracy the procedure counts spurious singular values
    if solver == "SCS":
        assert procedure > true_rank
    assert rk.official_rank(None) == 1  # the notebook's reading of an infeasible instance


def test_rank_experiment_small_grid(tmp_path):
    load("svm")
    m = get("svm", "rank")(tmp_path / "rank", seeds=3, cells=((5, 5),), ds=(1, 5),
                           progress=False)
    rows = {r["d"]: r for r in m["grid"]}
    assert rows[1]["infeasible"] == 3 and rows[1]["official_nuc"] == 1.0  # None -> rank 1
    assert rows[1]["certified_nuc"] is None
    assert rows[5]["infeasible"] == 0 and rows[5]["certified_nuc"] <= rows[5]["certified_fro"]
    text = (tmp_path / "rank" / "rank_instances.csv").read_text()
    assert text.startswith("n,T,d,seed,official_fro") and text.count("\n") == 7
