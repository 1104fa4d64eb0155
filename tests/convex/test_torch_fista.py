"""backend="torch": the FISTA iterations in torch reach the numpy path's optimum, honestly certified.

On the CPU in float64 (no GPU here or in CI); with a GPU the CUDA case runs too.
"""

import warnings

import numpy as np
import pytest
import torch

from attnlens.convex import certify, solve
from attnlens.convex import torch_fista as tf
from attnlens.convex._linalg import SVT_GRAM_MIN
from attnlens.convex._linalg import svt as svt_numpy
from attnlens.convex.estimators import ConvexAttentionClassifier
from attnlens.convex.nuclear import fista_path
from attnlens.convex.programs import build_program, sample_gates
from attnlens.errors import IgnoredParameterWarning, InvalidParameterError

GPU = torch.cuda.is_available()


def _program(head, activation, n=80, s=5, d=3, c=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, s, d))
    Y = np.eye(c)[rng.integers(0, c, n)]
    groups = 1
    if head == "bfno":
        X, groups = np.concatenate([X, X[:, :, :3] ** 2], axis=2), 3  # d = 6, 3 groups of 2
    gates = (sample_gates(head, 2, X.shape[1], X.shape[2], rng, groups)
             if activation != "linear" else None)
    return build_program(X, head, activation, c, gates=gates, groups=groups), Y


CASES = [("self_attention", "linear", "squared"), ("self_attention", "linear", "cross_entropy"),
         ("self_attention", "gated_relu", "squared"), ("mixer", "linear", "squared"),
         ("mixer", "gated_relu", "squared"), ("fno", "gated_relu", "cross_entropy"),
         ("bfno", "linear", "squared"), ("mlp", "gated_relu", "squared")]


@pytest.mark.parametrize("head,activation,loss", CASES)
def test_torch_fista_reaches_the_numpy_optimum(head, activation, loss):
    prog, Y = _program(head, activation)
    ref = solve(prog, Y, 0.02, loss, solver="fista", tol=1e-7, max_iter=20000)
    res = solve(prog, Y, 0.02, loss, solver="fista", tol=1e-7, max_iter=20000,
                backend="torch", device="cpu")
    assert res.status == "optimal" and res.certificate <= 1e-7
    assert abs(res.objective - ref.objective) <= 1e-7 * abs(ref.objective)
    for z, z_ref in zip(res.Z, ref.Z, strict=True):
        assert z.dtype == np.float64 and z.shape == z_ref.shape
    # the reported certificate is the float64 numpy one of the returned blocks (to rounding:
    # the matrix-free gated operator's products depend on the memory free for its cache)
    primal, dual, cert, ratio = certify(prog, res.Z, Y, 0.02, loss)
    np.testing.assert_allclose([res.objective, res.dual_objective], [primal, dual], rtol=1e-12)
    assert abs(res.certificate - cert) <= 1e-12
    assert res.dual_objective <= res.objective and ratio <= 1 + 1e-3


def test_continuation_path_in_torch_matches_numpy():
    prog, Y = _program("self_attention", "linear", n=120)
    ref = fista_path(prog, Y, 1e-3, "squared", tol=1e-6, max_iter=20000)
    res = fista_path(prog, Y, 1e-3, "squared", tol=1e-6, max_iter=20000, backend="torch",
                     device="cpu")
    assert res.method == ref.method == "fista-path"
    assert res.certificate <= 1e-6 and abs(res.objective - ref.objective) <= 2e-6 * ref.objective
    # "auto" with backend="torch" is the path (SSNAL, numpy only, is not used)
    auto = solve(prog, Y, 1e-3, "squared", tol=1e-6, max_iter=20000, backend="torch",
                 device="cpu")
    assert auto.method == "fista-path" and auto.certificate <= 1e-6


def test_operator_and_prox_equal_the_numpy_ones():
    rng = np.random.default_rng(1)
    for head, activation in [("self_attention", "linear"), ("mixer", "linear"),
                             ("self_attention", "gated_relu"), ("mlp", "gated_relu")]:
        prog, _ = _program(head, activation, n=30)
        op = tf.TorchProgram(prog, "cpu")
        x = rng.standard_normal(op.size)
        R = rng.standard_normal((30, 3))
        np.testing.assert_allclose(op.forward(op.tensor(x)).numpy(), prog.forward_flat(x),
                                   rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(op.adjoint(op.tensor(R)).numpy(), prog.adjoint_flat(R),
                                   rtol=1e-12, atol=1e-12)
        if op.gram is not None:
            np.testing.assert_allclose(op.normal(op.tensor(x)).numpy(), prog.normal_flat(x),
                                       rtol=1e-10, atol=1e-10)
    for shape in [(7, 1), (12, 9), (SVT_GRAM_MIN + 4, SVT_GRAM_MIN + 1), (40, 90)]:
        Z = rng.standard_normal((3, *shape))
        tau = float(np.median(np.linalg.svd(Z[0], compute_uv=False)))
        got = tf.svt(torch.as_tensor(Z), tau).numpy()
        for j in range(3):
            np.testing.assert_allclose(got[j], svt_numpy(Z[j], tau), atol=1e-10)


def test_an_optimistic_device_certificate_is_never_reported(monkeypatch):
    """A device check claiming optimality is confirmed in float64 numpy before stopping."""
    prog, Y = _program("self_attention", "linear")
    monkeypatch.setattr(tf, "device_certificate",
                        lambda op, x, Yt, beta, loss: (0.0, 0.0))  # "optimal" at every check
    with pytest.warns(Warning, match="certificate"):
        res = solve(prog, Y, 0.02, "squared", solver="fista", tol=1e-7, max_iter=20,
                    backend="torch", device="cpu")
    assert res.status == "max_iter" and res.certificate > 1e-7
    assert abs(res.certificate - certify(prog, res.Z, Y, 0.02, "squared")[2]) <= 1e-12


def test_estimator_on_the_torch_backend():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((60, 4, 3))
    y = (X[:, :, 0].mean(1) > 0).astype(int)
    kw = dict(beta=0.05, tol=1e-7, max_iter=20000, random_state=0)
    ref = ConvexAttentionClassifier(**kw).fit(X, y)
    got = ConvexAttentionClassifier(**kw, backend="torch", device="cpu").fit(X, y)
    assert got.certificate_ <= 1e-7
    assert abs(got.objective_ - ref.objective_) <= 1e-7 * ref.objective_
    scores, ref_scores = got.decision_function(X), ref.decision_function(X)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-3 * np.abs(ref_scores).max())


def test_backend_choices_and_refusals_are_named():
    prog, Y = _program("self_attention", "linear")
    with pytest.raises(InvalidParameterError, match=r"backend must be one of .*'numpy'.*'torch'"):
        solve(prog, Y, 0.02, backend="jax")
    with pytest.raises(InvalidParameterError, match=r"solver must be one of \['auto', 'fista'\] "
                                                    "with backend='torch'; got 'bm'"):
        solve(prog, Y, 0.02, solver="bm", backend="torch", device="cpu")
    with pytest.warns(IgnoredParameterWarning, match="device"):
        solve(prog, Y, 0.5, device="cpu")
    relu, _ = _program("mlp", "relu")
    with pytest.raises(InvalidParameterError, match="backend must be 'numpy' for a ReLU"):
        solve(relu, Y, 0.02, backend="torch", device="cpu")
    with pytest.raises(InvalidParameterError, match="backend"):
        ConvexAttentionClassifier(backend="cupy").fit(np.ones((4, 2, 2)), [0, 1, 0, 1])


@pytest.mark.skipif(GPU, reason="checks the refusal on a machine without a GPU")
def test_cuda_without_a_gpu_is_a_named_error():
    prog, Y = _program("self_attention", "linear")
    with pytest.raises(InvalidParameterError, match="solve: device must be .*got 'cuda'"):
        solve(prog, Y, 0.02, backend="torch", device="cuda")


@pytest.mark.skipif(not GPU, reason="needs a GPU (torch.cuda.is_available())")
@pytest.mark.parametrize("head,activation", [("self_attention", "linear"), ("mlp", "gated_relu")])
def test_the_gpu_reaches_the_cpu_optimum(head, activation):
    prog, Y = _program(head, activation)
    ref = solve(prog, Y, 0.02, solver="fista", tol=1e-7, max_iter=20000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = solve(prog, Y, 0.02, solver="fista", tol=1e-7, max_iter=20000, backend="torch",
                    device="cuda")
    assert res.certificate <= 1e-7
    assert abs(res.objective - ref.objective) <= 1e-7 * abs(ref.objective)
