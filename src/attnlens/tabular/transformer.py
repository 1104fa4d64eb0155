r"""A small tabular transformer (feature tokens, one self-attention layer) with epoch callbacks.

Each feature :math:`j` of a row becomes a token :math:`t_j = x_j w_j + b_j \in \mathbb R^E`
(per-feature linear tokenizer, as FT-Transformer, Gorishniy et al. 2021); one self-attention
layer :math:`S = \mathrm{softmax}(T W_Q (T W_K)^\top / \sqrt E)\, T W_V W_O`; then
:math:`H = \mathrm{LN}(T + S)`, mean over tokens, and an MLP head. This is the model whose
self-attention projections Candelieri & Quadrio track with OT metrics (their model is in R and
unpublished; this one is ours). Scores convention: ``score = t_q^T W_Q W_K^T t_k``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted
from torch import nn

from attnlens._validation import (
    Integral,
    Interval,
    ParamsValidatedMixin,
    RandomState,
    Real,
)
from attnlens.tabular._checks import check_class_labels, check_X_finite


def self_attention(T: torch.Tensor, Wq: torch.Tensor, Wk: torch.Tensor, Wv: torch.Tensor,
                   Wo: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Single-head self-attention over tokens: returns (output (N, D, E), attention (N, D, D))."""
    Q, K, V = T @ Wq, T @ Wk, T @ Wv  # (N, D, E) each
    A = torch.softmax(Q @ K.transpose(1, 2) / math.sqrt(T.shape[-1]), dim=-1)  # (N, D, D)
    return A @ V @ Wo, A  # (N, D, E), (N, D, D)


class TabularTransformerNet(nn.Module):
    """Tokenizer, one self-attention layer, mean pooling, MLP head."""

    def __init__(self, n_features: int, n_classes: int, dim: int, hidden: int) -> None:
        super().__init__()
        self.tok_w = nn.Parameter(torch.randn(n_features, dim) / math.sqrt(dim))
        self.tok_b = nn.Parameter(torch.zeros(n_features, dim))
        self.Wq, self.Wk, self.Wv, self.Wo = (
            nn.Parameter(torch.randn(dim, dim) / math.sqrt(dim)) for _ in range(4))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, n_classes))

    def tokens(self, X: torch.Tensor) -> torch.Tensor:  # X: (N, D) -> (N, D, E)
        return X[:, :, None] * self.tok_w + self.tok_b

    def attention(self, X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(tokens, self-attention output, attention weights) of rows X."""
        T = self.tokens(X)
        S, A = self_attention(T, self.Wq, self.Wk, self.Wv, self.Wo)
        return T, S, A

    def forward(self, X: torch.Tensor) -> torch.Tensor:  # (N, D) -> (N, n_classes)
        T, S, _ = self.attention(X)
        return self.head(self.norm(T + S).mean(1))


class TabularTransformerClassifier(ParamsValidatedMixin, ClassifierMixin, BaseEstimator):
    """The small tabular transformer as a scikit-learn classifier (AdamW, minibatches).

    ``callbacks``: callables ``cb(epoch, estimator)`` run after each epoch (and with epoch 0
    before training), e.g. :class:`attnlens.tabular.ot_lens.OTLensCallback`.
    Fitted: ``classes_``, ``net_``, ``scaler_``, ``loss_curve_``, ``fit_seconds_``.
    """

    _parameter_constraints = {
        "dim": [Interval(Integral, 1, None)],
        "hidden": [Interval(Integral, 1, None)],
        "epochs": [Interval(Integral, 1, None)],
        "batch_size": [Interval(Integral, 1, None)],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "weight_decay": [Interval(Real, 0, None)],
        "callbacks": [None, list, tuple],
        "random_state": [RandomState()],
    }

    def __init__(self, dim=16, hidden=64, epochs=60, batch_size=64, lr=3e-3, weight_decay=1e-4,
                 callbacks=None, random_state=None):
        self.dim = dim
        self.hidden = hidden
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.callbacks = callbacks
        self.random_state = random_state

    def _seed(self) -> int:
        rs = self.random_state
        if isinstance(rs, np.random.Generator):
            return int(rs.integers(0, 2**31 - 1))
        return int(np.random.SeedSequence(rs).generate_state(1)[0]) if rs is None else int(rs)

    def fit(self, X, y) -> TabularTransformerClassifier:
        self._check_params()
        caller = type(self).__name__
        X = check_X_finite(X, caller)
        self.classes_, yi = check_class_labels(y, X, caller)
        self.n_features_in_ = X.shape[1]
        self.scaler_ = StandardScaler().fit(X)
        Xt = torch.as_tensor(self.scaler_.transform(X), dtype=torch.float32)
        yt = torch.as_tensor(yi)
        callbacks: Sequence[Callable] = self.callbacks or ()
        seed = self._seed()
        start = time.perf_counter()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            gen = torch.Generator().manual_seed(seed)
            self.net_ = TabularTransformerNet(X.shape[1], len(self.classes_), self.dim,
                                              self.hidden)
            opt = torch.optim.AdamW(self.net_.parameters(), lr=self.lr,
                                    weight_decay=self.weight_decay)
            self.loss_curve_ = []
            for cb in callbacks:
                cb(0, self)
            for epoch in range(1, self.epochs + 1):
                self.net_.train()
                order = torch.randperm(len(Xt), generator=gen)
                total = 0.0
                for s in range(0, len(Xt), self.batch_size):
                    idx = order[s:s + self.batch_size]
                    loss = nn.functional.cross_entropy(self.net_(Xt[idx]), yt[idx])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    total += float(loss.detach()) * len(idx)
                self.loss_curve_.append(total / len(Xt))
                for cb in callbacks:
                    cb(epoch, self)
        self.fit_seconds_ = time.perf_counter() - start
        return self

    def _logits(self, X) -> np.ndarray:
        check_is_fitted(self, "net_")
        X = check_X_finite(X, type(self).__name__, n_features=self.n_features_in_)
        self.net_.eval()
        with torch.no_grad():
            Xt = torch.as_tensor(self.scaler_.transform(X), dtype=torch.float32)
            return self.net_(Xt).numpy().astype(np.float64)

    def predict_proba(self, X) -> np.ndarray:
        z = self._logits(X)
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, X) -> np.ndarray:
        return self.classes_[np.argmax(self._logits(X), axis=1)]
