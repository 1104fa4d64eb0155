"""scikit-learn's own estimator checks (``parametrize_with_checks``) on the tabular estimators.

Small configurations keep the suite short; the checks that measure learning
(``check_classifiers_train``, ``check_regressors_train``) get enough steps to learn. One check
is an expected failure by design, with its reason below.
"""

from __future__ import annotations

import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from attnlens.tabular import NPTClassifier, NPTRegressor, OTDummyClassifier

#: NPT is transductive over a prediction batch: query rows attend to each other (their targets
#: masked) as in the paper and the official code, so a row's prediction depends on which other
#: rows are predicted with it
NPT_BY_DESIGN = {
    "check_methods_subset_invariance": "NPT predicts a batch jointly: the query rows attend to "
                                       "each other (ABD), as in the paper",
    "check_methods_sample_order_invariance": "float32 attention sums over the rows of a batch "
                                             "change in the last bits (~1e-8) when the rows are "
                                             "reordered; the check's tolerance is 1e-9",
}
#: the checks that require the estimator to learn an easy task
LEARNING_CHECKS = ("check_classifiers_train", "check_regressors_train")
TINY_NPT = {"dim": 4, "depth": 2, "n_heads": 2, "n_steps": 3, "random_state": 0}
LEARNING_NPT = {"dim": 8, "n_steps": 30, "lr": 2e-2}


def _expected_failures(estimator) -> dict[str, str]:
    return NPT_BY_DESIGN if isinstance(estimator, (NPTClassifier, NPTRegressor)) else {}


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@parametrize_with_checks([NPTClassifier(**TINY_NPT), NPTRegressor(**TINY_NPT),
                          OTDummyClassifier(max_iter=100, random_state=0)],
                         expected_failed_checks=_expected_failures)
def test_sklearn_estimator_checks(estimator, check):
    name = getattr(check, "func", check).__name__
    if name in LEARNING_CHECKS and isinstance(estimator, (NPTClassifier, NPTRegressor)):
        estimator.set_params(**LEARNING_NPT)
    check(estimator)
