"""Distributional projection lens (Mehta 2025): counts against a naive loop, PMI against its
formula, GloVe against the SVD-of-PMI reference on real movie-review text, the projection
against explicit one-hot matrices, and the symmetric/antisymmetric read-out on a planted form."""

import numpy as np
import pytest

from attnlens.errors import CorpusTooSmallError, InvalidParameterError
from attnlens.lenses import (
    cooccurrence_counts,
    directional_asymmetry,
    distributional_projection,
    double_center,
    fit_bilinear,
    glove_embeddings,
    pair_correlation,
    pmi_matrix,
    split_bilinear,
    svd_embeddings,
)


def _naive_counts(tokens, lengths, v, window, harmonic):
    d = np.zeros((v, v))
    doc = np.repeat(np.arange(len(lengths)), lengths)
    for i in range(len(tokens)):
        for k in range(1, window + 1):
            j = i - k
            if j >= 0 and doc[i] == doc[j] and tokens[i] >= 0 and tokens[j] >= 0:
                d[tokens[i], tokens[j]] += 1 / k if harmonic else 1
    return d


@pytest.mark.parametrize("weighting", ["harmonic", "uniform"])
def test_counts_match_a_naive_loop(weighting):
    rng = np.random.default_rng(0)
    tokens = rng.integers(-1, 7, size=200)
    lengths = np.array([50, 30, 120])
    got = cooccurrence_counts(tokens, 7, 4, lengths=lengths, weighting=weighting)
    assert np.allclose(got, _naive_counts(tokens, lengths, 7, 4, weighting == "harmonic"))


def test_pmi_matches_its_definition():
    rng = np.random.default_rng(1)
    c = rng.integers(0, 20, size=(6, 6)).astype(float) + np.eye(6)
    got = pmi_matrix(c)
    n = c.sum()
    for a in range(6):
        for b in range(6):
            want = np.log(c[a, b] * n / (c[a].sum() * c[:, b].sum())) if c[a, b] else 0.0
            assert got[a, b] == pytest.approx(want)
    assert np.all(pmi_matrix(c, positive=True) >= 0)


@pytest.fixture(scope="module")
def real_counts():
    """Symmetric co-occurrence of the 25 most frequent words in 3,000 Rotten Tomatoes sentences."""
    from collections import Counter

    from attnlens.datasets.text import load_text
    from attnlens.experiments.theory_common import tokenize

    texts = load_text("rotten_tomatoes").texts[:3000]
    toks = [tokenize(t) for t in texts]
    vocab = [w for w, _ in Counter(w for t in toks for w in t).most_common(25)]
    index = {w: i for i, w in enumerate(vocab)}
    ids = np.array([index.get(w, -1) for t in toks for w in t])
    d = cooccurrence_counts(ids, 25, 10, lengths=np.array([len(t) for t in toks]))
    return d + d.T


def test_glove_equals_the_svd_of_the_double_centered_pmi(real_counts):
    # f = 1 on every entry (counts + 1 >= x_max = 1): the GloVe optimum is the rank-d SVD of the
    # double-centered log X, and double centering log X or PMI gives the same matrix
    x = real_counts + 1.0
    g = glove_embeddings(x, 4, x_max=1.0, steps=300, seed=0)
    w, c = svd_embeddings(double_center(pmi_matrix(x)), 4)
    ref = w @ c.T
    got = double_center(g.word @ g.context.T)
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 1e-4
    # and the loss equals the residual the SVD leaves
    resid = double_center(np.log(x)) - ref
    assert g.loss == pytest.approx(np.mean(resid ** 2), rel=1e-6)


def test_projection_equals_explicit_one_hot_products():
    rng = np.random.default_rng(2)
    s = rng.standard_normal((9, 9))
    s = s + s.T
    ids = np.array([3, 1, 3, 8, 0])
    q = np.eye(9)[ids]
    p = distributional_projection(ids, s)
    assert np.allclose(p.interaction, q @ s @ q.T)
    assert np.allclose(p.prediction, q @ s @ q.T @ q @ s)


def test_split_recovers_a_planted_bilinear_form():
    rng = np.random.default_rng(3)
    v, d = 80, 6
    x = rng.standard_normal((v, d))
    s0 = rng.standard_normal((d, d))
    s0 = s0 + s0.T
    a0 = rng.standard_normal((d, d))
    a0 = 0.5 * (a0 - a0.T)
    scores = x @ (s0 + a0) @ x.T + 0.05 * rng.standard_normal((v, v))  # rows = queries
    w = fit_bilinear(x, scores)
    sym, anti = split_bilinear(w)
    assert np.linalg.norm(sym - s0) / np.linalg.norm(s0) < 0.02
    assert np.linalg.norm(anti - a0) / np.linalg.norm(a0) < 0.02
    # read-out on the score matrix itself: each part correlates with its planted form only
    bs, ba = split_bilinear(scores)
    assert pair_correlation(bs, x @ s0 @ x.T).pearson > 0.99
    assert pair_correlation(ba, x @ a0 @ x.T).pearson > 0.97
    assert abs(pair_correlation(ba, x @ s0 @ x.T).pearson) < 0.05


def test_directional_asymmetry_is_antisymmetric_and_signed():
    d = np.array([[0.0, 9.0], [1.0, 0.0]])  # key 1 precedes query 0 nine times, the reverse once
    a = directional_asymmetry(d)
    assert np.allclose(a, -a.T)
    assert a[0, 1] == pytest.approx(np.log(10 / 2))


def test_too_small_corpus_and_bad_input_are_named_errors():
    with pytest.raises(CorpusTooSmallError, match="window"):
        cooccurrence_counts(np.array([0, 1, 2]), 3, 5)
    with pytest.raises(CorpusTooSmallError, match="never co-occur"):
        pmi_matrix(np.array([[1.0, 0.0, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 0.0]]))
    with pytest.raises(InvalidParameterError, match="tokens"):
        cooccurrence_counts(np.array([0, 5, 1, 1]), 3, 1)
    with pytest.raises(InvalidParameterError, match="lengths"):
        cooccurrence_counts(np.array([0, 1, 1, 1]), 3, 1, lengths=np.array([1, 1]))
