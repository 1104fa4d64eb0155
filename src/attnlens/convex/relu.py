r"""The ReLU program: cone-constrained convex heads, solved by projected FISTA.

Sahiner et al., "Unraveling Attention via Convex Duality", ICML 2022 (arXiv 2205.08078);
Pilanci & Ergen, "Neural networks are convex regularizers", ICML 2020; Sahiner et al.,
"Vector-output ReLU neural network problems are copositive programs", ICLR 2021; Mishkin,
Sahiner & Pilanci, "Fast convex optimization for two-layer ReLU networks", ICML 2022 (pyscnn).

For sampled gates ``h_j`` with patterns ``D_j`` the ReLU head's training problem, restricted to
units whose activation pattern on the training data is one of the ``D_j``, is

.. math::  \min_{Z_j}\ f\Big(\sum_j \mathcal A_j(Z_j)\Big) + \beta \sum_j \|Z_j\|_{*,\mathcal K_j},
   \qquad \|Z\|_{*,\mathcal K} = \min\Big\{\sum_k \|w_k\|\|v_k\| :
   Z = \sum_k w_k v_k^\top,\ w_k \in \mathcal K\Big\}

with ``A_j`` the gated operator of pattern ``D_j`` and ``K_j`` the cone of
:mod:`attnlens.convex.cones`. The cone-constrained nuclear norm is NP-hard to evaluate in
general (a copositive program). attnlens solves the **restriction** to a fixed dictionary of
unit right directions ``g_1..g_K`` per block (signed: ``E_j = [G_j, -G_j]``):

.. math::  P_{\mathrm{dict}} = \min_{x_{jk} \in \mathcal K_j}\
   f\Big(\sum_j \mathcal A_j\big(\textstyle\sum_k x_{jk} e_{jk}^\top\big)\Big)
   + \beta \sum_{j,k} \|x_{jk}\|_2

(a group lasso with linear cone constraints). Every feasible point is a ReLU network with the
same outputs on the training data and the same regularized objective (unit ``k``: first layer
``sqrt(||x||) x/||x||``, second layer ``sqrt(||x||) e_k``), so ``P_dict`` is attained.
Bounds: ``P_gated <= P_relu(patterns) <= P_dict``, where ``P_gated`` is the gated-ReLU program
on the same patterns (drop the cones: a relaxation), whose certified dual value is reported as
``lower_bound``. With a one-column block (``q c = 1``: MLP or FNO with one output) the signed
dictionary ``{+1, -1}`` is complete and ``P_dict = P_relu`` exactly (Pilanci & Ergen's program,
pyscnn's ``ConvexReLU``). The default dictionary is the output-coordinate axes (pyscnn's
one-vs-all extension) plus the right singular vectors of the gated-relaxation solution.

Solver (:func:`cone_fista`): accelerated proximal gradient whose prox is exact --
``prox(z) = shrink_beta(Pi_K(z))`` for a convex cone -- with the projection of
:meth:`attnlens.convex.cones.ConeBlock.project`; iterates are feasible and no penalty parameter
is tuned. Certificate (:func:`certify_relu`): a residual floating-point violation is repaired by
moving the column along the gate generator ``h_j`` (inside ``K_j``) before the primal value is
taken; the dual point ``t grad f`` with ``t = min(1, beta / max_k ||Pi_K(-A^* grad f e_k)||)``
is dual feasible (the dual norm of a cone-constrained column is computed exactly by one
projection), so ``(P - D) / P`` bounds the relative suboptimality for ``P_dict``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field

import numpy as np

from attnlens._results import Status
from attnlens.convex import losses
from attnlens.convex.cones import build_cones
from attnlens.convex.programs import Program, group_slices, pattern_block
from attnlens.convex.solvers import svd

logger = logging.getLogger(__name__)


@dataclass
class ReluProgram(Program):
    """Gated-pattern blocks plus one cone per block and the right-direction dictionaries.

    ``forward(Zs)`` is the convex model's output (patterns fixed). ``directions[b]`` is a
    (q c, K_b) matrix of unit columns (``None``: output-coordinate axes, set by the solver).
    """

    cones: list = field(default_factory=list)
    directions: list | None = None

    def as_gated(self) -> Program:
        """The gated-ReLU relaxation on the same patterns (drops the cone constraints)."""
        return Program(self.blocks, self.n_outputs, self.head, "gated_relu", dict(self.meta))

    def signed_directions(self) -> list[np.ndarray]:
        dirs = self.directions if self.directions is not None else self.axis_directions()
        return [np.hstack([G, -G]) for G in dirs]

    def axis_directions(self) -> list[np.ndarray]:
        return [np.eye(b.zshape(self.n_outputs)[1]) for b in self.blocks]

    # ---------------------------------------------------------------- factored operator
    def zs(self, Xs: list[np.ndarray]) -> list[np.ndarray]:
        """``Z_j = X_j E_j^T`` (p, q c) from the cone variables ``X_j`` (p, 2K_j)."""
        return [X @ E.T for X, E in zip(Xs, self.signed_directions(), strict=True)]

    def forward_x(self, Xs: list[np.ndarray]) -> np.ndarray:
        return self.forward(self.zs(Xs))

    def grad_x(self, R: np.ndarray) -> list[np.ndarray]:
        """``A_j^*(R) E_j`` (p, 2K_j): gradient of ``<R, forward_x(X)>`` in ``X_j``."""
        return [b.adjoint(R) @ E for b, E in zip(self.blocks, self.signed_directions(),
                                                 strict=True)]

    def x_zeros(self) -> list[np.ndarray]:
        return [np.zeros((c.p, E.shape[1])) for c, E in zip(self.cones,
                                                            self.signed_directions(),
                                                            strict=True)]


def build_relu_program(X: np.ndarray, head: str, n_outputs: int, gates: np.ndarray,
                       groups: int = 1) -> ReluProgram:
    """ReLU program of ``head`` on tokens ``X`` (n, s, d) for gate generators ``gates``."""
    n, s, d = X.shape
    nb = groups if head == "bfno" else 1
    if d % nb:
        raise ValueError(f"groups={nb} must divide the feature dimension d={d}.")
    cones, patterns = build_cones(X, head, gates, nb)
    shape = {"self_attention": (n, s, s), "mixer": (n, s, d), "fno": (n, s), "bfno": (n, s),
             "mlp": (n,)}[head]
    blocks = []
    b = 0
    for sl in group_slices(d, nb):
        Xg = X[:, :, sl] if head == "bfno" else X
        for _ in gates:
            blocks.append(pattern_block(Xg, head, patterns[b].reshape(shape)))
            b += 1
    return ReluProgram(blocks, n_outputs, head, "relu", {"groups": groups, "s": s, "d": d},
                       cones=cones)


# ------------------------------------------------------------------------ certificate


def make_feasible(program: ReluProgram, Xs: list[np.ndarray]):
    """Move violated columns along the gate generator until ``C_j x >= 0``.

    Returns ``(Xs_feasible, violation, ok)``: ``violation`` is the largest relative violation
    ``max(-C x) / max|C x|`` before the repair; ``ok`` is False when a violated row has a zero
    generator pre-activation (a tie) and cannot be repaired this way.
    """
    out, worst, ok = [], 0.0, True
    for X, cone in zip(Xs, program.cones, strict=True):
        V = cone.apply(X)  # (N, K)
        scale = float(np.max(np.abs(V))) if V.size else 0.0
        neg = V < 0
        if not neg.any():
            out.append(X)
            continue
        worst = max(worst, float(np.max(-V[neg])) / max(scale, 1e-300))
        ch = cone.apply(cone.interior[:, None])[:, 0]  # (N,) >= 0
        bad = neg & (ch[:, None] <= 0)
        if bad.any():
            ok = False
        with np.errstate(divide="ignore", invalid="ignore"):
            need = np.where(neg & (ch[:, None] > 0), -V / ch[:, None], 0.0)
        tau = need.max(axis=0) * (1 + 1e-9)  # (K,)
        out.append(X + cone.interior[:, None] * tau[None, :])
    return out, worst, ok


def certify_relu(program: ReluProgram, Xs: list[np.ndarray], Y: np.ndarray, beta: float,
                 loss: str, warm: list | None = None) -> dict:
    """Primal value at the repaired point, dual value and relative gap (see module doc).

    The dual norm of column ``k`` is computed exactly:
    ``min_{mu >= 0} ||grad_k - C^T mu|| = ||Pi_K(-grad_k)||`` (one cone projection).
    """
    Xf, violation, ok = make_feasible(program, Xs)
    yhat = program.forward_x(Xf)
    primal = losses.value(loss, yhat, Y) + beta * sum(
        float(np.linalg.norm(X, axis=0).sum()) for X in Xf)
    grad = losses.gradient(loss, yhat, Y)
    warm = warm if warm is not None else [None] * len(Xf)
    gam, new_warm = 0.0, []
    for W, cone, w in zip(program.grad_x(grad), program.cones, warm, strict=True):
        P, act = cone.project(-W, w)
        new_warm.append(act)
        gam = max(gam, float(np.linalg.norm(P, axis=0).max()))
    t = 1.0 if gam <= beta else beta / gam
    dual = losses.dual_value(loss, grad, Y, t)
    gap = max(primal - dual, 0.0)
    return {"primal": primal, "dual": dual, "certificate": gap / max(abs(primal), 1e-12),
            "grad_ratio": gam / beta, "X": Xf, "violation": violation, "repairable": ok,
            "warm": new_warm}


# ------------------------------------------------------------------------ solver


def _group_shrink(X: np.ndarray, tau: float) -> np.ndarray:
    nrm = np.linalg.norm(X, axis=0)
    scale = np.maximum(1.0 - tau / np.maximum(nrm, 1e-300), 0.0)
    return X * scale[None, :]


def _smooth_norm_sq(program: ReluProgram, rng: np.random.Generator, iters: int = 25) -> float:
    Xs = [rng.standard_normal(X.shape) for X in program.x_zeros()]
    lam = 0.0
    for _ in range(iters):
        nrm = np.sqrt(sum(np.sum(X**2) for X in Xs))
        if nrm == 0:
            return 0.0
        Xs = [X / nrm for X in Xs]
        new = program.grad_x(program.forward_x(Xs))
        lam = float(sum(np.sum(a * b) for a, b in zip(Xs, new, strict=True)))
        Xs = new
    return lam


def cone_fista(program: ReluProgram, Y: np.ndarray, beta: float, loss: str, *,
               tol: float = 1e-6, max_iter: int = 20000, check_every: int = 10,
               rng: np.random.Generator | None = None, progress: bool = False):
    """Accelerated proximal gradient with the exact prox of ``beta ||x|| + I_K(x)``.

    For a convex cone ``K`` that prox is ``shrink_beta(Pi_K(z))`` (project, then shrink the
    norm), so every iterate is feasible and the step size is set by the loss alone
    (``1/L``, ``L = ||A||^2`` times the loss curvature): no penalty parameter. Gradient
    restarts (O'Donoghue & Candes 2015); the certificate of :func:`certify_relu` every
    ``check_every`` iterations. Returns a :class:`~attnlens.convex.solvers.ConvexResult`.
    """
    from attnlens.convex.solvers import DEFAULT_SEED, ConvexResult, _bar

    start = time.perf_counter()
    rng = rng if rng is not None else np.random.default_rng(DEFAULT_SEED)
    n = Y.shape[0]
    L = max(1.05 * _smooth_norm_sq(program, rng) * losses.curvature(loss) / n, 1e-12)
    X = program.x_zeros()
    Yx = [x.copy() for x in X]
    warm = [None] * len(X)
    cwarm = None
    t = 1.0
    status, it = Status.MAX_ITER, 0
    cert: dict = {}
    prev = np.inf
    bar = _bar(progress, max_iter, "relu")
    for it in range(1, max_iter + 1):
        g = program.grad_x(losses.gradient(loss, program.forward_x(Yx), Y))
        Xn = []
        for b, (y, gj, cone) in enumerate(zip(Yx, g, program.cones, strict=True)):
            P, warm[b] = cone.project(y - gj / L, warm[b])
            Xn.append(_group_shrink(P, beta / L))
        inner = sum(np.sum((y - zn) * (zn - z)) for y, zn, z in zip(Yx, Xn, X, strict=True))
        if inner > 0:
            t = 1.0
        t_new = 0.5 * (1 + np.sqrt(1 + 4 * t * t))
        mom = (t - 1) / t_new
        Yx = [zn + mom * (zn - z) for zn, z in zip(Xn, X, strict=True)]
        X, t = Xn, t_new
        if it % check_every == 0 or it == max_iter:
            cert = certify_relu(program, X, Y, beta, loss, cwarm)
            cwarm = cert["warm"]
            if cert["primal"] > prev * (1 + 1e-9) + 1e-15:  # safeguard: step too long
                L *= 2.0
                Yx, t = [x.copy() for x in X], 1.0
            prev = min(prev, cert["primal"])
            if bar is not None:
                bar.update(check_every)
                bar.set_postfix(cert=f"{cert['certificate']:.2e}")
            if cert["certificate"] <= tol and cert["repairable"]:
                status = Status.OPTIMAL
                break
    if bar is not None:
        bar.close()
    if not cert:
        cert = certify_relu(program, X, Y, beta, loss)
    res = ConvexResult(objective=cert["primal"], status=status,
                       certificate=cert["certificate"], iterations=it,
                       seconds=time.perf_counter() - start, method="relu-fista",
                       Z=program.zs(cert["X"]), duality_gap=cert["primal"] - cert["dual"],
                       dual_objective=cert["dual"], grad_ratio=cert["grad_ratio"],
                       cone_factors=list(zip(cert["X"], program.signed_directions(),
                                             strict=True)),
                       constraint_violation=cert["violation"])
    return res


def default_directions(program: ReluProgram, gated_Z: list[np.ndarray] | None,
                       rtol: float = 1e-3) -> list[np.ndarray]:
    """Output-coordinate axes plus the right singular vectors of the gated solution.

    Blocks with one column (``q c = 1``) keep the single axis (the dictionary is then
    complete). Singular vectors with ``sigma < rtol * sigma_max`` are left out.
    """
    dirs = []
    for b, G in enumerate(program.axis_directions()):
        if G.shape[0] == 1 or gated_Z is None:
            dirs.append(G)
            continue
        _, S, Vt = svd(gated_Z[b])
        k = int(np.count_nonzero(S > rtol * max(S[0], 1e-300))) if S.size else 0
        dirs.append(np.hstack([G, Vt[:k].T]))
    return dirs


def solve_relu(program: ReluProgram, Y: np.ndarray, beta: float, loss: str, *,
               solver: str = "auto", tol: float = 1e-6, max_iter: int = 20000,
               rng: np.random.Generator | None = None, progress: bool = False):
    """Relaxation (lower bound, directions), then the restricted ReLU program.

    1. the gated-ReLU program on the same patterns (cones dropped) is solved; its certified
       dual value is a lower bound on the exact cone-constrained program (``lower_bound``);
    2. unless ``program.directions`` is set, the dictionary is :func:`default_directions`;
    3. the restricted program is solved by :func:`cone_fista` (``solver`` "auto"/"fista") or
       by the cvxpy reference (``solver="cvxpy"``).
    """
    from attnlens.convex.solvers import solve

    if solver == "bm":
        raise ValueError(
            "solver='bm' cannot enforce the ReLU cone constraints; use solver='auto' "
            "(projected FISTA with exact cone projections) or 'cvxpy' (reference), or "
            "activation='gated_relu' for the unconstrained gated program."
        )
    if solver not in ("auto", "fista", "cvxpy"):
        raise ValueError(f"solver must be one of 'auto', 'fista', 'cvxpy' for the ReLU "
                         f"program; got {solver!r}.")
    relax = solve(program.as_gated(), Y, beta, loss, solver="cvxpy" if solver == "cvxpy"
                  else "auto", tol=max(tol, 1e-6), max_iter=max_iter, rng=rng, warn=False)
    if program.directions is None:
        program = dataclasses.replace(program, directions=default_directions(program, relax.Z))
    if solver == "cvxpy":
        from attnlens.convex._reference import solve_relu_cvxpy

        res = solve_relu_cvxpy(program, Y, beta, loss)
        if res.certificate > tol and res.status is Status.OPTIMAL:
            res.status = Status.OPTIMAL_INACCURATE
    else:
        res = cone_fista(program, Y, beta, loss, tol=tol, max_iter=max_iter, rng=rng,
                         progress=progress)
    res.lower_bound = relax.dual_objective
    return res
