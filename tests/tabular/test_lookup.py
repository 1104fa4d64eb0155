"""The lookup probe of NPT (Kossen et al. 2021, Sec. 4.2) on breast-cancer rows with random
classes: NPT trained in duplicate mode copies the target of a query's duplicate in context and
follows it when it is corrupted, while an MLP and gradient boosting, which see one row at a
time, stay near chance."""

from __future__ import annotations

import pytest

from attnlens.datasets.tabular import load_tabular
from attnlens.tabular import lookup_probe, make_lookup_table
from attnlens.tabular.lookup import PROBE_TABLE, LookupNPTClassifier

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

#: 32 queries, 2 classes: a model at chance reaches >= 24 correct with probability 0.0035
#: (binomial tail), and NPT at >= 0.9 means at most 3 misses
CHANCE_BOUND = 0.75
SOLVED = 0.9


def test_npt_solves_the_lookup_probe_and_follows_a_corrupted_duplicate():
    data = load_tabular("breast_cancer")
    table = make_lookup_table(data.X[:, : PROBE_TABLE["n_features"]],
                              n_pairs=PROBE_TABLE["n_pairs"], n_query=PROBE_TABLE["n_query"],
                              random_state=0)
    res = lookup_probe(table, LookupNPTClassifier(random_state=0), random_state=0)
    assert res.chance == 0.5 and res.n_query == 32
    # pointwise models (independent implementations, scikit-learn) cannot use the duplicate
    assert res.mlp < CHANCE_BOUND and res.gradient_boosting < CHANCE_BOUND
    # NPT reads the duplicate: right with it, and the prediction moves with its target
    assert res.npt_with_duplicates >= SOLVED
    assert res.follows_corruption >= SOLVED
