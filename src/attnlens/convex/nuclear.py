r"""Fast certified solvers for block nuclear-norm programs (linear and gated-ReLU heads).

Solves :math:`\min_{Z_1..Z_m} f\big(\sum_j \mathcal A_j(Z_j)\big) + \beta\sum_j \|Z_j\|_*`
(Sahiner et al., "Unraveling Attention via Convex Duality", ICML 2022, arXiv 2205.08078), with
``f`` a loss of :mod:`attnlens.convex.losses` and ``A_j`` the implicit operators of
:mod:`attnlens.convex.operators`.

* ``fista``: accelerated proximal gradient with adaptive (gradient) restarts and singular-value
  thresholding per block (Beck & Teboulle 2009; O'Donoghue & Candes 2015). Iterates are one
  flat float64 vector; operator products may run in float32 while the certificate is loose
  (``precision``); large blocks threshold through the eigendecomposition of the small Gram.
* ``ssnal``: the semismooth Newton augmented Lagrangian of :mod:`attnlens.convex.ssnal`
  (squared loss), :func:`ssnal_solver`.
* ``auto`` (default): :func:`auto_solver` -- ``ssnal`` for the squared loss on one Kronecker
  block with a Gram (measured 2-15x faster than FISTA on the realistic linear self-attention
  cases of benchmarks/convex_heads.py), otherwise :func:`fista_path`.
* :func:`fista_path`: FISTA with continuation in ``beta`` from
  ``beta_max`` (where ``Z = 0`` is optimal) -- on ill-conditioned data at small ``beta`` it
  needs about half the iterations of a cold start. (Measured: FISTA with continuation beats
  the Burer-Monteiro solver on every size tried, which stalls at too low a rank at small
  ``beta``; see docs/convex.md.)
* ``bm``: Burer-Monteiro factorization ``Z_j = U_j V_j^T`` with the equivalent smooth penalty
  ``beta/2 (||U_j||^2 + ||V_j||^2)``, L-BFGS, and rank growth along the top singular pair of the
  gradient whenever the certificate shows the factorization is stuck (Burer & Monteiro 2003).
  The operator is applied to the factors, so one step costs ``O(n d^2 r)`` instead of
  ``O(n d^3 c)``; the certificate needs one full gradient at the end of each round.
* ``cvxpy``: the reference formulation of :mod:`attnlens.convex._reference` (Clarabel).

``backend="torch"`` (``fista`` and ``auto``, which is then :func:`fista_path`; ``device``: a
torch device, default the GPU when one is visible) runs the FISTA iterations in float64 torch
on the device (:mod:`attnlens.convex.torch_fista`); the reported certificate is still
evaluated in float64 numpy on the final iterate.

``checkpoint`` (``fista`` and ``auto`` on the numpy backend): the FISTA state is saved to a
:class:`~attnlens.checkpoint.Checkpoint` as it goes, and a later call on the same problem
continues from it with the same iterates -- a fit that outlasts its process (hours at d = 64
with ten classes) resumes instead of starting over.

Every result carries the certificate of :mod:`attnlens.convex.certificate` (the relative
duality gap, a bound on the relative suboptimality); ``tol`` is on the certificate.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from attnlens._results import Status
from attnlens._validation import check_option, raise_invalid
from attnlens.checkpoint import Checkpoint
from attnlens.convex._linalg import DEFAULT_SEED, progress_bar, spectral_norm, svd, svt
from attnlens.convex._reference import solve_cvxpy
from attnlens.convex.certificate import certificate
from attnlens.convex.losses import Loss, get_loss
from attnlens.convex.operators import Program, lipschitz_bound
from attnlens.convex.results import ConvexResult, with_tolerance
from attnlens.convex.ssnal import check_ssnal_loss, ssnal
from attnlens.convex.torch_fista import TorchProgram, fista_torch
from attnlens.errors import NonFiniteError

logger = logging.getLogger(__name__)

#: the ``backend`` values: FISTA iterates in numpy (CPU) or in torch on ``device``
BACKENDS = ("numpy", "torch")
#: the solvers ``backend="torch"`` runs (``"auto"`` is then :func:`fista_path`)
TORCH_SOLVERS = ("auto", "fista")


def svt_flat(program: Program, x: np.ndarray, tau: float) -> np.ndarray:
    """:func:`svt` of every block of the flat vector ``x`` (vector blocks: one group shrink)."""
    shapes = program.zshapes()
    if len(set(shapes)) == 1 and min(shapes[0]) == 1:
        S = x.reshape(len(shapes), -1)
        nrm = np.sqrt(np.sum(S**2, axis=1))
        return (S * (np.maximum(nrm - tau, 0.0) / np.maximum(nrm, 1e-300))[:, None]).ravel()
    return program.flatten([svt(Z, tau) for Z in program.unflatten(x)])


@dataclass(frozen=True)
class FistaState:
    """What the FISTA loop carries from one iteration to the next, at iteration ``it``: a run
    given this state continues exactly where the one that saved it was."""

    it: int
    Z: np.ndarray  # flat iterate
    Yx: np.ndarray  # flat extrapolated point
    t: float
    L: float
    prev_obj: float
    single: bool
    misses: int


@dataclass(frozen=True)
class PathState:
    """A :func:`fista_path` checkpoint: stage ``stage`` (the final ``beta`` is the last), the
    iterations ``used`` before it, its starting Lipschitz estimate, either its warm start
    ``Z`` (not begun) or the FISTA state ``inner`` reached in it, and the ``seconds`` spent
    so far (over every call)."""

    stage: int
    used: int
    lipschitz: float | None
    Z: list | None
    inner: FistaState | None
    seconds: float = 0.0


@dataclass(frozen=True)
class FistaRun:
    """A FISTA result and the Lipschitz estimate it ended with (the next stage starts there)."""

    result: ConvexResult
    lipschitz: float


def fista(program: Program, Y: np.ndarray, beta: float, loss: str | Loss, *,
          tol: float = 1e-6, max_iter: int = 5000, check_every: int = 10,
          Z0: list | None = None, rng: np.random.Generator | None = None,
          progress: bool = False, precision: str = "auto",
          lipschitz: float | None = None, backend: str = "numpy",
          device: str | None = None, checkpoint: Checkpoint | None = None) -> ConvexResult:
    """Accelerated proximal gradient with restarts; see :func:`fista_run`. With a
    ``checkpoint``: :func:`fista_path` without continuation (saves and resumes the state)."""
    if checkpoint is not None:
        return fista_path(program, Y, beta, loss, tol=tol, max_iter=max_iter, rng=rng,
                          progress=progress, precision=precision, min_ratio=np.inf,
                          checkpoint=checkpoint)
    return fista_run(program, Y, beta, loss, tol=tol, max_iter=max_iter,
                     check_every=check_every, Z0=Z0, rng=rng, progress=progress,
                     precision=precision, lipschitz=lipschitz, backend=backend,
                     device=device).result


#: relative duality gap near which FISTA with float32 operator products stalls (measured)
FLOAT32_FLOOR = 1e-4


def float64_switch(tol: float) -> float:
    """Certificate below which ``precision="auto"`` leaves float32 products for float64.

    ``max(10 tol, 1e-3)`` for tight tolerances; 0 (float32 to the end, float64 only to
    confirm) once ``tol`` is at least ten times :data:`FLOAT32_FLOOR` -- at the transfer
    benchmark's ``tol = 1e-3`` this halves the d = 64 gated self-attention fit
    (benchmarks/convex_gated_attention.py) for the same certified iterate count.
    """
    return 0.0 if tol >= 10 * FLOAT32_FLOOR else max(10 * tol, 1e-3)


def gradient_step(program: Program, loss: Loss, Y: np.ndarray, Yx: np.ndarray, L: float,
                  single: bool, AtY: np.ndarray | None) -> np.ndarray:
    """``Yx - grad f(Yx) / L``, the input of the prox; with ``AtY = A^* Y`` (squared loss)
    the gradient is ``(A^* A Yx - A^* Y) / n`` through the program's Gram (float64)."""
    if AtY is not None:
        g = (program.normal_flat(Yx) - AtY) / Y.shape[0]
    else:
        g = program.adjoint_flat(loss.gradient(program.forward_flat(Yx, single), Y), single)
    return Yx - g / L


def fista_run(program: Program, Y: np.ndarray, beta: float, loss: str | Loss, *,
              tol: float = 1e-6, max_iter: int = 5000, check_every: int = 10,
              Z0: list | None = None, rng: np.random.Generator | None = None,
              progress: bool = False, precision: str = "auto",
              lipschitz: float | None = None, backend: str = "numpy",
              device: str | None = None, state: FistaState | None = None,
              on_check: Callable[[FistaState], None] | None = None) -> FistaRun:
    """Accelerated proximal gradient with restarts; see the module docstring.

    ``lipschitz``: a known bound on the gradient's Lipschitz constant (skips the power
    iteration; a too small value is caught by the objective safeguard, which doubles it).
    ``precision``: "double", "mixed" (operator products in float32 with float64 iterates and
    accumulation, certificates estimated in float32 and confirmed in float64) or "auto":
    mixed while the certificate is above ``max(10 tol, 1e-3)``, then double (FISTA
    accumulates gradient errors: float32 products stall it near a 1e-4 relative gap), and
    mixed to the end when ``tol >= 1e-3`` (ten times that floor; the float64 confirmation
    still decides, and three float32 estimates below ``tol`` that float64 does not confirm
    switch to double). See :func:`float64_switch`.
    ``backend="torch"``: the same iterations in float64 torch on ``device``
    (:func:`attnlens.convex.torch_fista.fista_torch`; ``precision`` unused); ``program`` may
    then be a :class:`~attnlens.convex.torch_fista.TorchProgram` already on the device.
    ``state``: continue from a :class:`FistaState` (``Z0`` and ``lipschitz`` unused);
    ``on_check(state)`` is called after every certificate check that does not stop the run
    (numpy backend; the state's arrays are not modified afterwards).
    """
    if backend == "torch":
        res, L = fista_torch(program, Y, beta, loss, tol=tol, max_iter=max_iter,
                             check_every=check_every, Z0=Z0, rng=rng, progress=progress,
                             lipschitz=lipschitz, device=device)
        return FistaRun(result=res, lipschitz=L)
    start = time.perf_counter()
    loss = get_loss(loss, "fista")
    rng = rng if rng is not None else np.random.default_rng(DEFAULT_SEED)
    single = precision in ("mixed", "auto")
    switch_at = float64_switch(tol) if precision == "auto" else 0.0
    n = Y.shape[0]
    if state is not None:
        it0, Z, Yx, t, L = state.it, state.Z, state.Yx, state.t, state.L
        prev_obj, single, misses = state.prev_obj, state.single, state.misses
    else:
        L = lipschitz if lipschitz is not None else lipschitz_bound(program, loss, n, rng, single)
        Z = program.flatten(Z0 if Z0 is not None else program.zeros())  # flat iterates
        it0, Yx, t, prev_obj, misses = 0, Z.copy(), 1.0, np.inf, 0
    status, cert, it = Status.MAX_ITER, float("inf"), it0
    primal = dual = ratio = float("nan")
    bar = progress_bar(progress, max_iter, "fista")
    if bar is not None and it0:
        bar.update(it0)
    # squared loss: grad = (A^*A y - A^*Y) / n, with A^*A through the Gram where it is cheaper
    gram = loss.name == "squared" and program.has_normal()
    AtY = program.adjoint_flat(Y) if gram else None
    for it in range(it0 + 1, max_iter + 1):
        V = gradient_step(program, loss, Y, Yx, L, single, AtY)
        finite = np.isfinite(V).all()
        if single and not finite:  # float32 overflow, or a faulty float32 GEMM
            logger.warning("fista: non-finite float32 gradient at it %d; float64 from here", it)
            single = False
            V = gradient_step(program, loss, Y, Yx, L, single, AtY)
            finite = np.isfinite(V).all()
        if not finite:
            raise NonFiniteError(
                f"fista: the gradient step at iteration {it} is not finite (step 1/L with "
                f"L={L:.3g}); the inputs or targets may be too large: rescale them, or use "
                "solver='cvxpy' to check the problem.")
        Znew = svt_flat(program, V, beta / L)
        # gradient-based adaptive restart
        if np.dot(Yx - Znew, Znew - Z) > 0:
            t = 1.0
        t_new = 0.5 * (1 + np.sqrt(1 + 4 * t * t))
        Yx = Znew + ((t - 1) / t_new) * (Znew - Z)
        Z, t = Znew, t_new
        if it % check_every == 0 or it == max_iter:
            Zs = program.unflatten(Z)
            c = certificate(program, Zs, Y, beta, loss, single)
            primal, dual, cert, ratio = c.primal, c.dual, c.certificate, c.grad_ratio
            if primal > prev_obj * (1 + 1e-9) + 1e-15:  # safeguard: step too long
                L *= 2.0
                Yx, t = Z.copy(), 1.0
            prev_obj = min(prev_obj, primal)
            if single and cert <= switch_at:
                single = False  # the float32 phase is over
            if single and (cert <= tol or it == max_iter):  # confirm in float64
                est = cert
                c = certificate(program, Zs, Y, beta, loss)
                primal, dual, cert, ratio = c.primal, c.dual, c.certificate, c.grad_ratio
                if cert > tol and est <= tol:
                    misses += 1
                    if misses >= 3:  # float32 rounding limits progress: go double
                        single = False
                        logger.info("fista: switching to float64 products at it %d", it)
            logger.debug("fista it %d cert %.3e (%s)", it, cert, "f32" if single else "f64")
            if bar is not None:
                bar.update(check_every)
                bar.set_postfix(cert=f"{cert:.2e}")
            if cert <= tol:
                status = Status.OPTIMAL
                break
            if on_check is not None:
                on_check(FistaState(it, Z, Yx, t, L, prev_obj, single, misses))
    if bar is not None:
        bar.close()
    Zs = [z.copy() for z in program.unflatten(Z)]
    if not np.isfinite(primal):
        c = certificate(program, Zs, Y, beta, loss)
        primal, dual, cert, ratio = c.primal, c.dual, c.certificate, c.grad_ratio
    res = ConvexResult(objective=primal, status=status, certificate=cert, iterations=it,
                       seconds=time.perf_counter() - start, method="fista", Z=Zs,
                       duality_gap=primal - dual, dual_objective=dual, grad_ratio=ratio)
    return FistaRun(result=res, lipschitz=L)


def fista_path(program: Program, Y: np.ndarray, beta: float, loss: str | Loss, *,
               tol: float = 1e-6, max_iter: int = 5000, rng: np.random.Generator | None = None,
               progress: bool = False, factor: float = 0.5, stage_tol: float = 3e-2,
               precision: str = "auto", min_ratio: float = 30.0, backend: str = "numpy",
               device: str | None = None, checkpoint: Checkpoint | None = None) -> ConvexResult:
    """FISTA with continuation in ``beta`` (homotopy; e.g. Ma, Goldfarb & Chen 2011).

    Starts at ``beta_max = max_j ||A_j^*(grad f(0))||_2`` (where ``Z = 0`` is optimal), solves a
    geometric sequence ``beta_max * factor^k > beta`` loosely (``stage_tol``), each warm-started
    from the previous solution, then ``beta`` to ``tol``. Small ``beta`` on ill-conditioned
    data is where this pays (the early stages have low-rank solutions and converge fast); for
    ``beta >= beta_max / min_ratio`` it is plain FISTA (measured: at ``beta_max / 11`` the
    stages cost more than they save). The result's certificate is the final stage's, so the
    bound is the same as :func:`fista`'s. ``backend="torch"``: every stage in torch on
    ``device`` (the operator moved there once).

    ``checkpoint`` (numpy backend): a :class:`~attnlens.checkpoint.Checkpoint` that receives
    a :class:`PathState` after every certificate check (at most every ``every_s`` seconds)
    and at every stage's end; a call that finds a state for the same problem continues from
    it with the same iterates (``seconds`` then adds up the calls).
    """
    start = time.perf_counter()
    loss = get_loss(loss, "fista_path")
    rng = rng if rng is not None else np.random.default_rng(DEFAULT_SEED)
    n = Y.shape[0]
    single = precision in ("mixed", "auto")
    G0 = program.adjoint(loss.gradient(np.zeros((n, program.n_outputs)), Y))
    bmax = max(spectral_norm(G) for G in G0)
    torch_backend = backend == "torch"
    target = TorchProgram(program, device) if torch_backend else program
    betas = []
    b = bmax * factor if beta < bmax / min_ratio else 0.0
    while b > beta * 1.5:
        betas.append(b)
        b *= factor
    betas.append(beta)  # the last stage: the target, to tol
    saved = checkpoint.load() if checkpoint is not None else None
    if saved is not None and not isinstance(saved, PathState):  # e.g. a finished fit's result
        logger.warning("fista path: the checkpoint holds a %s, not a path state; starting "
                       "over", type(saved).__name__)
        saved = None
    if saved is not None and saved.stage >= len(betas):  # a key that did not pin the path
        logger.warning("fista path: the checkpoint's stage %d does not exist (%d stages); "
                       "starting over", saved.stage, len(betas))
        saved = None
    if saved is not None:
        k, used, L, Zs = saved.stage, saved.used, saved.lipschitz, saved.Z
        start -= saved.seconds
        logger.info("fista path: resuming stage %d of %d after %d iterations", k + 1,
                    len(betas), used + (saved.inner.it if saved.inner is not None else 0))
    else:
        k, used, Zs = 0, 0, None
        L = None if torch_backend else lipschitz_bound(program, loss, n, rng, single)
    while True:
        final = k == len(betas) - 1
        inner = saved.inner if saved is not None and saved.stage == k else None
        run = fista_run(target, Y, betas[k], loss, tol=tol if final else stage_tol,
                        max_iter=max(max_iter - used, 1), Z0=Zs, rng=rng,
                        progress=progress and final, precision=precision, lipschitz=L,
                        backend=backend, state=inner,
                        on_check=_path_saver(checkpoint, k, used, L, start))
        Zs, used, L = run.result.Z, used + run.result.iterations, run.lipschitz
        if final:
            break
        logger.info("fista path: beta %.3g done in %d it (cert %.2e)", betas[k],
                    run.result.iterations, run.result.certificate)
        k = len(betas) - 1 if used >= max_iter else k + 1
        if checkpoint is not None:
            checkpoint.save(lambda k=k, used=used, L=L, Zs=Zs: PathState(
                k, used, L, Zs, None, time.perf_counter() - start), force=True)
    return dataclasses.replace(run.result, iterations=used,
                               seconds=time.perf_counter() - start,
                               method="fista-path" if len(betas) > 1 else "fista")


def _path_saver(checkpoint: Checkpoint | None, stage: int, used: int,
                lipschitz: float | None, start: float) -> Callable[[FistaState], None] | None:
    """The ``on_check`` of stage ``stage``: save a :class:`PathState` holding the FISTA state
    (the checkpoint decides whether enough time has passed); ``start`` is the path's
    :func:`time.perf_counter` origin (earlier calls' seconds already subtracted)."""
    if checkpoint is None:
        return None
    return lambda state: checkpoint.save(lambda: PathState(
        stage, used, lipschitz, None, state, time.perf_counter() - start))


def burer_monteiro(program: Program, Y: np.ndarray, beta: float, loss: str | Loss, *,
                   tol: float = 1e-6, max_iter: int = 5000, rank: int | None = None,
                   max_rounds: int = 8, rng: np.random.Generator | None = None,
                   progress: bool = False) -> ConvexResult:
    """Factorized solver ``Z_j = U_j V_j^T`` (L-BFGS) with certified rank growth."""
    start = time.perf_counter()
    loss = get_loss(loss, "burer_monteiro")
    rng = rng if rng is not None else np.random.default_rng(DEFAULT_SEED)
    c = program.n_outputs
    shapes = program.zshapes()
    r0 = rank if rank is not None else min(8, min(min(s) for s in shapes))
    Us = [0.01 * rng.standard_normal((p, min(r0, p, q))) for p, q in shapes]
    Vs = [0.01 * rng.standard_normal((q, min(r0, p, q))) for p, q in shapes]
    total_iter = 0
    status, cert = Status.MAX_ITER, float("inf")
    primal = dual = ratio = float("nan")
    Zs = program.zeros()
    bar = progress_bar(progress, max_rounds, "burer-monteiro")
    for _round in range(max_rounds):
        per_round = max(50, max_iter // max_rounds)  # leave room for rank growth
        Us, Vs, nit = _bm_lbfgs(program, Y, beta, loss, Us, Vs, c,
                                max(min(per_round, max_iter - total_iter), 1), tol)
        total_iter += nit
        Zs = [U @ V.T for U, V in zip(Us, Vs, strict=True)]
        cc = certificate(program, Zs, Y, beta, loss)
        primal, dual, cert, ratio = cc.primal, cc.dual, cc.certificate, cc.grad_ratio
        logger.info("bm round %d: objective %.8g certificate %.3g grad_ratio %.6f ranks %s",
                    _round, primal, cert, ratio, [U.shape[1] for U in Us])
        if bar is not None:
            bar.update(1)
            bar.set_postfix(cert=f"{cert:.2e}")
        if cert <= tol:
            status = Status.OPTIMAL
            break
        if total_iter >= max_iter:
            break
        # grow rank along the top singular pair of -grad in blocks that violate ||grad|| <= beta
        grad = program.adjoint(loss.gradient(program.forward(Zs), Y))
        for j, G in enumerate(grad):
            u, s, vt = svd(G)
            if s[0] > beta * (1 + 1e-9):
                amp = np.sqrt(max(s[0] - beta, 1e-8) / max(s[0], 1e-12)) * 0.1
                Us[j] = np.hstack([Us[j], -amp * u[:, :1]])
                Vs[j] = np.hstack([Vs[j], amp * vt[:1].T])
    if bar is not None:
        bar.close()
    return ConvexResult(objective=primal, status=status, certificate=cert,
                        iterations=total_iter, seconds=time.perf_counter() - start,
                        method="bm", Z=Zs, duality_gap=primal - dual, dual_objective=dual,
                        grad_ratio=ratio)


def _bm_lbfgs(program, Y, beta, loss: Loss, Us, Vs, c, max_iter, tol):
    sizes = [(U.shape, V.shape) for U, V in zip(Us, Vs, strict=True)]

    def unpack(x):
        out_u, out_v, k = [], [], 0
        for su, sv in sizes:
            nu, nv = su[0] * su[1], sv[0] * sv[1]
            out_u.append(x[k : k + nu].reshape(su))
            out_v.append(x[k + nu : k + nu + nv].reshape(sv))
            k += nu + nv
        return out_u, out_v

    def fun(x):
        U_, V_ = unpack(x)
        yhat = np.zeros((program.n, c))
        caches = []
        for b, U, V in zip(program.blocks, U_, V_, strict=True):
            out, Q = b.forward_factored(U, V, c)
            yhat += out
            caches.append(Q)
        val = loss.value(yhat, Y)
        R = loss.gradient(yhat, Y)
        grads = []
        for b, U, V, Q in zip(program.blocks, U_, V_, caches, strict=True):
            gU, gV = b.grads_factored(R, U, V, Q, c)
            val += 0.5 * beta * (np.sum(U**2) + np.sum(V**2))
            grads += [(gU + beta * U).ravel(), (gV + beta * V).ravel()]
        return val, np.concatenate(grads)

    x0 = np.concatenate([np.concatenate([U.ravel(), V.ravel()]) for U, V in zip(Us, Vs,
                                                                                strict=True)])
    res = minimize(fun, x0, jac=True, method="L-BFGS-B",
                   options={"maxiter": max_iter, "maxcor": 30, "ftol": 1e-15,
                            "gtol": 1e-12 * max(1.0, beta), "maxfun": 2 * max_iter})
    U_, V_ = unpack(res.x)
    return U_, V_, int(res.nit)


def cvxpy_reference(program: Program, Y: np.ndarray, beta: float, loss: str | Loss, *,
                    tol: float = 1e-6, **_ignored) -> ConvexResult:
    """The cvxpy reference (Clarabel), marked inaccurate when its certificate misses ``tol``."""
    return with_tolerance(solve_cvxpy(program, Y, beta, loss), tol)


def ssnal_solver(program: Program, Y: np.ndarray, beta: float, loss: str | Loss, *,
                 tol: float = 1e-6, max_iter: int = 5000, rng: np.random.Generator | None = None,
                 progress: bool = False) -> ConvexResult:
    """:func:`~attnlens.convex.ssnal.ssnal` from ``Z = 0`` (squared loss only; ``max_iter``
    bounds its Newton steps); should it stop above ``tol``, FISTA continues from its point.

    (A FISTA warm start to a certificate of 3e-2 or 1e-1 was measured slower on the realistic
    cases of benchmarks/convex_heads.py: 2.4 / 3.7 s instead of 2.0 / 1.7 s at beta_max/100,
    /1000 on the planted (2000,16,12,10) head; see docs/convex.md.)
    """
    start = time.perf_counter()
    loss = check_ssnal_loss(loss, "solve")
    res = ssnal(program, Y, beta, loss, tol=tol, max_iter=max_iter, progress=progress)
    if res.certificate > tol:
        logger.info("ssnal stopped at certificate %.2e: FISTA continues", res.certificate)
        more = fista(program, Y, beta, loss, tol=tol, max_iter=max_iter, Z0=res.Z, rng=rng,
                     progress=progress)
        res = dataclasses.replace(more, iterations=more.iterations + res.iterations,
                                  method="ssnal+fista")
    return dataclasses.replace(res, seconds=time.perf_counter() - start)


#: ``"auto"`` uses SSNAL below ``beta_max / SSNAL_MIN_RATIO`` (measured on the planted and
#: MiniLM (2000,16,12,c) heads: at beta_max/10 FISTA took 0.71 / 0.30 s CPU against SSNAL's
#: 0.91 / 0.5 s; at /100 and /1000 SSNAL was 3-15x faster; the same threshold as the
#: continuation of :func:`fista_path`)
SSNAL_MIN_RATIO = 30.0


def auto_solver(program: Program, Y: np.ndarray, beta: float, loss: str | Loss, *,
                tol: float = 1e-6, max_iter: int = 5000, rng: np.random.Generator | None = None,
                progress: bool = False, backend: str = "numpy",
                device: str | None = None, checkpoint: Checkpoint | None = None) -> ConvexResult:
    """``"auto"``: :func:`ssnal_solver` for the squared loss on one Kronecker block with a Gram
    (:meth:`Program.has_normal`: linear self-attention / MLP-Mixer up to a Gram side of 2,500)
    at ``beta < beta_max / SSNAL_MIN_RATIO``, where it was measured faster (docs/convex.md);
    :func:`fista_path` otherwise, and always with ``backend="torch"`` (SSNAL is numpy)."""
    loss = get_loss(loss, "solve")
    if backend == "torch":
        return fista_path(program, Y, beta, loss, tol=tol, max_iter=max_iter, rng=rng,
                          progress=progress, backend=backend, device=device)
    if loss.name == "squared" and program.has_normal():
        bmax = spectral_norm(program.adjoint(loss.gradient(np.zeros((program.n,
                                                                    program.n_outputs)), Y))[0])
        use_ssnal = beta < bmax / SSNAL_MIN_RATIO
    else:
        use_ssnal = False
    if use_ssnal:  # (seconds at the sizes it is chosen for: nothing to checkpoint)
        return ssnal_solver(program, Y, beta, loss, tol=tol, max_iter=max_iter, rng=rng,
                            progress=progress)
    return fista_path(program, Y, beta, loss, tol=tol, max_iter=max_iter, rng=rng,
                      progress=progress, checkpoint=checkpoint)


#: the solvers that save and resume their state through a ``checkpoint`` (numpy backend)
CHECKPOINT_SOLVERS = ("auto", "fista")

#: the solvers of nuclear-norm programs by the name of the ``solver`` parameter
NUCLEAR_SOLVERS: dict[str, Callable[..., ConvexResult]] = {
    "auto": auto_solver,
    "fista": fista,
    "bm": burer_monteiro,
    "ssnal": ssnal_solver,
    "cvxpy": cvxpy_reference,
}


def solve_nuclear(program: Program, Y: np.ndarray, beta: float, loss: str | Loss, *,
                  solver: str = "auto", tol: float = 1e-6, max_iter: int = 5000,
                  rng: np.random.Generator | None = None, progress: bool = False,
                  backend: str = "numpy", device: str | None = None,
                  checkpoint: Checkpoint | None = None) -> ConvexResult:
    """Solve a linear or gated-ReLU program with the solver named ``solver`` on ``backend``
    (``checkpoint``: see :data:`CHECKPOINT_SOLVERS`)."""
    check_option(solver, "solver", NUCLEAR_SOLVERS, "solve")
    check_option(backend, "backend", BACKENDS, "solve")
    kwargs = dict(tol=tol, max_iter=max_iter, rng=rng, progress=progress)
    if backend == "torch":
        if solver not in TORCH_SOLVERS:
            raise_invalid("solver", f"one of {list(TORCH_SOLVERS)} with backend='torch'", solver,
                          "The torch backend runs the FISTA iterations; 'bm', 'ssnal' and "
                          "'cvxpy' run with backend='numpy'.", "solve")
        kwargs.update(backend=backend, device=device)
    elif checkpoint is not None and solver in CHECKPOINT_SOLVERS:
        kwargs.update(checkpoint=checkpoint)
    return NUCLEAR_SOLVERS[solver](program, Y, beta, loss, **kwargs)
