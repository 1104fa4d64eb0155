r"""Gen-SVM: max-margin selection of token *sets* (non-linear heads), and its finite part.

Score convention: ``score_t = x_t^T W z`` (``W = K Q^T`` when factorized). With a non-linear
head, attention can keep a set :math:`\mathcal O_i` of tokens per sequence instead of one.
For selected sets :math:`\mathcal O_i` the Gen-SVM is

.. math::

    W^{svm} = \arg\min_W \|W\|_F \quad\text{s.t.}\quad
    (x_{it} - x_{i\tau})^\top W z_i = 0 \ \ (t, \tau \in \mathcal O_i), \qquad
    (x_{it} - x_{iu})^\top W z_i \ge 1 \ \ (t \in \mathcal O_i,\ u \notin \mathcal O_i).

The equalities say that ``W`` is orthogonal to
:math:`\mathcal S_{fin} = \mathrm{span}\{(x_{it} - x_{i\tau}) z_i^\top : t, \tau \in
\mathcal O_i\}`; the papers decompose a trajectory as
:math:`W(k) \approx W^{fin} + \|W(k)\|\, W^{svm}/\|W^{svm}\|` with the *finite component*
:math:`W^{fin} \in \mathcal S_{fin}` minimizing the training loss in which each sequence
attends to its selected set only (:func:`finite_part`).

Tarzanagh, Li, Thrampoulidis, Oymak, "Transformers as Support Vector Machines"
(arXiv 2308.16898), section on non-linear heads (Gen-SVM, ``S_fin``, ``W^fin``).

The fast method (``"nnls"``) eliminates the equalities: with ``P`` the Frobenius projector
onto :math:`\mathcal S_{fin}^\perp`, the program is the bias-free hard-margin SVM on the
projected constraint matrices ``P A_c`` (``A_c = (x_{i,o_i} - x_{iu}) z_i^\top``), whose Gram
``<P A_c, P A_c'> = G_AA - G_AE G_EE^+ G_EA`` needs only ``d``-vectors
(``<a z^T, b w^T> = (a^T b)(z^T w)``); the least-distance program is solved exactly with
Lawson & Hanson's NNLS (Solving Least Squares Problems, 1974, ch. 23).
``method="cvxpy"`` solves the constraints as written, with Clarabel: the test oracle.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import minimize, nnls

from attnlens._results import Status, warn_on_status
from attnlens._validation import check_array, check_int, check_option, check_positive
from attnlens.errors import InfeasibleError
from attnlens.svm._certificate import relative_gap

logger = logging.getLogger(__name__)

__all__ = [
    "FinitePartResult",
    "GenSVMResult",
    "METHODS",
    "fin_projection",
    "finite_part",
    "gen_svm",
    "project_out_fin",
]

METHODS = ("auto", "nnls", "cvxpy")
SUPPORT_TOL = 1e-6
_EIG_RTOL = 1e-12


# ----------------------------------------------------------------------------------------
# input and layout
# ----------------------------------------------------------------------------------------
def _check_sets(sets: Any, n: int, T: int) -> list[np.ndarray]:
    """``sets``: n iterables of token indices, an (n,) integer array (singletons), or an
    (n, T) boolean mask. Returns n sorted unique int64 arrays."""
    if sets is None:
        raise TypeError("sets must list the selected tokens of each sequence, got None.")
    if isinstance(sets, np.ndarray):
        if sets.dtype == bool:
            if sets.shape != (n, T):
                raise ValueError(f"sets as a boolean mask must have shape ({n}, {T}), got "
                                 f"{sets.shape}.")
            sets = [np.flatnonzero(row) for row in sets]
        elif sets.ndim == 1 and sets.dtype.kind in "iuf":
            sets = [[a] for a in sets.tolist()]
        else:
            sets = list(sets)
    if isinstance(sets, str | bytes) or not isinstance(sets, Iterable):
        raise TypeError(f"sets must be a sequence of {n} token-index collections, got {sets!r}.")
    sets = list(sets)
    if len(sets) != n:
        raise ValueError(f"sets must hold one collection per sequence (n={n}); got {len(sets)}.")
    out = []
    for i, s in enumerate(sets):
        arr = np.atleast_1d(np.asarray(s))
        if arr.size == 0:
            raise ValueError(f"sets[{i}] is empty; every sequence selects at least one token.")
        if arr.dtype.kind == "f" and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        if arr.dtype.kind not in "iu" or arr.ndim != 1:
            raise TypeError(f"sets[{i}] must hold integer token indices, got {s!r}.")
        if arr.min() < 0 or arr.max() >= T:
            raise ValueError(f"sets[{i}] holds token indices outside [0, {T - 1}]: "
                             f"{arr[(arr < 0) | (arr >= T)].tolist()}.")
        out.append(np.unique(arr.astype(np.int64)))
    return out


@dataclass(frozen=True)
class _Layout:
    """Inequalities ``A_c = Da_c Qa_c^T`` at (ia, ua); equality generators ``E_j = De_j Qe_j^T``
    at (ie, te); the selected set of sequence i as a mask (n, T)."""

    X: np.ndarray
    Z: np.ndarray
    sets: list[np.ndarray]
    in_set: np.ndarray
    ia: np.ndarray
    ua: np.ndarray
    Da: np.ndarray
    Qa: np.ndarray
    ie: np.ndarray
    te: np.ndarray
    De: np.ndarray
    Qe: np.ndarray


def _layout(X: Any, Z: Any, sets: Any) -> _Layout:
    X = check_array(X, "X", ndim=3)
    n, T, d = X.shape
    Z = check_array(Z, "Z", shape=(n, d))
    S = _check_sets(sets, n, T)
    in_set = np.zeros((n, T), dtype=bool)
    for i, s in enumerate(S):
        in_set[i, s] = True
    o = np.array([s[0] for s in S])  # representative token of each set
    ia, ua = np.nonzero(~in_set)
    ie, te = np.nonzero(in_set)
    keep = te != o[ie]
    ie, te = ie[keep], te[keep]
    Da = X[ia, o[ia]] - X[ia, ua]
    De = X[ie, te] - X[ie, o[ie]]
    return _Layout(X, Z, S, in_set, ia, ua, Da, Z[ia], ie, te, De, Z[ie])


def _gram(D1: np.ndarray, Q1: np.ndarray, D2: np.ndarray, Q2: np.ndarray) -> np.ndarray:
    """``<D1_a Q1_a^T, D2_b Q2_b^T>_F = (D1_a . D2_b)(Q1_a . Q2_b)``."""
    return (D1 @ D2.T) * (Q1 @ Q2.T)


def _combine(coef: np.ndarray, D: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """``sum_c coef_c D_c Q_c^T`` (d, d)."""
    return (D * coef[:, None]).T @ Q


def _inner(W: np.ndarray, D: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """``<D_c Q_c^T, W>_F = D_c^T W Q_c`` for every row c."""
    return np.einsum("cd,cd->c", D @ W, Q)


def _fin_basis(De: np.ndarray, Qe: np.ndarray) -> np.ndarray:
    """Coefficients B (m_e, r): ``F_k = sum_j B_jk E_j`` is a Frobenius-orthonormal basis of
    S_fin (r = its dimension)."""
    if De.shape[0] == 0:
        return np.zeros((0, 0))
    lam, U = np.linalg.eigh(_gram(De, Qe, De, Qe))
    keep = lam > _EIG_RTOL * De.shape[0] * max(float(lam.max()), 1e-300)
    return U[:, keep] / np.sqrt(lam[keep])


def _project_fin(W: np.ndarray, De: np.ndarray, Qe: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Frobenius projection of W onto S_fin."""
    if B.size == 0:
        return np.zeros_like(W)
    coef = B @ (B.T @ _inner(W, De, Qe))
    return _combine(coef, De, Qe)


def fin_projection(W: Any, X: Any, Z: Any, sets: Any) -> np.ndarray:
    r"""The component of ``W`` in :math:`\mathcal S_{fin}` (Frobenius projection), (d, d).

    Applied to a trajectory's ``W(k)`` it gives the part the papers predict converges to
    the finite component ``W^fin``; see :func:`finite_part`.
    """
    lay = _layout(X, Z, sets)
    d = lay.X.shape[2]
    W = check_array(W, "W", shape=(d, d))
    return _project_fin(W, lay.De, lay.Qe, _fin_basis(lay.De, lay.Qe))


def project_out_fin(W: Any, X: Any, Z: Any, sets: Any) -> np.ndarray:
    r"""``W`` minus its component in :math:`\mathcal S_{fin}`: the part of ``W`` that the
    Gen-SVM direction ``W^svm`` describes."""
    W = np.asarray(W, dtype=np.float64)
    return W - fin_projection(W, X, Z, sets)


# ----------------------------------------------------------------------------------------
# Gen-SVM
# ----------------------------------------------------------------------------------------
@dataclass
class GenSVMResult:
    """Outcome of a Gen-SVM solve.

    W: (d, d) ``W^svm``, orthogonal to ``S_fin`` and scaled to minimum margin exactly 1.
    objective: ``||W||_F`` (not squared).
    status: :class:`attnlens._results.Status`.
    sets: the selected sets ``O_i`` (sorted int arrays).
    support: per sequence, the non-selected tokens ``u`` with margin ``<= 1 + 1e-6``.
    margins: (n, T) ``(x_{i,o} - x_iu)^T W z_i`` for ``u`` outside ``O_i`` (``o`` any token of
        ``O_i``); ``inf`` on ``O_i``.
    duals: (n, T) multipliers ``alpha >= 0`` of the margin constraints (0 on ``O_i``);
    equality_duals: (n, T) multipliers ``mu`` of ``(x_it - x_{i,o_i})^T W z_i = 0`` for
        ``t in O_i`` other than the first (``o_i``); KKT of ``min 1/2 ||W||_F^2``:
        ``W = sum alpha_c A_c + sum mu_j E_j``.
    equality_residual: ``max |(x_it - x_{i,o_i})^T W z_i|`` over ``t in O_i`` (should be ~0).
    certificate: relative gap ``(objective - lower) / objective`` with the dual lower bound
        ``1^T alpha / ||P sum alpha_c A_c||_F`` (``P`` projects out ``S_fin``).
    fin_dim: dimension of ``S_fin``. iterations, seconds, method.
    """

    W: np.ndarray
    objective: float
    status: Status
    sets: list[np.ndarray]
    support: list[np.ndarray]
    margins: np.ndarray
    duals: np.ndarray
    equality_duals: np.ndarray
    equality_residual: float
    certificate: float
    fin_dim: int
    iterations: int
    seconds: float
    method: str
    _fin: tuple[np.ndarray, np.ndarray, np.ndarray] = field(repr=False, default=None)

    def fin_component(self, W: Any) -> np.ndarray:
        """Projection of ``W`` (d, d) onto ``S_fin`` of these sets."""
        W = check_array(W, "W", shape=self.W.shape)
        De, Qe, B = self._fin
        return _project_fin(W, De, Qe, B)

    def project_out_fin(self, W: Any) -> np.ndarray:
        """``W`` minus its ``S_fin`` component."""
        W = check_array(W, "W", shape=self.W.shape)
        return W - self.fin_component(W)


def _find_ray(lay: _Layout, max_entries: int = 4_000_000) -> np.ndarray | None:
    """``alpha >= 0``, ``sum alpha = 1``, ``sum alpha_c A_c + sum mu_j E_j = 0`` (LP), or None."""
    from scipy.optimize import linprog

    m, me, d = lay.Da.shape[0], lay.De.shape[0], lay.X.shape[2]
    if (m + me) * d * d > max_entries:
        return None
    Aa = np.einsum("ma,mb->abm", lay.Da, lay.Qa).reshape(d * d, m)
    Ae = np.einsum("ma,mb->abm", lay.De, lay.Qe).reshape(d * d, me)
    A_eq = np.vstack([np.hstack([Aa, Ae]), np.r_[np.ones(m), np.zeros(me)][None]])
    b_eq = np.zeros(d * d + 1)
    b_eq[-1] = 1.0
    bounds = [(0, None)] * m + [(None, None)] * me
    res = linprog(np.zeros(m + me), A_eq=A_eq, b_eq=b_eq, bounds=bounds, method="highs")
    return res.x[:m] if res.status == 0 else None


def _raise_infeasible(lay: _Layout, method: str, ray: np.ndarray | None = None) -> None:
    evidence: dict[str, Any] = {"method": method, "sets": [s.tolist() for s in lay.sets]}
    where = "some sequence (no dual ray computed: too large)"
    if ray is None:
        ray = _find_ray(lay)
    if ray is not None and ray.size:
        scale = float(ray.max())
        seqs = np.unique(lay.ia[ray > 1e-9 * max(scale, 1e-300)])
        full = np.zeros(lay.in_set.shape)
        full[lay.ia, lay.ua] = ray
        evidence.update(sequences=seqs.tolist(), dual_ray=full)
        where = f"sequences {seqs.tolist()[:10]}"
    raise InfeasibleError(
        f"Gen-SVM is infeasible ({method}): no W orthogonal to S_fin separates the selected "
        f"set from the other tokens in {where}. Try smaller sets, or raise d.",
        evidence,
    )


def _solve_nnls(lay: _Layout, B: np.ndarray, max_iter: int | None) -> dict[str, Any]:
    G = _gram(lay.Da, lay.Qa, lay.Da, lay.Qa)
    if B.size:
        C = _gram(lay.Da, lay.Qa, lay.De, lay.Qe) @ B  # (m, r): <A_c, F_k>
        G = G - C @ C.T
    else:
        C = np.zeros((G.shape[0], 0))
    lam, V = np.linalg.eigh(0.5 * (G + G.T))
    keep = lam > _EIG_RTOL * G.shape[0] * max(float(lam.max()), 1e-300)
    M = np.sqrt(lam[keep])[:, None] * V[:, keep].T  # (p, m): M^T M = projected Gram
    m = G.shape[0]
    E = np.vstack([M, np.ones((1, m))])
    f = np.zeros(E.shape[0])
    f[-1] = 1.0
    try:
        u, _ = nnls(E, f, maxiter=max_iter)
    except RuntimeError as exc:  # iteration cap in older SciPy
        logger.warning("NNLS stopped: %s", exc)
        return {"W": None, "converged": False}
    su = float(u.sum())
    if su >= 1.0 - 1e-10:
        return {"W": None, "ray": u / max(su, 1e-300), "converged": True}
    alpha = u / (1.0 - su)
    beta = B @ (C.T @ alpha) if B.size else np.zeros(0)
    W = _combine(alpha, lay.Da, lay.Qa)
    if beta.size:
        W = W - _combine(beta, lay.De, lay.Qe)
    return {"W": W, "alpha": alpha, "mu": -beta, "iterations": int(np.count_nonzero(u)),
            "converged": True}


def _solve_cvxpy(lay: _Layout) -> dict[str, Any]:
    import cvxpy as cp

    d = lay.X.shape[2]
    W = cp.Variable((d, d))
    cons = [cp.sum(cp.multiply(lay.Da @ W, lay.Qa), axis=1) >= 1]
    has_eq = lay.De.shape[0] > 0
    if has_eq:
        cons.append(cp.sum(cp.multiply(lay.De @ W, lay.Qe), axis=1) == 0)
    prob = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(W)), cons)
    prob.solve(solver="CLARABEL")
    if prob.status in (cp.INFEASIBLE, cp.INFEASIBLE_INACCURATE) or W.value is None:
        return {"W": None, "converged": True}
    alpha = np.asarray(cons[0].dual_value, dtype=np.float64).ravel()
    mu = -np.asarray(cons[1].dual_value, dtype=np.float64).ravel() if has_eq else np.zeros(0)
    return {"W": np.asarray(W.value, dtype=np.float64), "alpha": alpha, "mu": mu,
            "iterations": int(getattr(prob.solver_stats, "num_iters", 0) or 0),
            "converged": prob.status == cp.OPTIMAL}


def gen_svm(
    X: Any,
    Z: Any,
    sets: Any,
    *,
    method: str = "auto",
    tol: float = 1e-7,
    max_iter: int | None = None,
) -> GenSVMResult:
    r"""Solve the (Frobenius) Gen-SVM of selected token sets; see the module docstring.

    .. math:: \min_W \|W\|_F \ \text{s.t.}\ (x_{it} - x_{i\tau})^\top W z_i = 0\ (t,\tau
              \in \mathcal O_i),\ (x_{it} - x_{iu})^\top W z_i \ge 1\ (t \in \mathcal O_i,
              u \notin \mathcal O_i).

    Parameters
    ----------
    X : (n, T, d) tokens; Z : (n, d) queries (score ``x_t^T W z``).
    sets : the selected sets ``O_i``: n collections of token indices, an (n,) integer array
        (singletons: the one-token Att-SVM), or an (n, T) boolean mask.
    method : ``"auto"`` (= ``"nnls"``: equalities eliminated by projection, hard-margin dual
        solved by Lawson-Hanson NNLS) or ``"cvxpy"`` (reference, Clarabel).
    tol : target relative duality gap (``certificate``).
    max_iter : NNLS iteration cap (SciPy's default ``3 m`` when None).

    Raises
    ------
    attnlens.errors.InfeasibleError : no W satisfies the constraints (evidence: sequences of a
        dual ray for ``"nnls"``).
    """
    start = time.perf_counter()
    check_option(method, "method", METHODS)
    tol = check_positive(tol, "tol")
    if max_iter is not None:
        max_iter = check_int(max_iter, "max_iter", low=1)
    lay = _layout(X, Z, sets)
    if lay.Da.shape[0] == 0:
        raise ValueError("sets select every token of every sequence: there is no margin "
                         "constraint (W = 0). Leave at least one token out of some set.")
    method = "nnls" if method == "auto" else method
    B = _fin_basis(lay.De, lay.Qe)
    out = _solve_nnls(lay, B, max_iter) if method == "nnls" else _solve_cvxpy(lay)
    if out["W"] is None:
        if not out["converged"]:
            raise RuntimeError(f"Gen-SVM ({method}) stopped at max_iter={max_iter} without a "
                               "solution; raise max_iter.")
        _raise_infeasible(lay, method, out.get("ray"))
    return _finish(lay, B, out, method, tol, start)


def _finish(lay: _Layout, B: np.ndarray, out: dict[str, Any], method: str, tol: float,
            start: float) -> GenSVMResult:
    n, T, d = lay.X.shape
    W = out["W"]
    W = W - _project_fin(W, lay.De, lay.Qe, B)  # exactly orthogonal to S_fin (to rounding)
    m_a = _inner(W, lay.Da, lay.Qa)
    mmin = float(m_a.min())
    if not mmin > 0:
        _raise_infeasible(lay, method)
    W = W / mmin
    m_a = m_a / mmin
    margins = np.full((n, T), np.inf)
    margins[lay.ia, lay.ua] = m_a
    eq_res = float(np.abs(_inner(W, lay.De, lay.Qe)).max()) if lay.De.shape[0] else 0.0
    alpha = np.maximum(np.asarray(out["alpha"], dtype=np.float64), 0.0)
    Balpha = _combine(alpha, lay.Da, lay.Qa)
    Balpha = Balpha - _project_fin(Balpha, lay.De, lay.Qe, B)
    nb = float(np.linalg.norm(Balpha))
    lower = float(alpha.sum() / nb) if nb > 0 else 0.0
    obj = float(np.linalg.norm(W))
    cert = relative_gap(obj, lower)
    if cert <= tol:
        status = Status.OPTIMAL
    elif out["converged"]:
        status = Status.OPTIMAL_INACCURATE
    else:
        status = Status.MAX_ITER
    warn_on_status(status, cert, tol, f"gen_svm(method={method!r})")
    duals = np.zeros((n, T))
    duals[lay.ia, lay.ua] = alpha
    eq_duals = np.zeros((n, T))
    if lay.ie.size:
        eq_duals[lay.ie, lay.te] = out["mu"]
    support = [np.flatnonzero(row <= 1.0 + SUPPORT_TOL) for row in margins]
    return GenSVMResult(
        W=W,
        objective=obj,
        status=status,
        sets=lay.sets,
        support=support,
        margins=margins,
        duals=duals,
        equality_duals=eq_duals,
        equality_residual=eq_res,
        certificate=cert,
        fin_dim=int(B.shape[1]) if B.size else 0,
        iterations=int(out.get("iterations", 0)),
        seconds=time.perf_counter() - start,
        method=method,
        _fin=(lay.De, lay.Qe, B),
    )


# ----------------------------------------------------------------------------------------
# the finite component W^fin
# ----------------------------------------------------------------------------------------
@dataclass
class FinitePartResult:
    r"""Outcome of :func:`finite_part`.

    W_fin: (d, d) the finite component, in ``S_fin``. objective: the restricted loss at
    ``W_fin``. status: optimal when the stationarity residual is below ``tol`` and no
    selected token is starved. certificate: ``||Pi_{S_fin} grad L_fin(W_fin)||_F`` (a
    first-order residual: the problem is not convex in general, so this certifies a
    stationary point, not a global minimum). min_probability: the smallest attention
    probability of a selected token at ``W_fin`` (tiny values mean the loss wants to drop a
    token from its set: the restricted problem then has no finite minimizer).
    fin_dim, iterations, seconds, method.
    """

    W_fin: np.ndarray
    objective: float
    status: Status
    certificate: float
    min_probability: float
    fin_dim: int
    iterations: int
    seconds: float
    method: str = "lbfgs"


def _restricted_loss(W: np.ndarray, lay: _Layout, Y: np.ndarray, v: np.ndarray | None,
                     mlp: Any, loss: str) -> tuple[float, np.ndarray, np.ndarray]:
    """Loss with attention restricted to the selected sets, its gradient in W, and the
    attention probabilities (n, T)."""
    from scipy.special import expit

    from attnlens.svm.dynamics import _head

    X, Z = lay.X, lay.Z
    n = X.shape[0]
    s = np.einsum("itd,id->it", X, Z @ W.T)  # (n, T) scores x_it^T W z_i
    s = np.where(lay.in_set, s, -np.inf)
    s = s - s.max(axis=1, keepdims=True)
    p = np.exp(s)
    p /= p.sum(axis=1, keepdims=True)  # (n, T), zero outside the sets
    r = np.einsum("it,itd->id", p, X)  # (n, d)
    f, u = _head(r[None], None if v is None else v[None], mlp)
    f, u = f[0], u[0]  # (n,), (n, d)
    margin = Y * f
    if loss == "logistic":
        value = float(np.logaddexp(0.0, -margin).mean())
        dl = -expit(-margin)
    else:
        value = float(-margin.mean())
        dl = -np.ones_like(margin)
    dh = np.einsum("itd,id->it", X - r[:, None, :], u)  # (x_it - r_i)^T u_i
    c = (dl * Y / n)[:, None] * p * dh  # (n, T)
    a = np.einsum("it,itd->id", c, X)  # (n, d)
    return value, a.T @ Z, p


def finite_part(
    X: Any,
    Z: Any,
    sets: Any,
    Y: Any,
    *,
    v: Any = None,
    mlp: Any = None,
    loss: str = "logistic",
    W0: Any = None,
    tol: float = 1e-8,
    max_iter: int = 1000,
) -> FinitePartResult:
    r"""The finite component :math:`W^{fin} = \arg\min_{W \in \mathcal S_{fin}} L_{fin}(W)`.

    .. math:: L_{fin}(W) = \frac1n \sum_i \ell\Big(Y_i\, h\big(\textstyle\sum_{t \in
              \mathcal O_i} p_{it}(W)\, x_{it}\big)\Big), \quad p_i(W) =
              \mathrm{softmax}_{t \in \mathcal O_i}(x_{it}^\top W z_i),

    the loss of the model in which sequence ``i`` attends to its selected set only (the
    other tokens' probabilities vanish along the Gen-SVM direction). Tarzanagh, Li,
    Thrampoulidis, Oymak (arXiv 2308.16898), non-linear heads: ``W(k) - Pi_{S_fin}^perp W(k)``
    is predicted to converge to ``W^fin``.

    Solved with L-BFGS in an orthonormal basis of ``S_fin`` from ``W0`` (default 0: uniform
    attention inside each set). ``L_fin`` need not be convex: the result is a stationary
    point, certified by the gradient residual.

    Parameters
    ----------
    X : (n, T, d); Z : (n, d); sets : as in :func:`gen_svm`; Y : (n,) labels +-1.
    v : (d,) linear head ``h(r) = v^T r``; or mlp : an
        :class:`attnlens.svm.dynamics.MLPHead` with ``V1`` (m, d) or (1, m, d) and ``v2``
        (m,) or (1, m). Exactly one of them.
    loss : ``"logistic"`` or ``"linear"``. tol : stationarity tolerance; max_iter : L-BFGS cap.
    """
    start = time.perf_counter()
    lay = _layout(X, Z, sets)
    n, T, d = lay.X.shape
    Y = check_array(Y, "Y", shape=(n,))
    if not np.all(np.isin(Y, (-1.0, 1.0))):
        raise ValueError(f"Y must hold labels -1 or +1 only; got {np.unique(Y)[:5].tolist()}.")
    check_option(loss, "loss", ("logistic", "linear"))
    tol = check_positive(tol, "tol")
    max_iter = check_int(max_iter, "max_iter", low=1)
    if (v is None) == (mlp is None):
        raise ValueError("pass exactly one head: v (d,) for a linear head or mlp (MLPHead).")
    if v is not None:
        v = check_array(v, "v", shape=(d,))
    else:
        from attnlens.svm.dynamics import MLPHead

        V1 = check_array(getattr(mlp, "V1", None), "mlp.V1", ndim=(2, 3))
        V1 = V1.reshape((-1,) + V1.shape[-2:])
        v2 = check_array(getattr(mlp, "v2", None), "mlp.v2", ndim=(1, 2)).reshape(1, -1)
        if V1.shape[0] != 1 or V1.shape[2] != d or v2.shape[1] != V1.shape[1]:
            raise ValueError(f"mlp must hold one head with V1 (m, {d}) and v2 (m,); got V1 "
                             f"{np.shape(mlp.V1)} and v2 {np.shape(mlp.v2)}.")
        mlp = MLPHead(V1, v2, getattr(mlp, "activation", "relu"))
    B = _fin_basis(lay.De, lay.Qe)
    r = B.shape[1] if B.size else 0
    # orthonormal basis matrices F_k (r, d, d)
    F = np.stack([_combine(B[:, k], lay.De, lay.Qe) for k in range(r)]) if r else np.zeros(
        (0, d, d))
    c0 = np.zeros(r)
    if W0 is not None:
        W0 = check_array(W0, "W0", shape=(d, d))
        c0 = np.einsum("kab,ab->k", F, W0)

    def fun(c: np.ndarray) -> tuple[float, np.ndarray]:
        W = np.tensordot(c, F, axes=1) if r else np.zeros((d, d))
        val, G, _ = _restricted_loss(W, lay, Y, v, mlp, loss)
        return val, np.einsum("kab,ab->k", F, G)

    iterations = 0
    converged = True
    if r:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            opt = minimize(fun, c0, jac=True, method="L-BFGS-B",
                           options={"maxiter": max_iter, "gtol": tol, "ftol": 1e-15})
        c = opt.x
        iterations = int(opt.nit)
        converged = opt.nit < max_iter
    else:
        c = c0
    W_fin = np.tensordot(c, F, axes=1) if r else np.zeros((d, d))
    val, G, p = _restricted_loss(W_fin, lay, Y, v, mlp, loss)
    cert = float(np.linalg.norm(np.einsum("kab,ab->k", F, G))) if r else 0.0
    pmin = float(p[lay.in_set].min())
    if cert <= tol and pmin > 1e-6:
        status = Status.OPTIMAL
    elif converged:
        status = Status.OPTIMAL_INACCURATE
    else:
        status = Status.MAX_ITER
    if pmin <= 1e-6:
        warnings.warn(
            f"finite_part: a selected token gets attention probability {pmin:.3g} at W_fin; "
            "the restricted loss wants to drop it (no finite minimizer for these sets). "
            "Check the sets (e.g. a larger selection threshold).",
            RuntimeWarning,
            stacklevel=2,
        )
    else:
        warn_on_status(status, cert, tol, "finite_part")
    return FinitePartResult(
        W_fin=W_fin,
        objective=val,
        status=status,
        certificate=cert,
        min_probability=pmin,
        fin_dim=r,
        iterations=iterations,
        seconds=time.perf_counter() - start,
    )
