"""The OT lens callback on the small tabular transformer: it records one entry per epoch, the
recorded metrics equal an independent recomputation, and the transformer learns."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from attnlens.datasets.tabular import load_tabular
from attnlens.tabular import OTLensCallback, TabularTransformerClassifier
from attnlens.tabular.transformer import self_attention


def test_callback_records_every_epoch_and_matches_a_recomputation():
    data = load_tabular("wine")
    cb = OTLensCallback(data.X, max_rows=8)
    clf = TabularTransformerClassifier(dim=8, epochs=15, callbacks=[cb], random_state=0)
    clf.fit(data.X, data.y)
    traj = cb.trajectory()
    assert traj.epochs == list(range(16))
    assert clf.score(data.X, data.y) > 0.9
    # last epoch, recomputed: with uniform weights and n = m the OT plan is a permutation, so
    # W_2^2 is the optimal assignment (Hungarian, scipy) of the tokens to the outputs
    with torch.no_grad():
        X = torch.as_tensor(clf.scaler_.transform(data.X[:8]), dtype=torch.float32)
        T = clf.net_.tokens(X)
        S, A = self_attention(T, clf.net_.Wq, clf.net_.Wk, clf.net_.Wv, clf.net_.Wo)
    T, S = T.double().numpy(), S.double().numpy()
    W, cost = [], []
    for i in range(8):
        C = ((T[i][:, None] - S[i][None]) ** 2).sum(-1)
        r, c = linear_sum_assignment(C)
        W.append(C[r, c].mean())
        cost.append(np.mean(((T[i] - S[i]) ** 2).sum(-1)))
    assert traj.wasserstein[-1] == pytest.approx(np.mean(W), rel=1e-6)
    assert traj.transport_cost[-1] == pytest.approx(np.mean(cost), rel=1e-6)
    assert 0 <= traj.path_efficiency <= 1
    assert all(0 <= o <= 1 for o in traj.optimality)
