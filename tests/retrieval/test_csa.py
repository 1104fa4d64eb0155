"""CSA: affinity features, the loss against the official expression, the re-ranker's pipeline
against a direct recomputation, training lowering the loss, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from attnlens.errors import InvalidParameterError, NotFittedError
from attnlens.retrieval import (
    CSAReranker,
    CSATransformer,
    affinity_features,
    csa_loss,
    first_stage_ranking,
)
from attnlens.retrieval.csa import training_lists

SEED = 5


def test_affinity_features_against_explicit_dot_products():
    rng = np.random.default_rng(SEED)
    Q, G = rng.standard_normal((3, 6)), rng.standard_normal((25, 6))
    r = first_stage_ranking(Q, G, 10)
    got = affinity_features(Q, G, r, n_anchors=4)
    unit = lambda v: v / np.linalg.norm(v)  # noqa: E731
    for i in range(3):
        members = [Q[i]] + [G[g] for g in r[i]]
        anchors = members[:4]
        want = [[unit(m) @ unit(a) for a in anchors] for m in members]
        np.testing.assert_allclose(got[i], want, atol=1e-6)
    with pytest.raises(InvalidParameterError, match="n_anchors"):
        affinity_features(Q, G, r, n_anchors=12)


def test_loss_equals_the_official_expression():
    """train.py: mean(-log(sum(exp_sim * targets) / sum(exp_sim))) + alpha * clamped MSE."""
    gen = torch.Generator().manual_seed(SEED)
    refined = torch.randn(4, 9, 16, generator=gen, dtype=torch.float64)
    projected = torch.randn(4, 9, 5, generator=gen, dtype=torch.float64)
    affinity = torch.randn(4, 9, 5, generator=gen, dtype=torch.float64)
    targets = (torch.rand(4, 9, generator=gen) > 0.5).double()
    targets[:, 0] = 1.0
    total, con, mse = csa_loss(refined, projected, affinity, targets, temperature=2.0,
                               alpha=0.2)
    nx = torch.nn.functional.normalize(refined, dim=-1)
    exp_sim = torch.exp(torch.sum(nx[:, 0, :].unsqueeze(1) * nx, dim=-1) / 2.0)
    want_con = torch.mean(-1.0 * torch.log(torch.sum(exp_sim * targets, dim=-1)
                                           / torch.sum(exp_sim, dim=-1)))
    norm = torch.nn.functional.normalize
    want_mse = torch.pow(norm(affinity, dim=-1) - norm(projected, dim=-1), 2).sum(
        dim=-1).clamp(min=1e-4, max=1e4).sqrt().mean()
    torch.testing.assert_close(con, want_con)
    torch.testing.assert_close(mse, want_mse)
    torch.testing.assert_close(total, want_con + 0.2 * want_mse)


def test_the_model_is_permutation_equivariant_over_candidates():
    """Why the official loader's shuffle of candidates is dropped: it changes nothing."""
    torch.manual_seed(SEED)
    model = CSATransformer(n_anchors=6, dim=16, depth=2, heads=2).eval()
    x = torch.randn(2, 8, 6)
    perm = torch.cat([torch.zeros(1, dtype=torch.long), torch.randperm(7) + 1])
    with torch.no_grad():
        torch.testing.assert_close(model.scores(x[:, perm]), model.scores(x)[:, perm[1:] - 1],
                                   atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(SEED)
    train = np.flatnonzero(y < 5)[:300]
    test = rng.permutation(np.flatnonzero(y >= 5))[:200]
    return X[train], y[train], X[test[:40]], X[test[40:]]


@pytest.fixture(scope="module")
def fitted(digits):
    Xtr, ytr, _, _ = digits
    return CSAReranker(k=30, l=8, dim=16, heads=2, depth=1, epochs=2, batch_size=50,
                       n_threads=1, random_state=SEED).fit(Xtr, ytr)


def test_rerank_equals_a_direct_recomputation(fitted, digits):
    _, _, Q, G = digits
    r = first_stage_ranking(Q, G, 30)
    out = fitted.rerank(Q, G, r)
    assert all(set(out[i]) == set(r[i]) for i in range(len(Q)))
    unit = lambda v: v / np.linalg.norm(v, axis=-1, keepdims=True)  # noqa: E731
    i = 3
    members = unit(np.concatenate([Q[i:i + 1], G[r[i]]]))  # (31, d)
    raw = members @ members[:8].T  # (31, 8)
    aff = torch.as_tensor(raw - raw.mean(axis=0), dtype=torch.float32)[None]  # centered list
    with torch.no_grad():
        z = fitted.model_.encoder(fitted.model_.proj(aff))[0]  # eval: dropout is identity
    z = torch.nn.functional.normalize(z, dim=-1)
    want = r[i][np.argsort(-(z[1:] @ z[0]).numpy(), kind="stable")]
    np.testing.assert_array_equal(out[i], want)


def test_training_lowers_the_loss_on_the_training_lists(fitted, digits):
    Xtr, ytr, _, _ = digits
    Xn = Xtr / np.linalg.norm(Xtr, axis=1, keepdims=True)
    cand = training_lists(Xn, 30)
    np.testing.assert_array_equal(cand, np.argsort(-(Xn @ Xn.T - 3 * np.eye(len(Xn))),
                                                   axis=1, kind="stable")[:, :30])
    untrained = CSAReranker(k=30, l=8, dim=16, heads=2, depth=1, epochs=1, lr=1e-12,
                            batch_size=50, n_threads=1, random_state=SEED).fit(Xtr, ytr)

    def loss(model):
        members = np.concatenate([Xn[:, None], Xn[cand]], axis=1)
        raw = np.einsum("nkd,nld->nkl", members, members[:, :8])
        aff = torch.as_tensor(raw - raw.mean(axis=1, keepdims=True), dtype=torch.float32)
        rel = torch.as_tensor(np.concatenate([np.ones((len(Xn), 1)),
                                              ytr[cand] == ytr[:, None]], axis=1))
        with torch.no_grad():
            return float(csa_loss(*model(aff), aff, rel)[0])

    assert loss(fitted.model_) < loss(untrained.model_) - 0.05


def test_bad_input(fitted, digits):
    _, _, Q, G = digits
    r = first_stage_ranking(Q, G, 30)
    with pytest.raises(NotFittedError):
        CSAReranker().rerank(Q, G, r)
    with pytest.raises(InvalidParameterError, match="ranking"):
        fitted.rerank(Q, G, r[:, :5])  # shorter than the anchors
    with pytest.raises(InvalidParameterError, match="G"):
        fitted.rerank(Q, G[:, :10], r)
    with pytest.raises(InvalidParameterError, match="k must be an int <"):
        CSAReranker(k=400).fit(Q, np.arange(len(Q)))
    with pytest.raises(InvalidParameterError, match="l must be"):
        CSAReranker(k=10, l=30).fit(G, np.arange(len(G)) % 3)
