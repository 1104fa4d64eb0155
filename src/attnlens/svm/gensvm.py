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
from scipy.optimize import minimize

from attnlens._results import Status, warn_on_status
from attnlens._validation import (
    Array,
    InstanceOf,
    Integral,
    Interval,
    Options,
    Real,
    check_array,
    raise_invalid,
    validate_params,
)
from attnlens.errors import InfeasibleError
from attnlens.svm._heads import MLPHead, head_output
from attnlens.svm._numerics import support_mask
from attnlens.svm._solvers.certificate import dual_ray_lp, relative_gap
from attnlens.svm._solvers.gensvm import (
    GenLayout,
    build_layout,
    combine,
    fin_basis,
    inner,
    project_fin,
    solve_nnls,
)
from attnlens.svm._solvers.output import SolverOutput
from attnlens.svm._solvers.reference import solve_reference

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
# finite_part: a selected token below this attention probability is starved (no finite W^fin)
STARVED_PROBABILITY = 1e-6


# ----------------------------------------------------------------------------------------
# input and layout
# ----------------------------------------------------------------------------------------
def _check_sets(sets: Any, n: int, T: int) -> list[np.ndarray]:
    """``sets``: n iterables of token indices, an (n,) integer array (singletons), or an
    (n, T) boolean mask. Returns n sorted unique int64 arrays."""
    def bad(must: str, got: Any, hint: str = "") -> None:
        raise_invalid("sets", must, got, hint)

    if sets is None:
        bad("the selected tokens of each sequence", None)
    if isinstance(sets, np.ndarray):
        if sets.dtype == bool:
            if sets.shape != (n, T):
                bad(f"a boolean mask of shape ({n}, {T})", f"got shape {sets.shape}")
            sets = [np.flatnonzero(row) for row in sets]
        elif sets.ndim == 1 and sets.dtype.kind in "iuf":
            sets = [[a] for a in sets.tolist()]
        else:
            sets = list(sets)
    if isinstance(sets, str | bytes) or not isinstance(sets, Iterable):
        bad(f"a sequence of {n} token-index collections", sets)
    sets = list(sets)
    if len(sets) != n:
        bad(f"one collection per sequence (n={n})", f"got {len(sets)}")
    out = []
    for i, s in enumerate(sets):
        arr = np.atleast_1d(np.asarray(s))
        if arr.size == 0:
            bad(f"non-empty collections (sets[{i}] is empty)", s,
                "Every sequence selects at least one token.")
        if arr.dtype.kind == "f" and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        if arr.dtype.kind not in "iu" or arr.ndim != 1:
            bad(f"integer token indices (sets[{i}])", s)
        if arr.min() < 0 or arr.max() >= T:
            bad(f"token indices in [0, {T - 1}] (sets[{i}])",
                f"got {arr[(arr < 0) | (arr >= T)].tolist()}")
        out.append(np.unique(arr.astype(np.int64)))
    return out


def _layout(X: Any, Z: Any, sets: Any) -> GenLayout:
    X = check_array(X, "X", ndim=3)
    n, T, d = X.shape
    Z = check_array(Z, "Z", shape=(n, d))
    return build_layout(X, Z, _check_sets(sets, n, T))


_SETS = [InstanceOf(list, tuple, np.ndarray, name="a list of n token-index collections, an (n,) "
                   "integer array or an (n, T) boolean mask")]
_PROJECTION_PARAMS = {"W": [Array(ndim=2)], "X": [Array(ndim=3)], "Z": [Array(ndim=2)],
                      "sets": _SETS}


@validate_params(_PROJECTION_PARAMS)
def fin_projection(W: Any, X: Any, Z: Any, sets: Any) -> np.ndarray:
    r"""The component of ``W`` in :math:`\mathcal S_{fin}` (Frobenius projection), (d, d).

    Applied to a trajectory's ``W(k)`` it gives the part the papers predict converges to
    the finite component ``W^fin``; see :func:`finite_part`.
    """
    lay = _layout(X, Z, sets)
    d = lay.X.shape[2]
    W = check_array(W, "W", shape=(d, d))
    return project_fin(W, lay.De, lay.Qe, fin_basis(lay.De, lay.Qe))


@validate_params(_PROJECTION_PARAMS)
def project_out_fin(W: Any, X: Any, Z: Any, sets: Any) -> np.ndarray:
    r"""``W`` minus its component in :math:`\mathcal S_{fin}`: the part of ``W`` that the
    Gen-SVM direction ``W^svm`` describes."""
    W = np.asarray(W, dtype=np.float64)
    return W - fin_projection(W, X, Z, sets)


# ----------------------------------------------------------------------------------------
# Gen-SVM
# ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GenSVMResult:
    """Outcome of a Gen-SVM solve.

    W: (d, d) ``W^svm``, orthogonal to ``S_fin`` and scaled to minimum margin exactly 1.
    objective: ``||W||_F`` (not squared).
    status: :class:`attnlens._results.Status`.
    sets: the selected sets ``O_i`` (sorted int arrays).
    support: per sequence, the non-selected tokens ``u`` with margin ``<= 1 + SUPPORT_TOL``
        (:mod:`attnlens.svm._numerics`).
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
        return project_fin(W, De, Qe, B)

    def project_out_fin(self, W: Any) -> np.ndarray:
        """``W`` minus its ``S_fin`` component."""
        W = check_array(W, "W", shape=self.W.shape)
        return W - self.fin_component(W)


def _raise_infeasible(lay: GenLayout, method: str, ray: np.ndarray | None = None) -> None:
    evidence: dict[str, Any] = {"method": method, "sets": [s.tolist() for s in lay.sets]}
    where = "some sequence (no dual ray computed: too large)"
    if ray is None:
        ray = dual_ray_lp(lay.Da, lay.Qa, lay.De, lay.Qe)
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


def _solve_cvxpy(lay: GenLayout) -> SolverOutput:
    return solve_reference(lay.Da, lay.Qa, "fro", De=lay.De, Qe=lay.Qe)


@validate_params({
    "X": [Array(ndim=3)],
    "Z": [Array(ndim=2)],
    "sets": _SETS,
    "method": [Options(*METHODS)],
    "tol": [Interval(Real, 0, None, closed="neither")],
    "max_iter": [None, Interval(Integral, 1, None)],
})
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
    tol = float(tol)
    max_iter = None if max_iter is None else int(max_iter)
    lay = _layout(X, Z, sets)
    if lay.Da.shape[0] == 0:
        raise_invalid("sets", "a selection that leaves some token out",
                      "got sets holding every token of every sequence",
                      "There is no margin constraint (W = 0).", "gen_svm")
    method = "nnls" if method == "auto" else method
    B = fin_basis(lay.De, lay.Qe)
    out = solve_nnls(lay, B, max_iter) if method == "nnls" else _solve_cvxpy(lay)
    if out.W is None:
        if not out.converged:
            raise RuntimeError(f"Gen-SVM ({method}) stopped at max_iter={max_iter} without a "
                               "solution; raise max_iter.")
        _raise_infeasible(lay, method, out.ray)
    return _finish(lay, B, out, method, tol, start)


def _finish(lay: GenLayout, B: np.ndarray, out: SolverOutput, method: str, tol: float,
            start: float) -> GenSVMResult:
    n, T, d = lay.X.shape
    W = out.W
    W = W - project_fin(W, lay.De, lay.Qe, B)  # exactly orthogonal to S_fin (to rounding)
    m_a = inner(W, lay.Da, lay.Qa)
    mmin = float(m_a.min())
    if not mmin > 0:
        _raise_infeasible(lay, method)
    W = W / mmin
    m_a = m_a / mmin
    margins = np.full((n, T), np.inf)
    margins[lay.ia, lay.ua] = m_a
    eq_res = float(np.abs(inner(W, lay.De, lay.Qe)).max()) if lay.De.shape[0] else 0.0
    alpha = np.maximum(np.asarray(out.duals, dtype=np.float64), 0.0)
    Balpha = combine(alpha, lay.Da, lay.Qa)
    Balpha = Balpha - project_fin(Balpha, lay.De, lay.Qe, B)
    nb = float(np.linalg.norm(Balpha))
    lower = float(alpha.sum() / nb) if nb > 0 else 0.0
    obj = float(np.linalg.norm(W))
    cert = relative_gap(obj, lower)
    if cert <= tol:
        status = Status.OPTIMAL
    elif out.converged:
        status = Status.OPTIMAL_INACCURATE
    else:
        status = Status.MAX_ITER
    warn_on_status(status, cert, tol, f"gen_svm(method={method!r})")
    duals = np.zeros((n, T))
    duals[lay.ia, lay.ua] = alpha
    eq_duals = np.zeros((n, T))
    if lay.ie.size:
        eq_duals[lay.ie, lay.te] = out.eq_duals
    support = [np.flatnonzero(row) for row in support_mask(margins)]
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
        iterations=int(out.iterations),
        seconds=time.perf_counter() - start,
        method=method,
        _fin=(lay.De, lay.Qe, B),
    )


# ----------------------------------------------------------------------------------------
# the finite component W^fin
# ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
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


def _restricted_loss(W: np.ndarray, lay: GenLayout, Y: np.ndarray, v: np.ndarray | None,
                     mlp: Any, loss: str) -> tuple[float, np.ndarray, np.ndarray]:
    """Loss with attention restricted to the selected sets, its gradient in W, and the
    attention probabilities (n, T)."""
    from scipy.special import expit

    X, Z = lay.X, lay.Z
    n = X.shape[0]
    s = np.einsum("itd,id->it", X, Z @ W.T)  # (n, T) scores x_it^T W z_i
    s = np.where(lay.in_set, s, -np.inf)
    s = s - s.max(axis=1, keepdims=True)
    p = np.exp(s)
    p /= p.sum(axis=1, keepdims=True)  # (n, T), zero outside the sets
    r = np.einsum("it,itd->id", p, X)  # (n, d)
    f, u = head_output(r[None], None if v is None else v[None], mlp)
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


@validate_params({
    "X": [Array(ndim=3)],
    "Z": [Array(ndim=2)],
    "sets": _SETS,
    "Y": [Array(ndim=1)],
    "v": [None, Array(ndim=1)],
    "mlp": [None, InstanceOf(MLPHead)],
    "loss": [Options("logistic", "linear")],
    "W0": [None, Array(ndim=2)],
    "tol": [Interval(Real, 0, None, closed="neither")],
    "max_iter": [Interval(Integral, 1, None)],
})
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
        :class:`attnlens.svm.MLPHead` with ``V1`` (m, d) or (1, m, d) and ``v2``
        (m,) or (1, m). Exactly one of them.
    loss : ``"logistic"`` or ``"linear"``. tol : stationarity tolerance; max_iter : L-BFGS cap.
    """
    start = time.perf_counter()
    lay = _layout(X, Z, sets)
    n, T, d = lay.X.shape
    Y = check_array(Y, "Y", shape=(n,))
    if not np.all(np.isin(Y, (-1.0, 1.0))):
        raise_invalid("Y", "labels -1 or +1", f"got {np.unique(Y)[:5].tolist()}",
                      "Map the classes to -1/+1.", "finite_part")
    tol, max_iter = float(tol), int(max_iter)
    if (v is None) == (mlp is None):
        raise_invalid("v", "given exactly when mlp is None", v,
                      "Pass exactly one head: v (d,) for a linear head or mlp (MLPHead).",
                      "finite_part")
    if v is not None:
        v = check_array(v, "v", shape=(d,))
    else:
        V1 = check_array(getattr(mlp, "V1", None), "mlp.V1", ndim=(2, 3))
        V1 = V1.reshape((-1,) + V1.shape[-2:])
        v2 = check_array(getattr(mlp, "v2", None), "mlp.v2", ndim=(1, 2)).reshape(1, -1)
        if V1.shape[0] != 1 or V1.shape[2] != d or v2.shape[1] != V1.shape[1]:
            raise_invalid("mlp", f"one head with V1 (m, {d}) and v2 (m,)",
                          f"got V1 {np.shape(mlp.V1)} and v2 {np.shape(mlp.v2)}",
                          "Build it with MLPHead.random(1, d, hidden, seed).", "finite_part")
        mlp = MLPHead(V1, v2, getattr(mlp, "activation", "relu"))
    B = fin_basis(lay.De, lay.Qe)
    r = B.shape[1] if B.size else 0
    # orthonormal basis matrices F_k (r, d, d)
    F = np.stack([combine(B[:, k], lay.De, lay.Qe) for k in range(r)]) if r else np.zeros(
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
    if cert <= tol and pmin > STARVED_PROBABILITY:
        status = Status.OPTIMAL
    elif converged:
        status = Status.OPTIMAL_INACCURATE
    else:
        status = Status.MAX_ITER
    if pmin <= STARVED_PROBABILITY:
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
