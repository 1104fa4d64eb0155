"""The lookup probe of NPT (Kossen et al. 2021, Sec. 4.1 "semi-synthetic lookup"): can a model
use *other rows* at prediction time?

Table (built from any real feature matrix): the target of every row is a random class,
independent of its features, so no function of a row's own features beats chance. Training rows
come in identical pairs sharing the target. Each query row has an exact duplicate, with its
target, among the labelled rows in context at prediction time. A model that attends between
datapoints can copy the duplicate's target; a model of one row at a time (MLP, gradient boosting)
cannot. Corrupting the duplicate's target (another class) then tells whether the prediction
follows the looked-up row.

Difference to the paper: the paper duplicates the Protein regression set and reveals the copy's
target inside each training minibatch; here the pairs are drawn from a small real table and the
targets are random classes, so chance level is known exactly (1 / n_classes). The query rows'
duplicates are context only: a pointwise model trained on them could memorize them, which is a
different question (lookup of training data, which 1-NN solves).

Status (docs/tabular.md): on 2 CPU cores, with ``PROBE_NPT`` (1500 steps), NPT stayed at chance;
the lookup appears in a bare NPTNet loop on fresh rows only after a ~700-step plateau. The probe
is the instrument; the paper's near-perfect lookup is not reproduced here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.neural_network import MLPClassifier

from attnlens._validation import (
    Array,
    InstanceOf,
    Integral,
    Interval,
    RandomState,
    check_random_state,
    raise_invalid,
    validate_params,
)
from attnlens.tabular.npt import NPTClassifier


class LookupNPTClassifier(NPTClassifier):
    """NPT trained on a duplicated table whose targets are redrawn at every step.

    Identical rows share the draw, so a row's twin always carries its target, while the target
    of a row is a fresh random class at each step: no function of the row's own features can
    lower the loss, only reading the twin can. (On a fixed table a small NPT memorizes the
    training targets long before it learns the lookup.) The official code does the same kind
    of per-step batch rewriting in its protein-duplicate mode. Inference is plain NPT.
    """

    def fit(self, X, y):
        X_arr = np.asarray(X, dtype=np.float64)
        _, groups = np.unique(X_arr, axis=0, return_inverse=True)
        self._groups = torch.as_tensor(groups.ravel(), dtype=torch.long)
        self._n_groups = int(groups.max()) + 1
        return super().fit(X, y)

    def _step_targets(self, rows, targets, gen):
        draw = torch.randint(0, self.target_dim_, (self._n_groups,), generator=gen)
        return draw[self._groups[rows]]


@dataclass(frozen=True)
class LookupTable:
    """Training pairs, query rows, and the queries' labelled duplicates (the context)."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_query: np.ndarray
    y_query: np.ndarray
    X_context: np.ndarray
    y_context: np.ndarray
    n_classes: int


@dataclass(frozen=True)
class LookupProbeResult:
    """Accuracies on the query rows; ``follows_corruption``: share of predictions equal to the
    corrupted duplicate's target; ``chance`` = 1 / n_classes."""

    npt_with_duplicates: float
    npt_without_duplicates: float
    follows_corruption: float
    mlp: float
    gradient_boosting: float
    chance: float
    n_train: int
    n_query: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


@validate_params({"X": [Array(ndim=2)], "n_pairs": [Interval(Integral, 2, None)],
                  "n_query": [Interval(Integral, 1, None)],
                  "n_classes": [Interval(Integral, 2, None)], "random_state": [RandomState()]})
def make_lookup_table(X, n_pairs: int = 64, n_query: int = 32, n_classes: int = 2,
                      random_state=None) -> LookupTable:
    """Draw ``n_pairs + n_query`` distinct rows of ``X`` and give each a random class."""
    X = np.asarray(X, dtype=np.float64)
    if n_pairs + n_query > len(X):
        raise_invalid("n_pairs", f"+ n_query <= the {len(X)} rows of X",
                      n_pairs + n_query, "Draw fewer rows or pass a larger table.",
                      "make_lookup_table")
    rng = check_random_state(random_state)
    rows = rng.choice(len(X), n_pairs + n_query, replace=False)
    y = rng.integers(0, n_classes, len(rows))
    base, q = rows[:n_pairs], rows[n_pairs:]
    yb, yq = y[:n_pairs], y[n_pairs:]
    order = rng.permutation(2 * n_pairs)
    X_train = np.vstack([X[base], X[base]])[order]
    y_train = np.concatenate([yb, yb])[order]
    return LookupTable(X_train=X_train, y_train=y_train, X_query=X[q].copy(), y_query=yq,
                       X_context=X[q].copy(), y_context=yq.copy(), n_classes=n_classes)


def _predict_each(npt, table: LookupTable, y_context: np.ndarray) -> np.ndarray:
    """Predict each query with the training rows and its own labelled duplicate in context."""
    return np.concatenate([
        npt.predict(table.X_query[i:i + 1], context=(table.X_context[i:i + 1], y_context[i:i + 1]))
        for i in range(len(table.X_query))])


@validate_params({"table": [InstanceOf(LookupTable)], "npt": [InstanceOf(NPTClassifier)],
                  "random_state": [RandomState()]})
def lookup_probe(table: LookupTable, npt, random_state=None) -> LookupProbeResult:
    """Fit ``npt`` (an unfitted NPTClassifier) and the pointwise baselines; score the queries.

    Each query is predicted with the training rows and its own labelled duplicate in context
    (the table NPT was trained on plus two rows: attention spread over many more rows than in
    training blurs a lookup learned on a small table). The corruption replaces the duplicate's
    target by the next class (``(y + 1) mod K``), so a prediction that follows the looked-up row
    changes class.
    """
    rng = check_random_state(random_state)
    seed = int(rng.integers(0, 2**31 - 1))
    npt.fit(table.X_train, table.y_train)
    with_dup = float(np.mean(_predict_each(npt, table, table.y_context) == table.y_query))
    without = float(np.mean(npt.predict(table.X_query) == table.y_query))
    corrupted = (table.y_context + 1) % table.n_classes
    follows = float(np.mean(_predict_each(npt, table, corrupted) == corrupted))
    mlp = MLPClassifier(hidden_layer_sizes=(128, 128), max_iter=500, random_state=seed)
    hgb = HistGradientBoostingClassifier(random_state=seed)
    scores = []
    for model in (mlp, hgb):
        model.fit(table.X_train, table.y_train)
        scores.append(float(np.mean(model.predict(table.X_query) == table.y_query)))
    return LookupProbeResult(npt_with_duplicates=with_dup, npt_without_duplicates=without,
                             follows_corruption=follows, mlp=scores[0],
                             gradient_boosting=scores[1], chance=1.0 / table.n_classes,
                             n_train=len(table.X_train), n_query=len(table.X_query))


#: the probe's table: features of breast cancer (first columns), training pairs, queries
PROBE_TABLE = {"n_features": 8, "n_pairs": 8, "n_query": 24}
#: the probe's NPT: small, no feature masking (the lookup is the only task), AdamW at a constant
#: rate (the lookup appears after a plateau of several hundred steps)
PROBE_NPT = {"dim": 8, "depth": 2, "n_heads": 2, "n_steps": 1500, "lr": 3e-3,
             "optimizer": "adamw", "feature_mask_prob": 0.0, "target_mask_prob": 0.5,
             "tradeoff": 0.0, "dropout": 0.0, "flat_fraction": 1.0}
