"""Reduction of token features: group averages nest, PCA matches scikit-learn, masks hold."""

import numpy as np
import pytest
from sklearn.decomposition import PCA

from attnlens.errors import NotFittedError
from attnlens.transfer.reduce import TokenPCA, group_average, masked_mean, reduce_tokens


def _loop_group_average(x, d):
    g = x.shape[-1] // d
    out = np.zeros(x.shape[:-1] + (d,))
    for k in range(d):
        for j in range(g):
            out[..., k] += x[..., k * g + j]
    return out / g


def test_group_average_matches_loop_and_nests():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 5, 384))
    for d in (16, 32, 64):
        np.testing.assert_allclose(group_average(x, d), _loop_group_average(x, d), atol=1e-12)
    # 384 -> 64 -> 32 equals 384 -> 32: a cache may store d=64 and derive d=32, 16 exactly
    np.testing.assert_allclose(group_average(group_average(x, 64), 32), group_average(x, 32),
                               atol=1e-12)
    np.testing.assert_allclose(group_average(group_average(x, 64), 16), group_average(x, 16),
                               atol=1e-12)


def test_group_average_rejects_non_divisor():
    with pytest.raises(ValueError, match="must divide"):
        group_average(np.zeros((2, 3, 384)), 100)


def test_masked_mean_matches_loop():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 6, 3))
    mask = rng.random((4, 6)) > 0.4
    mask[:, 0] = True
    want = np.stack([x[b][mask[b]].mean(axis=0) for b in range(4)])
    np.testing.assert_allclose(masked_mean(x, mask), want, atol=1e-12)


def test_token_pca_matches_sklearn_on_valid_tokens():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(20, 7, 12)) @ rng.normal(size=(12, 12))
    mask = rng.random((20, 7)) > 0.3
    pca = TokenPCA(5).fit(x, mask)
    ref = PCA(5, svd_solver="full").fit(x[mask])
    for a, b in zip(pca.components_, ref.components_, strict=True):
        assert abs(abs(a @ b) - 1.0) < 1e-8  # same direction up to sign
    np.testing.assert_allclose(pca.explained_variance_, ref.explained_variance_, rtol=1e-8)
    z = pca.transform(x, mask)
    signs = np.sign(np.sum(pca.components_ * ref.components_, axis=1))
    np.testing.assert_allclose(z[mask], ref.transform(x[mask]) * signs, atol=1e-8)
    assert np.all(z[~mask] == 0)


def test_token_pca_errors():
    with pytest.raises(NotFittedError):
        TokenPCA(2).transform(np.zeros((1, 2, 3)))
    with pytest.raises(ValueError, match="n_components"):
        TokenPCA(10).fit(np.zeros((1, 2, 3)), np.ones((1, 2), bool))


def test_reduce_tokens_zeroes_padding_and_checks_method():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 4, 64))
    mask = np.array([[1, 1, 0, 0], [1, 1, 1, 0]], bool)
    r = reduce_tokens(x, mask, 16)
    assert r.shape == (2, 4, 16) and np.all(r[~mask] == 0)
    np.testing.assert_allclose(r[mask], group_average(x, 16)[mask])
    np.testing.assert_allclose(reduce_tokens(x, mask, 8, "pca")[mask], x[..., :8][mask])
    with pytest.raises(ValueError, match="method"):
        reduce_tokens(x, mask, 16, "svd")
    with pytest.raises(ValueError, match="exceeds"):
        reduce_tokens(x, mask, 128, "pca")


def test_pool_tokens_matches_loop_and_respects_mask():
    from attnlens.transfer.reduce import pool_tokens

    rng = np.random.default_rng(4)
    x = rng.normal(size=(3, 10, 5)).astype(np.float32)
    mask = np.zeros((3, 10), bool)
    for b, n in enumerate((10, 7, 1)):
        mask[b, :n] = True
    x *= mask[..., None]
    out, m = pool_tokens(x, mask, 4)
    assert out.shape == (3, 3, 5) and out.dtype == np.float32
    for b in range(3):
        for g in range(3):
            rows = [t for t in range(4 * g, min(4 * g + 4, 10)) if mask[b, t]]
            assert m[b, g] == bool(rows)
            want = x[b, rows].mean(axis=0) if rows else np.zeros(5)
            np.testing.assert_allclose(out[b, g], want, atol=1e-6)
    same, same_mask = pool_tokens(x, mask, 1)
    assert same is x and same_mask is mask
    with pytest.raises(ValueError, match="token_pool"):
        pool_tokens(x, mask, 0)
