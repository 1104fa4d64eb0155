"""The official TF-as-SVM data generator and the official-style reference loop.

The generator is checked bit for bit against a literal transcription of the notebook's
``data_generator`` (umich-sota/TF-as-SVM, local_converge.ipynb); the loop against attnlens's
batched analytic solver from the same initialization (two independent gradient paths), against
the Att-SVM solution of its own selection, and for its per-parameter normalization.
"""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from attnlens.cli import app
from attnlens.errors import RunFolderMismatchError
from attnlens.experiments import get, load
from attnlens.svm import (
    ProblemBatch,
    correlation,
    official_problem,
    reference_train,
    svm_solution,
    train_attention,
)
from attnlens.svm.dynamics.reference_loop import OFFICIAL_EPS

# the notebook's globals
n, T, d = 6, 8, 10


def data_generator(seed):  # transcribed from local_converge.ipynb, cell 1
    generator = torch.Generator()
    generator.manual_seed(seed)
    v = torch.randn((d), generator=generator)
    v /= torch.norm(v)
    Y = 2 * torch.ones(n) * (torch.randn(n, generator=generator) > 0) - 1
    X = torch.randn((n, T, d), generator=generator)
    X /= torch.norm(X, dim=-1, keepdim=True)
    Z = torch.randn((n, d), generator=generator)
    Z /= torch.norm(Z, dim=-1, keepdim=True)
    best_ids = ((X @ v) * Y.view(-1, 1)).argmax(dim=-1)
    return X, Y, Z, v, best_ids


@pytest.mark.parametrize("seed", [0, 4, 57, 99])
def test_official_problem_is_the_notebooks_data_bit_for_bit(seed):
    X, Y, Z, v, best = data_generator(seed)
    X, Y, Z, v = X.double(), Y.double(), Z.double(), v.double()  # as the notebook casts
    p = official_problem(seed)
    for ours, theirs in ((p.X, X), (p.Y, Y), (p.queries, Z), (p.v, v)):
        assert ours.dtype == np.float64
        assert np.array_equal(ours, theirs.numpy())
    assert np.array_equal(p.optimal_tokens, best.numpy())
    batch = ProblemBatch.official([seed, seed + 1])
    assert np.array_equal(batch.X[0], p.X) and batch.seeds == [seed, seed + 1]
    assert not np.array_equal(batch.X[1], p.X)


def test_reference_loop_follows_the_batched_solver_until_saturation_and_converges():
    """Same data, same W0, float64: the two gradient paths agree to 1e-4 for 1000 steps; the
    reference loop ends aligned with W^mm of the selection it converged to."""
    batch = ProblemBatch.official([0, 4])
    W0 = 0.1 * np.random.default_rng(0).standard_normal((2, d, d))
    ref = reference_train(batch, "W", W0=W0, log_every=100)
    ours = train_attention(batch, "W", W0=W0, log_every=100)
    assert np.array_equal(ref.steps, ours.steps)
    early = ref.steps <= 1000
    agree = np.array([[correlation(ref.W[s, k], ours.W[s, k]) for k in range(len(ref.steps))]
                      for s in range(2)])
    assert agree[:, early].min() > 0.9999
    for s in range(2):
        W_mm = svm_solution(batch.X[s], batch.Z[s], ref.selection[s], "fro")
        assert correlation(ref.W_final[s], W_mm) >= 0.99


def test_reference_normalizes_K_and_Q_each_while_attnlens_normalizes_them_jointly():
    batch = ProblemBatch.official([3])
    rng = np.random.default_rng(1)
    K0, Q0 = (0.1 * rng.standard_normal((1, d, d)) for _ in range(2))
    ref = reference_train(batch, "KQ", K0=K0, Q0=Q0, steps=1, lr=0.1)
    ours = train_attention(batch, "KQ", steps=1, lr=0.1, ridge=OFFICIAL_EPS, random_state=1)
    assert np.allclose(ours.W[:, 0], K0 @ Q0.transpose(0, 2, 1))  # same start
    dK_ref, dQ_ref = ref.K_final - K0, ref.Q_final - Q0
    dK, dQ = ours.K_final - K0, ours.Q_final - Q0
    assert np.linalg.norm(dK_ref) == pytest.approx(0.1, rel=1e-12)
    assert np.linalg.norm(dQ_ref) == pytest.approx(0.1, rel=1e-12)
    assert np.hypot(np.linalg.norm(dK), np.linalg.norm(dQ)) == pytest.approx(0.1, rel=1e-12)
    assert abs(np.linalg.norm(dK) - 0.1) > 1e-3  # the joint step is not the separate one
    # same gradient directions (autograd vs the analytic gradient)
    assert correlation(dK_ref[0], dK[0]) == pytest.approx(1.0, abs=1e-10)
    assert correlation(dQ_ref[0], dQ[0]) == pytest.approx(1.0, abs=1e-10)


def test_reference_selection_is_the_last_forward_pass_and_default_init_is_nn_linear():
    batch = ProblemBatch.official([7])
    ref = reference_train(batch, "W", steps=5, log_every=1, random_state=3)
    again = reference_train(batch, "W", steps=5, log_every=1, random_state=3)
    assert np.array_equal(ref.W, again.W)
    assert np.abs(ref.W[0, 0]).max() <= 1 / np.sqrt(d)  # nn.Linear: U(-1/sqrt(d), 1/sqrt(d))
    W4 = ref.W[0, 4]  # after 4 updates: the weights of the 5th (last) forward pass
    scores = np.einsum("itd,id->it", batch.X[0], batch.Z[0] @ W4.T)
    assert np.array_equal(ref.selection[0], scores.argmax(axis=1))
    probs = np.exp(scores - scores.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    assert ref.prob_max[0, 4] == pytest.approx(probs.max(1).mean(), rel=1e-12)


def test_experiments_take_the_official_data(tmp_path):
    load("svm")
    small = dict(seeds=2, steps=100, chunk=2, progress=False)
    out = tmp_path / "lc"
    metrics = get("svm", "local-convergence")(out, data="official", **small)
    assert metrics["data"] == "official"
    assert json.loads((out / "config.json").read_text())["data"] == "official"
    with pytest.raises(RunFolderMismatchError):
        get("svm", "local-convergence")(out, **small)  # attnlens data: another config
    res = CliRunner().invoke(app, ["svm", "reproduce", "rank", "--data", "official",
                                   "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "does not take --data" in res.output
