"""OTDummyClassifier: geometry of the dummy centres, the OT alignment, accuracy on real data,
validation of its geometry parameters and bad input."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment
from sklearn.model_selection import train_test_split

from attnlens.datasets.tabular import load_tabular
from attnlens.errors import InvalidParameterError
from attnlens.tabular.ot_classifier import OTDummyClassifier, class_centres

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
FAST = dict(hidden_layer_sizes=(32,), max_iter=200)


@pytest.mark.parametrize("geometry,k,p", [("simplex", 3, 2), ("simplex", 4, 5), ("axes", 3, 4)])
def test_centres_are_equidistant(geometry, k, p):
    C = class_centres(k, p, geometry, 3.0, np.random.default_rng(0))
    D = np.linalg.norm(C[:, None] - C[None], axis=-1)
    off = D[~np.eye(k, dtype=bool)]
    assert np.allclose(off, 3.0)


def test_alignment_is_the_optimal_assignment():
    """The OT alignment of each class equals the Hungarian assignment (scipy), an independent path."""
    data = load_tabular("wine")
    clf = OTDummyClassifier(latent_dim=2, random_state=0, **FAST).fit(data.X, data.y)
    # recompute: same draws (same seed), Hungarian matching on the same cost
    rng = np.random.default_rng(0)
    centres = class_centres(3, 2, "simplex", clf.separation, rng)
    assert np.allclose(centres, clf.centres_)
    Zl = clf._latent(clf.scaler_.transform(data.X))
    for k in range(3):
        idx = np.flatnonzero(data.y == k)
        dummies = centres[k] + clf.spread * rng.standard_normal((len(idx), 2))
        C = ((Zl[idx, None] - dummies[None]) ** 2).sum(-1)
        r, c = linear_sum_assignment(C)
        assert np.allclose(clf.dummy_targets_[idx[r]], dummies[c])


def test_accuracy_on_breast_cancer_is_close_to_logistic_regression():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    data = load_tabular("breast_cancer")
    Xtr, Xte, ytr, yte = train_test_split(data.X, data.y, test_size=0.3, random_state=0,
                                          stratify=data.y)
    ot_acc = OTDummyClassifier(random_state=0, **FAST).fit(Xtr, ytr).score(Xte, yte)
    lr_acc = make_pipeline(StandardScaler(), LogisticRegression()).fit(Xtr, ytr).score(Xte, yte)
    assert ot_acc > 0.9 and ot_acc >= lr_acc - 0.05
    proba = OTDummyClassifier(random_state=0, **FAST).fit(Xtr, ytr).predict_proba(Xte)
    assert np.allclose(proba.sum(1), 1.0)


@pytest.mark.parametrize("param,value", [("geometry", "cube"), ("separation", 0.0),
                                          ("spread", -1.0), ("latent_dim", 0)])
def test_geometry_parameters_are_validated(param, value):
    X, y = np.random.default_rng(0).normal(size=(20, 3)), np.arange(20) % 2
    with pytest.raises(InvalidParameterError, match=param):
        OTDummyClassifier(**{param: value}).fit(X, y)


def test_axes_geometry_needs_enough_dimensions_and_bad_input_is_named():
    X, y = np.random.default_rng(0).normal(size=(30, 2)), np.arange(30) % 3
    with pytest.raises(InvalidParameterError, match="latent_dim"):
        OTDummyClassifier(geometry="axes", latent_dim=2).fit(X, y)
    Xn = X.copy()
    Xn[0, 0] = np.nan
    with pytest.raises(InvalidParameterError, match="NaN"):
        OTDummyClassifier().fit(Xn, y)
    with pytest.raises(InvalidParameterError, match="single class"):
        OTDummyClassifier().fit(X, np.zeros(30))
