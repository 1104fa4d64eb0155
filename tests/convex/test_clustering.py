import numpy as np

from attnlens.convex import ConvexAttentionClassifier
from attnlens.convex.clustering import block_diagonal_tokens, off_block_fraction


def test_block_diagonal_grams_give_block_diagonal_Z():
    rng = np.random.default_rng(0)
    X, y = block_diagonal_tokens(80, 6, 4, 2, 2, rng)
    G = np.einsum("nta,ntb->nab", X, X)
    assert np.abs(G[:, :2, 2:]).max() == 0  # the premise: block-diagonal Grams
    clf = ConvexAttentionClassifier(beta=0.01, tol=1e-9, max_iter=20000).fit(X, y)
    Z = clf.Z_[0]
    assert off_block_fraction(Z, 4, 2, 2) < 1e-8
    # control: generic (correlated) tokens give a dense Z
    Xg = rng.standard_normal(X.shape)
    clf2 = ConvexAttentionClassifier(beta=0.01, tol=1e-7, max_iter=20000).fit(Xg, y)
    assert off_block_fraction(clf2.Z_[0], 4, 2, 2) > 0.05
