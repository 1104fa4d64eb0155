r"""Discrete optimal-transport metrics of a coupling or of a map (the OT lens on attention).

Candelieri & Quadrio, "Transformers for Tabular Data: A Training Perspective of Self-Attention via
Optimal Transport" (arXiv 2512.09530) track the projections of a self-attention layer with four
discrete OT metrics: Wasserstein distance, Monge gap, optimality and efficiency. Their thesis (R
code, unpublished) was not available when this was written, so the four quantities are defined
here explicitly; each is a standard OT quantity and the definitions are fixed by the tests.

Given source points :math:`x_1..x_n`, target points :math:`y_1..y_m`, a ground cost
:math:`C_{ij} = c(x_i, y_j)` and a coupling :math:`P \ge 0` with :math:`\sum_{ij} P_{ij} = 1`
and marginals :math:`a = P\mathbf 1`, :math:`b = P^\top \mathbf 1`:

* transport cost :math:`\langle C, P\rangle`;
* Wasserstein distance :math:`W_c(a, b) = \min_{\Pi \in U(a,b)} \langle C, \Pi\rangle` (exact
  network simplex, ``ot.emd``; for ``c = \|\cdot\|^2`` this is :math:`W_2^2`);
* Monge gap :math:`\mathcal M(P) = \langle C, P\rangle - W_c(a,b) \ge 0` (Uscidda & Cuturi, ICML
  2023, for a map :math:`T` with :math:`P = \frac1n\sum_i \delta_{(x_i, T(x_i))}`); zero iff the
  coupling is optimal between its own marginals;
* optimality :math:`W_c(a,b) / \langle C, P\rangle \in [0, 1]` (1 for an optimal coupling,
  and 1 when both are 0);
* efficiency :math:`\sum_{ij}\min(P_{ij}, P^\star_{ij}) \in [0, 1]`, the mass the coupling moves
  exactly as the optimal plan :math:`P^\star` returned by the exact solver does (1 iff
  :math:`P = P^\star`; when the optimal plan is not unique this is measured against one of them).

The trajectory counterpart, :func:`path_efficiency`, is the ratio of the direct Wasserstein
distance between the first and last state of a sequence of point clouds to the length of the
path through the intermediate states (1 for a straight path; smaller is a detour).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import ot

from attnlens._validation import Array, Options, check_array, raise_invalid, validate_params

#: relative tolerance on the coupling's total mass and non-negativity
MASS_TOL = 1e-6
METRICS = ("sqeuclidean", "euclidean")


@dataclass(frozen=True)
class OTMetrics:
    """The OT metrics of one coupling (see the module docstring for the definitions)."""

    wasserstein: float
    transport_cost: float
    monge_gap: float
    optimality: float
    efficiency: float
    metric: str

    def as_dict(self) -> dict[str, float | str]:
        return asdict(self)


def cost_matrix(source: np.ndarray, target: np.ndarray, metric: str = "sqeuclidean") -> np.ndarray:
    """Ground cost :math:`C_{ij} = \\|x_i - y_j\\|^2` (or the distance, ``metric="euclidean"``)."""
    return ot.dist(source, target, metric=metric)


def _check_coupling(coupling: np.ndarray, n: int, m: int, caller: str) -> np.ndarray:
    P = check_array(coupling, "coupling", shape=(n, m), caller=caller)
    if P.min() < -MASS_TOL:
        raise_invalid("coupling", "non-negative", f"got a minimum entry {P.min():.3g}",
                      "A coupling is a joint probability table.", caller)
    total = float(P.sum())
    if abs(total - 1.0) > MASS_TOL * max(1, n * m) ** 0.5 + MASS_TOL:
        raise_invalid("coupling", "a table of total mass 1", f"got total mass {total:.6g}",
                      "Divide a row-stochastic attention matrix by its number of rows.", caller)
    return np.clip(P, 0.0, None) / total


@validate_params({"source": [Array(ndim=2)], "target": [Array(ndim=2)],
                  "metric": [Options(*METRICS)]})
def ot_metrics(source, target, coupling=None, *, metric: str = "sqeuclidean") -> OTMetrics:
    r"""Wasserstein distance, Monge gap, optimality and efficiency of ``coupling``.

    Parameters
    ----------
    source : (n, d) points :math:`x_i`.
    target : (m, d) points :math:`y_j`.
    coupling : (n, m) non-negative table of total mass 1, or ``None`` for the map
        :math:`x_i \mapsto y_i` (needs ``n == m``; the coupling :math:`\frac1n I`), which is how a
        layer's input tokens and its output tokens are compared. A row-stochastic attention matrix
        ``A`` becomes a coupling as ``A / n``.
    metric : ground cost, "sqeuclidean" (:math:`W_2^2`) or "euclidean" (:math:`W_1`).

    Returns
    -------
    OTMetrics with ``wasserstein`` :math:`W_c(P\mathbf 1, P^\top\mathbf 1)`, ``transport_cost``
    :math:`\langle C,P\rangle`, ``monge_gap`` (their difference), ``optimality`` (their ratio) and
    ``efficiency`` (mass shared with the optimal plan).
    """
    caller = "ot_metrics"
    X = check_array(source, "source", ndim=2, caller=caller)
    Y = check_array(target, "target", ndim=2, caller=caller)
    if X.shape[1] != Y.shape[1]:
        raise_invalid("target", f"points of dimension {X.shape[1]} (as source)",
                      f"got dimension {Y.shape[1]}", "Both clouds must live in one space.", caller)
    n, m = X.shape[0], Y.shape[0]
    if coupling is None:
        if n != m:
            raise_invalid("coupling", "given when source and target have different sizes",
                          f"got None with n={n}, m={m}",
                          "Pass the (n, m) coupling, or a target with one point per source.",
                          caller)
        P = np.eye(n) / n
    else:
        P = _check_coupling(coupling, n, m, caller)
    a, b = P.sum(axis=1), P.sum(axis=0)
    keep_a, keep_b = a > 0, b > 0  # points without mass do not take part
    C = cost_matrix(X, Y, metric)
    cost = float(np.sum(C * P))
    C_sub = C[np.ix_(keep_a, keep_b)]
    plan_sub = ot.emd(a[keep_a], b[keep_b], C_sub, numItermax=1_000_000)
    W = float(np.sum(C_sub * plan_sub))
    plan = np.zeros_like(P)
    plan[np.ix_(keep_a, keep_b)] = plan_sub
    gap = max(cost - W, 0.0)
    optimality = 1.0 if cost <= 0 else min(W / cost, 1.0)
    efficiency = float(np.minimum(P, plan).sum())
    return OTMetrics(wasserstein=W, transport_cost=cost, monge_gap=gap, optimality=optimality,
                     efficiency=efficiency, metric=metric)


def wasserstein(source: np.ndarray, target: np.ndarray, metric: str = "sqeuclidean") -> float:
    """Exact :math:`W_c` between two uniform point clouds (``ot.emd2``)."""
    a = np.full(len(source), 1.0 / len(source))
    b = np.full(len(target), 1.0 / len(target))
    return float(ot.emd2(a, b, cost_matrix(source, target, metric), numItermax=1_000_000))


@validate_params({"states": [list, tuple], "metric": [Options(*METRICS)]})
def path_efficiency(states: Sequence[np.ndarray], metric: str = "euclidean") -> float:
    r"""Straightness of a trajectory of point clouds :math:`S_0, \dots, S_T`.

    :math:`W(S_0, S_T) / \sum_t W(S_t, S_{t+1})` with :math:`W` the exact Wasserstein distance
    (``metric="euclidean"`` gives :math:`W_1`, ``"sqeuclidean"`` uses :math:`W_2 =
    \sqrt{W_2^2}`, both metrics on point clouds, so the ratio lies in [0, 1] by the triangle
    inequality). Returns 1.0 for a path that does not move.
    """
    if len(states) < 2:
        raise_invalid("states", "at least two point clouds", f"got {len(states)}",
                      "Record the trajectory at two epochs or more.", "path_efficiency")

    def dist(u, v):
        w = wasserstein(u, v, metric)
        return np.sqrt(max(w, 0.0)) if metric == "sqeuclidean" else w

    steps = sum(dist(states[t], states[t + 1]) for t in range(len(states) - 1))
    if steps <= 0:
        return 1.0
    return float(min(dist(states[0], states[-1]) / steps, 1.0))
