"""Dynamics of one-layer attention: analytic gradients vs autograd, convergence in direction,
batching, saturation, bad options."""

import numpy as np
import pytest
import torch

from attnlens.svm.dynamics import (
    MLPHead,
    ProblemBatch,
    correlation,
    loss_and_grad,
    svm_solution,
    train_attention,
)
from attnlens.svm.problems import random_problem


def _batch(S=3, n=4, T=5, d=6, seed=0):
    return ProblemBatch.from_problems([random_problem(n, T, d, seed=seed + s) for s in range(S)])


def _torch_loss(b, W, v, loss, mlp):
    X, Z, Y = torch.tensor(b.X), torch.tensor(b.Z), torch.tensor(b.Y)
    s = torch.einsum("sntd,sde,sne->snt", X, W, Z)
    p = torch.softmax(s, -1)
    r = torch.einsum("snt,sntd->snd", p, X)
    if mlp is None:
        f = torch.einsum("snd,sd->sn", r, v)
    else:
        pre = torch.einsum("smd,snd->snm", torch.tensor(mlp.V1), r)
        a = torch.relu(pre) if mlp.activation == "relu" else torch.tanh(pre)
        f = torch.einsum("snm,sm->sn", a, torch.tensor(mlp.v2))
    m = Y * f
    return (torch.nn.functional.softplus(-m) if loss == "logistic" else -m).mean(1)


@pytest.mark.parametrize("loss", ["logistic", "linear"])
@pytest.mark.parametrize("head", [None, "relu", "tanh"])
def test_gradient_matches_autograd(loss, head):
    b = _batch()
    rng = np.random.default_rng(1)
    W = rng.standard_normal((3, 6, 6))
    mlp = None if head is None else MLPHead.random(3, 6, 7, 2, head)
    lg = loss_and_grad(b, W, loss=loss, mlp=mlp)
    Wt = torch.tensor(W, requires_grad=True)
    vt = torch.tensor(b.v, requires_grad=True)
    value = _torch_loss(b, Wt, vt, loss, mlp)
    value.sum().backward()
    np.testing.assert_allclose(lg.loss, value.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(lg.grad_W, Wt.grad.numpy(), rtol=1e-9, atol=1e-14)
    if mlp is None:
        np.testing.assert_allclose(lg.grad_v, vt.grad.numpy(), rtol=1e-9, atol=1e-14)


def test_kq_step_uses_chain_rule_gradient():
    # one unnormalized step of the (K, Q) run equals a step along the autograd gradient
    b = _batch(S=2)
    rng = np.random.default_rng(3)
    K = rng.standard_normal((2, 6, 6)) * 0.1
    Q = rng.standard_normal((2, 6, 6)) * 0.1
    Kt = torch.tensor(K, requires_grad=True)
    Qt = torch.tensor(Q, requires_grad=True)
    lam = 0.01
    value = _torch_loss(b, Kt @ Qt.transpose(1, 2), torch.tensor(b.v), "logistic", None)
    (value + lam * (Kt.pow(2).sum((1, 2)) + Qt.pow(2).sum((1, 2)))).sum().backward()
    traj = train_attention(b, "KQ", steps=1, lr=0.5, normalized=False, ridge=lam,
                           init_scale=0.1, random_state=3, log_every=1)
    # the run draws K then Q from the same generator as above
    K1 = K - 0.5 * Kt.grad.numpy()
    Q1 = Q - 0.5 * Qt.grad.numpy()
    np.testing.assert_allclose(traj.K_final, K1, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(traj.Q_final, Q1, rtol=1e-10, atol=1e-13)


def _mp_grad(b, W, dps=250):
    """Naive gradient formula sum_it l'(Y_i f_i) Y_i p_it (h_it - f_i) x_it z_i^T / n in
    high-precision arithmetic (mpmath): an oracle that does not underflow."""
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = dps
    _, n, T, d = b.X.shape
    G = [[mpmath.mpf(0)] * d for _ in range(d)]
    for i in range(n):
        X = [[mpmath.mpf(float(a)) for a in row] for row in b.X[0, i]]
        z = [mpmath.mpf(float(a)) for a in b.Z[0, i]]
        v = [mpmath.mpf(float(a)) for a in b.v[0]]
        Wm = [[mpmath.mpf(float(a)) for a in row] for row in W[0]]
        Wz = [mpmath.fsum(Wm[r][c] * z[c] for c in range(d)) for r in range(d)]
        s = [mpmath.fsum(X[t][r] * Wz[r] for r in range(d)) for t in range(T)]
        e = [mpmath.exp(st - max(s)) for st in s]
        p = [et / mpmath.fsum(e) for et in e]
        h = [mpmath.fsum(X[t][r] * v[r] for r in range(d)) for t in range(T)]
        f = mpmath.fsum(p[t] * h[t] for t in range(T))
        y = mpmath.mpf(float(b.Y[0, i]))
        dl = -1 / (1 + mpmath.exp(y * f))
        for t in range(T):
            c = dl * y * p[t] * (h[t] - f) / n
            for r in range(d):
                for q in range(d):
                    G[r][q] += c * X[t][r] * z[q]
    return np.array([[float(g) for g in row] for row in G])


def test_gradient_accurate_when_softmax_saturates():
    b = _batch(S=1, n=2, T=3, d=3)
    traj = train_attention(b, "W", steps=300, lr=0.5)
    for scale in (1.0, 3.0):  # probabilities of the other tokens down to ~1e-100
        W = traj.W_final * scale
        lg = loss_and_grad(b, W)
        ref = _mp_grad(b, W)
        assert np.abs(ref).max() > 0
        np.testing.assert_allclose(lg.grad_W[0], ref, rtol=1e-7, atol=1e-7 * np.abs(ref).max())
    # plain float64 autograd underflows to an all-zero (wrong) gradient here
    Wt = torch.tensor(W, requires_grad=True)
    _torch_loss(b, Wt, torch.tensor(b.v), "logistic", None).sum().backward()
    assert np.abs(Wt.grad.numpy()).max() < np.abs(ref).max() or np.allclose(Wt.grad.numpy(), ref)


def test_normalized_gd_converges_to_wmm_direction():
    b = _batch(S=3, n=4, T=5, d=6, seed=10)
    traj = train_attention(b, "W", steps=1500, lr=0.1)
    assert traj.prob_selected[:, -1].min() > 0.99
    for s in range(3):
        W_mm = svm_solution(b.X[s], b.Z[s], traj.selection[s], "fro", method="cvxpy")
        assert correlation(traj.W_final[s], W_mm) > 0.97
        # the direction improves along the run
        assert correlation(traj.W[s, -1], W_mm) > correlation(traj.W[s, len(traj.steps) // 10],
                                                               W_mm)


def test_kq_with_ridge_converges_to_nuclear_svm():
    b = _batch(S=6, n=4, T=5, d=6, seed=20)
    traj = train_attention(b, "KQ", steps=1500, lr=0.1, ridge=1e-16)
    c_nuc, c_fro = [], []
    for s in range(6):
        c_nuc.append(correlation(traj.W_final[s],
                                 svm_solution(b.X[s], b.Z[s], traj.selection[s], "nuc", method="cvxpy")))
        c_fro.append(correlation(traj.W_final[s],
                                 svm_solution(b.X[s], b.Z[s], traj.selection[s], "fro", method="cvxpy")))
    assert np.median(c_nuc) > 0.99
    assert np.mean(c_nuc) > np.mean(c_fro) + 0.05
    # the vanishing ridge keeps ||W|| bounded; without it the factors run off
    assert traj.norm[:, -1].max() < 300


def test_batched_run_equals_separate_runs():
    b = _batch(S=3)
    W0 = np.random.default_rng(5).standard_normal((6, 6)) * 0.1
    full = train_attention(b, "W", steps=50, W0=W0, log_every=25)
    for s in range(3):
        one = ProblemBatch(b.X[s:s + 1], b.Y[s:s + 1], b.v[s:s + 1], b.Z[s:s + 1])
        single = train_attention(one, "W", steps=50, W0=W0, log_every=25)
        np.testing.assert_allclose(full.W_final[s], single.W_final[0], rtol=1e-12, atol=1e-14)
        np.testing.assert_array_equal(full.selection[s], single.selection[0])


def test_trajectory_fields_and_unnormalized_gd():
    b = _batch(S=2)
    traj = train_attention(b, "W", steps=30, lr=0.5, normalized=False, log_every=7)
    assert traj.steps.tolist() == [0, 7, 14, 21, 28, 30]
    assert traj.W.shape == (2, 6, 6, 6)
    np.testing.assert_array_equal(traj.W[:, -1], traj.W_final)
    assert traj.loss[:, -1].max() < traj.loss[:, 0].min() + 1e-12 or np.all(
        traj.loss[:, -1] < traj.loss[:, 0])
    assert traj.selection.shape == (2, 4)
    assert len(traj.selected_sets(0.5)[0]) == 4


def test_joint_training_moves_v():
    b = _batch(S=2)
    traj = train_attention(b, "W", steps=50, train_v=True)
    assert not np.allclose(traj.v_final, b.v)
    fixed = train_attention(b, "W", steps=50)
    np.testing.assert_array_equal(fixed.v_final, b.v)


def test_single_problem_and_self_attention():
    p = random_problem(3, 4, 5, seed=0, self_attention=True)
    traj = train_attention(p, "W", steps=20)
    assert traj.W_final.shape == (1, 5, 5)
    np.testing.assert_allclose(ProblemBatch.from_problems(p).Z[0], p.X[:, 0])


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"param": "V"}, ValueError, "param"),
        ({"loss": "hinge"}, ValueError, "loss"),
        ({"head": "deep"}, ValueError, "head"),
        ({"steps": 0}, ValueError, "steps"),
        ({"lr": -1.0}, ValueError, "lr"),
        ({"ridge": 1e-3}, ValueError, "ridge"),
        ({"param": "KQ", "ridge": -1.0}, ValueError, "ridge"),
        ({"head": "mlp", "train_v": True}, ValueError, "train_v"),
        ({"normalized": "yes"}, TypeError, "normalized"),
        ({"W0": np.zeros((2, 2))}, ValueError, "W0"),
    ],
)
def test_bad_options(kwargs, exc, match):
    b = _batch(S=1)
    with pytest.raises(exc, match=match):
        train_attention(b, **kwargs)


def test_bad_problems():
    with pytest.raises(TypeError, match="problems"):
        train_attention([object()])
    with pytest.raises(ValueError, match="shape"):
        train_attention([random_problem(2, 3, 4, seed=0), random_problem(2, 4, 4, seed=0)])
    b = _batch(S=1)
    with pytest.raises(ValueError, match="Y"):
        ProblemBatch(b.X, b.Y * 2, b.v, b.Z)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"param": "KQ", "W0": np.zeros((6, 6))}, "W0"),
        ({"param": "W", "rank": 2}, "rank"),
        ({"head": "linear", "mlp": MLPHead.random(1, 6, 3, 0)}, "mlp"),
    ],
)
def test_ignored_parameters_warn_and_change_nothing(kwargs, name):
    from attnlens.errors import IgnoredParameterWarning

    b = _batch(S=1)
    with pytest.warns(IgnoredParameterWarning, match=f"'{name}'"):
        tr = train_attention(b, steps=5, **kwargs)
    plain = {k: v for k, v in kwargs.items() if k != name}
    ref = train_attention(b, steps=5, **plain)
    np.testing.assert_array_equal(tr.W_final, ref.W_final)


def test_used_parameters_do_not_warn():
    import warnings

    b = _batch(S=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train_attention(b, "W", steps=5, W0=np.zeros((6, 6)))
        train_attention(b, "KQ", steps=5, rank=2)
        train_attention(b, steps=5, head="mlp", mlp=MLPHead.random(1, 6, 3, 0))
