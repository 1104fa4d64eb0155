"""NPT estimators: the lookup table and NPT's use of context rows, the pieces of the model and
optimizer against independent computations, learning on real tables, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attnlens.datasets.tabular import load_tabular
from attnlens.errors import InvalidParameterError, MemoryBudgetError
from attnlens.tabular import NPTClassifier, NPTRegressor, make_lookup_table
from attnlens.tabular.npt_model import multihead_attention
from attnlens.tabular.optim import Lamb

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

def test_lookup_table_defeats_pointwise_models_and_npt_reads_the_context_rows():
    """The probe's table is unpredictable row by row (MLP, gradient boosting at chance), and NPT's
    prediction for a query depends on the target carried by another row in context.

    (An untrained-for-lookup NPT, 5 steps: this pins the mechanism, changing only the
    duplicate's target changes the query's predicted probabilities. That NPT *learns* to copy
    the duplicate is pinned in test_lookup.py.)
    """
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.neural_network import MLPClassifier

    data = load_tabular("breast_cancer")
    table = make_lookup_table(data.X[:, :8], n_pairs=48, n_query=32, n_classes=2,
                              random_state=0)
    # 32 queries at chance 0.5 reach >= 0.8 with probability < 1e-3 (binomial tail)
    for model in (MLPClassifier(hidden_layer_sizes=(64,), max_iter=300, random_state=0),
                  HistGradientBoostingClassifier(random_state=0)):
        assert model.fit(table.X_train, table.y_train).score(table.X_query, table.y_query) < 0.8
    npt = NPTClassifier(dim=8, depth=2, n_heads=2, n_steps=5, random_state=0)
    npt.fit(table.X_train, table.y_train)
    q = table.X_query[:1]
    p_true = npt.predict_proba(q, context=(table.X_context[:1], table.y_context[:1]))
    p_flip = npt.predict_proba(q, context=(table.X_context[:1], 1 - table.y_context[:1]))
    p_none = npt.predict_proba(q)
    assert np.abs(p_true - p_flip).max() > 1e-6
    assert not np.allclose(p_true, p_none)


def test_attention_scaling_matches_an_explicit_softmax():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 5, 12, generator=g) for _ in range(3))
    out = multihead_attention(q, k, v, n_heads=3, scale_dim=12)
    ref = []
    for h in range(3):
        sl = slice(4 * h, 4 * h + 4)
        A = torch.softmax(q[..., sl] @ k[..., sl].transpose(1, 2) / np.sqrt(12), -1)
        ref.append(A @ v[..., sl])
    assert torch.allclose(out, torch.cat(ref, -1), atol=1e-6)


def test_lamb_step_matches_the_formula():
    p = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
    p.grad = torch.tensor([0.5, -1.0])
    Lamb([p], lr=0.1, eps=0.0).step()
    m = 0.1 * np.array([0.5, -1.0])
    v = 0.001 * np.array([0.25, 1.0])
    u = m / np.sqrt(v)
    expected = np.array([3.0, 4.0]) - 0.1 * (5.0 / np.linalg.norm(u)) * u
    assert np.allclose(p.detach().numpy(), expected, atol=1e-6)


def test_regressor_learns_diabetes_better_than_the_mean():
    data = load_tabular("diabetes")
    X, y = data.X[:300], data.y[:300]
    reg = NPTRegressor(dim=8, depth=2, n_heads=4, n_steps=60, lr=3e-3, random_state=0)
    reg.fit(X[:200], y[:200])
    assert reg.score(X[200:], y[200:]) > 0.2  # R^2 of the training mean is <= 0


def test_categorical_columns_and_unseen_categories():
    from sklearn.model_selection import train_test_split

    data = load_tabular("penguins")
    Xtr, Xte, ytr, yte = train_test_split(data.X, data.y, test_size=0.3, random_state=0,
                                          stratify=data.y)
    clf = NPTClassifier(dim=8, depth=2, n_heads=4, n_steps=80, lr=1e-2, tradeoff=0.5,
                        categorical_features=list(data.categorical), random_state=0)
    clf.fit(Xtr, ytr)
    assert clf.score(Xte, yte) > 0.9  # majority class: 0.44
    X_bad = Xte[:10].copy()
    X_bad[0, data.categorical[0]] = 99.0
    with pytest.raises(InvalidParameterError, match="unseen"):
        clf.predict(X_bad)


def test_bad_input_is_named():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(20, 3)), np.arange(20) % 2
    Xn = X.copy()
    Xn[1, 1] = np.nan
    with pytest.raises(InvalidParameterError, match="NaN"):
        NPTClassifier(n_steps=1).fit(Xn, y)
    with pytest.raises(InvalidParameterError, match="one class"):
        NPTClassifier(n_steps=1).fit(X, np.zeros(20))
    with pytest.raises(MemoryBudgetError, match="dim"):
        NPTClassifier(dim=64, memory_budget_gb=0.5).fit(rng.normal(size=(20, 400)), y)
    with pytest.raises(InvalidParameterError, match="target_mask_prob"):
        NPTClassifier(target_mask_prob=0.0).fit(X, y)
    clf = NPTClassifier(dim=4, depth=2, n_heads=2, n_steps=1, random_state=0).fit(X, y)
    with pytest.raises(InvalidParameterError, match="NaN"):  # at prediction too
        clf.predict(Xn)
    with pytest.raises(InvalidParameterError, match="NaN"):  # in extra context rows
        clf.predict(X[:2], context=(Xn, y))
    y_nan = rng.normal(size=20)
    y_nan[3] = np.nan
    with pytest.raises(InvalidParameterError, match="finite"):
        NPTRegressor(n_steps=1).fit(X, y_nan)


def test_early_stopping_restores_the_best_validation_checkpoint():
    """The returned weights are the best evaluated ones: the validation loss recomputed on the
    fitted model equals the minimum of the recorded curve, and training stopped within
    ``n_iter_no_change`` evaluations of that best step (or at n_steps)."""
    data = load_tabular("breast_cancer")
    X, y = data.X[:200, :6], data.y[:200]
    clf = NPTClassifier(dim=8, depth=2, n_heads=4, n_steps=200, lr=2e-2, eval_every=5,
                        n_iter_no_change=3, validation_fraction=0.2, random_state=0).fit(X, y)
    val = clf.validation_rows_
    assert len(val) == 40 and len(clf.validation_loss_curve_) >= 1
    train = np.setdiff1d(np.arange(200), val)
    # an independent path: the estimator's own predict with the training part as the table
    clf_ctx = NPTClassifier(**clf.get_params())
    clf_ctx.__dict__.update({k: v for k, v in clf.__dict__.items() if k.endswith("_")})
    clf_ctx.X_train_, clf_ctx.t_train_ = X[train], clf.t_train_[train]
    proba = clf_ctx.predict_proba(X[val])
    nll = -np.mean(np.log(proba[np.arange(40), np.searchsorted(clf.classes_, y[val])]))
    assert nll == pytest.approx(min(clf.validation_loss_curve_), rel=1e-4)
    assert clf.n_iter_ == 200 or clf.n_iter_ == clf.best_step_ + 3 * 5
