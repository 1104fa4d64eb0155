r"""The OT dummy-Gaussian classifier of Candelieri & Quadrio (arXiv 2512.09530, Sec. "OT-based
algorithm").

Fit:

1. standardize the features;
2. give each class :math:`k` a dummy Gaussian :math:`\mathcal N(\mu_k, s^2 I)` in a latent space of
   dimension :math:`p`, with centres :math:`\mu_k` placed by ``geometry`` at mutual distance
   ``separation``, and draw one dummy point per training point of the class;
3. align the class's data with its dummy points by exact optimal transport
   (:math:`\min_{\Pi\in U(\frac1{n_k}\mathbf 1, \frac1{n_k}\mathbf 1)}\langle C, \Pi\rangle`,
   ``ot.emd``, squared-Euclidean cost between the data and the dummy points after both are
   brought to a common dimension, see below); with uniform weights and equal counts the optimal
   plan is a permutation, so every training point gets one dummy target :math:`T(x_i)`;
4. train an MLP (scikit-learn ``MLPRegressor``) to generalize the map :math:`x \mapsto T(x)`.

Predict: map a row with the MLP and return the class of the nearest centre (posterior of the
isotropic Gaussians with equal priors for ``predict_proba``).

Cost between data (dimension :math:`d`) and dummies (dimension :math:`p`): when :math:`p \ne d`,
the data are compared through their first :math:`p` principal components (padded with zeros when
:math:`p > d`). The thesis does not say how it compares the two spaces; this is our choice.
"""

from __future__ import annotations

import numpy as np
import ot
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
from sklearn.decomposition import PCA
from sklearn.neural_network import MLPRegressor
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted

from attnlens._validation import (
    Integral,
    Interval,
    Options,
    ParamsValidatedMixin,
    RandomState,
    Real,
    check_random_state,
    raise_invalid,
)
from attnlens.tabular._checks import check_class_labels, check_X_finite

GEOMETRIES = ("simplex", "axes", "random")


def class_centres(n_classes: int, dim: int, geometry: str, separation: float,
                  rng: np.random.Generator) -> np.ndarray:
    """(n_classes, dim) centres at mutual distance ``separation`` ("random": expected distance).

    simplex: a regular simplex centred at 0 (needs ``dim >= n_classes - 1``);
    axes: ``separation / sqrt(2)`` times the first ``n_classes`` unit vectors (``dim >= n_classes``);
    random: Gaussian directions scaled so that pairwise distances are ``separation`` on average.
    """
    if geometry == "axes":
        if dim < n_classes:
            raise_invalid("latent_dim", f">= the number of classes ({n_classes}) for 'axes'",
                          dim, "Raise latent_dim or use geometry='simplex'.", "class_centres")
        return np.eye(n_classes, dim) * separation / np.sqrt(2.0)
    if geometry == "simplex":
        if dim < n_classes - 1:
            raise_invalid("latent_dim", f">= n_classes - 1 ({n_classes - 1}) for 'simplex'",
                          dim, "Raise latent_dim.", "class_centres")
        E = np.eye(n_classes) - 1.0 / n_classes  # centred vertices, rank n_classes - 1
        U, s, _ = np.linalg.svd(E, full_matrices=False)
        V = (U * s)[:, : n_classes - 1]  # coordinates in n_classes - 1 dims
        V = V / np.sqrt(2.0) * separation  # vertices of the unit-edge simplex times separation
        out = np.zeros((n_classes, dim))
        out[:, : V.shape[1]] = V
        return out
    G = rng.standard_normal((n_classes, dim))
    return G * separation / np.sqrt(2.0 * dim)


class OTDummyClassifier(ParamsValidatedMixin, ClassifierMixin, TransformerMixin, BaseEstimator):
    """OT alignment to class-specific dummy Gaussians, generalized by an MLP.

    Parameters
    ----------
    latent_dim : dimension p of the dummy space (None: the number of features).
    geometry : "simplex", "axes" or "random" placement of the class centres.
    separation : distance between class centres (> 0).
    spread : standard deviation s of each dummy Gaussian (> 0).
    hidden_layer_sizes : the MLP's hidden widths.
    alpha : the MLP's L2 penalty.
    max_iter : the MLP's epochs (Adam).
    random_state : seed of the dummy draws and of the MLP.

    Fitted attributes: ``classes_``, ``centres_`` (n_classes, p), ``dummy_targets_`` (n, p),
    ``scaler_``, ``map_`` (the MLPRegressor), ``alignment_cost_`` (mean squared cost of the OT
    alignment), ``n_features_in_``.
    """

    _parameter_constraints = {
        "latent_dim": [None, Interval(Integral, 1, None)],
        "geometry": [Options(*GEOMETRIES)],
        "separation": [Interval(Real, 0, None, closed="neither")],
        "spread": [Interval(Real, 0, None, closed="neither")],
        "hidden_layer_sizes": [tuple, list],
        "alpha": [Interval(Real, 0, None)],
        "max_iter": [Interval(Integral, 1, None)],
        "random_state": [RandomState()],
    }

    def __init__(self, latent_dim=None, geometry="simplex", separation=4.0, spread=0.5,
                 hidden_layer_sizes=(64, 64), alpha=1e-4, max_iter=500, random_state=None):
        self.latent_dim = latent_dim
        self.geometry = geometry
        self.separation = separation
        self.spread = spread
        self.hidden_layer_sizes = hidden_layer_sizes
        self.alpha = alpha
        self.max_iter = max_iter
        self.random_state = random_state

    def _latent(self, Z: np.ndarray) -> np.ndarray:
        """The data in the dummy dimension p (PCA coordinates, zero-padded) for the OT cost."""
        p = self.centres_.shape[1]
        Zp = self.pca_.transform(Z)
        if Zp.shape[1] < p:
            Zp = np.hstack([Zp, np.zeros((len(Zp), p - Zp.shape[1]))])
        return Zp[:, :p]

    def fit(self, X, y) -> OTDummyClassifier:
        self._check_params()
        caller = type(self).__name__
        X = check_X_finite(X, caller)
        classes, yi = check_class_labels(y, X, caller)
        rng = check_random_state(self.random_state)
        self.classes_ = classes
        self.n_features_in_ = X.shape[1]
        p = self.latent_dim or X.shape[1]
        self.scaler_ = StandardScaler().fit(X)
        Z = self.scaler_.transform(X)
        self.pca_ = PCA(n_components=min(p, *Z.shape)).fit(Z)
        self.centres_ = class_centres(len(classes), p, self.geometry, float(self.separation),
                                      rng)
        Zl = self._latent(Z)
        targets = np.empty((len(X), p))
        cost = 0.0
        for k in range(len(classes)):
            idx = np.flatnonzero(yi == k)
            dummies = self.centres_[k] + self.spread * rng.standard_normal((len(idx), p))
            w = np.full(len(idx), 1.0 / len(idx))
            C = ot.dist(Zl[idx], dummies)
            plan = ot.emd(w, w, C)
            targets[idx] = dummies[np.argmax(plan, axis=1)]  # a permutation: one dummy per row
            cost += float(np.sum(plan * C)) * len(idx)
        self.dummy_targets_ = targets
        self.alignment_cost_ = cost / len(X)
        seed = int(rng.integers(0, 2**31 - 1))
        self.map_ = MLPRegressor(hidden_layer_sizes=tuple(self.hidden_layer_sizes),
                                 alpha=self.alpha, max_iter=self.max_iter, random_state=seed,
                                 early_stopping=False)
        self.map_.fit(Z, targets)
        self.n_iter_ = self.map_.n_iter_
        return self

    def transform(self, X) -> np.ndarray:
        """The learned map :math:`x \\mapsto T(x)` into the dummy space, (n, p)."""
        check_is_fitted(self, "map_")
        X = check_X_finite(X, type(self).__name__, n_features=self.n_features_in_)
        out = self.map_.predict(self.scaler_.transform(X))
        return out.reshape(len(X), -1)

    def _log_posterior(self, X) -> np.ndarray:
        """Log-posterior (up to a constant) of each class's Gaussian, (n, n_classes)."""
        T = self.transform(X)
        d2 = ((T[:, None, :] - self.centres_[None, :, :]) ** 2).sum(-1)
        return -d2 / (2.0 * self.spread**2)

    def decision_function(self, X) -> np.ndarray:
        """Log-posteriors (n, n_classes); for two classes the log-odds of ``classes_[1]``, (n,),
        as scikit-learn's binary classifiers."""
        s = self._log_posterior(X)
        return s[:, 1] - s[:, 0] if s.shape[1] == 2 else s

    def predict_proba(self, X) -> np.ndarray:
        s = self._log_posterior(X)
        s = s - s.max(axis=1, keepdims=True)
        e = np.exp(s)
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, X) -> np.ndarray:
        s = self._log_posterior(X)  # checks fitted before classes_ is read
        return self.classes_[np.argmax(s, axis=1)]
