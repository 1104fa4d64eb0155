r"""Fast solvers with an optimality certificate for block nuclear-norm programs.

Solves :math:`\min_{Z_1..Z_m} f\big(\sum_j \mathcal A_j(Z_j)\big) + \beta\sum_j \|Z_j\|_*`
(Sahiner et al., "Unraveling Attention via Convex Duality", ICML 2022, arXiv 2205.08078), with
``f`` the squared or cross-entropy loss of :mod:`attnlens.convex.losses` and ``A_j`` the
implicit operators of :mod:`attnlens.convex.programs`.

* ``fista``: accelerated proximal gradient with adaptive (gradient) restarts and singular-value
  thresholding per block (Beck & Teboulle 2009; O'Donoghue & Candes 2015). Iterates are one
  flat float64 vector; operator products may run in float32 while the certificate is loose
  (``precision``); large blocks threshold through the eigendecomposition of the small Gram.
* ``auto`` (default): :func:`fista_path`, FISTA with continuation in ``beta`` from
  ``beta_max`` (where ``Z = 0`` is optimal) -- on ill-conditioned data at small ``beta`` it
  needs about half the iterations of a cold start. ReLU programs go to
  :mod:`attnlens.convex.relu` (projected FISTA with exact cone projections).
* ``bm``: Burer-Monteiro factorization ``Z_j = U_j V_j^T`` with the equivalent smooth penalty
  ``beta/2 (||U_j||^2 + ||V_j||^2)``, L-BFGS, and rank growth along the top singular pair of the
  gradient whenever the certificate shows the factorization is stuck (Burer & Monteiro 2003).
  The operator is applied to the factors, so one step costs ``O(n d^2 r)`` instead of
  ``O(n d^3 c)``; the certificate needs one full gradient at the end of each round.

Certificate: ``certificate = (P - D) / max(P, 1e-12)``, the relative duality gap between the
primal value ``P`` and the dual value ``D`` of the scaled dual point (a bound on the relative
suboptimality). ``grad_ratio = max_j ||grad_j L(Z)||_2 / beta`` is reported too (<= 1 at an
optimum). ``tol`` is on the certificate.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize
from threadpoolctl import ThreadpoolController

from attnlens._results import SolveInfo, Status, warn_on_status
from attnlens.convex import losses
from attnlens.convex.programs import Program

logger = logging.getLogger(__name__)

SOLVERS = ("auto", "fista", "bm", "cvxpy")

#: seed of the power iterations and BM starts when no ``rng`` is given (runs are reproducible)
DEFAULT_SEED = 0

# LAPACK's SVD on tall-skinny blocks is 10-100x slower with 2 OpenBLAS threads when the cores
# are shared (measured: 1024x64 block, 15 ms on 1 thread vs 0.6-2 s on 2 under load); the
# blocks are small, so the SVDs run single-threaded.
_THREADS = ThreadpoolController()


def svd(Z: np.ndarray, compute_uv: bool = True):
    """``np.linalg.svd(Z, full_matrices=False)`` on one BLAS thread (see above)."""
    if Z.size <= 4096:  # tiny: LAPACK stays single-threaded; skip the limiter's overhead
        return np.linalg.svd(Z, full_matrices=False, compute_uv=compute_uv)
    with _THREADS.limit(limits=1, user_api="blas"):
        return np.linalg.svd(Z, full_matrices=False, compute_uv=compute_uv)


@dataclass
class ConvexResult(SolveInfo):
    """Solution ``Z`` (one array per block) plus the certificate fields (see module doc)."""

    Z: list = field(default_factory=list)
    duality_gap: float = float("nan")
    dual_objective: float = float("nan")
    grad_ratio: float = float("nan")
    #: ReLU programs only: ``(X_j, E_j)`` per block with ``Z_j = X_j E_j^T`` (cone variables)
    cone_factors: list | None = None
    #: ReLU programs only: largest relative cone violation of the iterate before its repair
    constraint_violation: float = float("nan")
    #: ReLU programs only: certified lower bound from the gated-ReLU relaxation (same patterns)
    lower_bound: float = float("nan")


def nuclear_norm(Z: np.ndarray, estimate: bool = False) -> float:
    """``||Z||_*``; ``estimate=True`` on large blocks uses the small Gram's eigenvalues."""
    if min(Z.shape) == 1:
        return float(np.linalg.norm(Z))
    if estimate and min(Z.shape) >= GRAM_SVT_MIN:
        T = Z.T if Z.shape[0] < Z.shape[1] else Z
        with _THREADS.limit(limits=1, user_api="blas"):
            w = np.linalg.eigvalsh(T.T @ T)
        return float(np.sqrt(np.maximum(w, 0.0)).sum())
    return float(svd(Z, compute_uv=False).sum())


def penalty(Zs: list[np.ndarray], estimate: bool = False) -> float:
    if all(min(Z.shape) == 1 for Z in Zs):  # vector blocks: group lasso
        return float(sum(np.linalg.norm(Z) for Z in Zs))
    return float(sum(nuclear_norm(Z, estimate) for Z in Zs))


def svt_flat(program: Program, x: np.ndarray, tau: float) -> np.ndarray:
    """:func:`svt` of every block of the flat vector ``x`` (vector blocks: one group shrink)."""
    shapes = program.zshapes()
    if len(set(shapes)) == 1 and min(shapes[0]) == 1:
        S = x.reshape(len(shapes), -1)
        nrm = np.sqrt(np.sum(S**2, axis=1))
        return (S * (np.maximum(nrm - tau, 0.0) / np.maximum(nrm, 1e-300))[:, None]).ravel()
    return program.flatten([svt(Z, tau) for Z in program.unflatten(x)])


#: blocks whose smaller side reaches this size use the Gram eigendecomposition in the
#: iterations (``Z^T Z`` is small; LAPACK's SVD of a 2304 x 480 block is ~10x slower)
GRAM_SVT_MIN = 128


def svt(Z: np.ndarray, tau: float) -> np.ndarray:
    """Singular-value thresholding: the prox of ``tau ||.||_*``.

    Large blocks: with ``Z^T Z = V diag(s^2) V^T`` (smaller side), ``svt(Z) = Z V_k
    diag(1 - tau / s_k) V_k^T`` over ``s_k > tau``. Vectors: ``max(0, 1 - tau/||z||) z``.
    """
    if min(Z.shape) == 1:
        nrm = float(np.linalg.norm(Z))
        return Z * (max(nrm - tau, 0.0) / nrm) if nrm > 0 else Z.copy()
    if min(Z.shape) >= GRAM_SVT_MIN:
        T = Z.T if Z.shape[0] < Z.shape[1] else Z
        with _THREADS.limit(limits=1, user_api="blas"):
            w, V = np.linalg.eigh(T.T @ T)
        sv = np.sqrt(np.maximum(w, 0.0))
        keep = sv > tau
        Vk = V[:, keep]
        out = (T @ Vk) * (1.0 - tau / sv[keep]) @ Vk.T
        return out.T if T is not Z else out
    U, s, Vt = svd(Z)
    s = np.maximum(s - tau, 0.0)
    k = int(np.count_nonzero(s))
    return (U[:, :k] * s[:k]) @ Vt[:k]


def spectral_norm(M: np.ndarray) -> float:
    """``||M||_2`` (large blocks: top eigenvalue of the small Gram, rounded up by 1e-12)."""
    if not M.size:
        return 0.0
    if min(M.shape) == 1:
        return float(np.linalg.norm(M))
    if min(M.shape) >= GRAM_SVT_MIN:
        T = M.T if M.shape[0] < M.shape[1] else M
        with _THREADS.limit(limits=1, user_api="blas"):
            top = float(np.linalg.eigvalsh(T.T @ T)[-1])
        return float(np.sqrt(max(top, 0.0))) * (1 + 1e-12)
    return float(svd(M, compute_uv=False)[0])


def certify(program: Program, Zs: list[np.ndarray], Y: np.ndarray, beta: float, loss: str):
    """Primal value, dual value, relative gap and grad ratio at ``Zs`` (one full adjoint)."""
    return certify_with_gradient(program, Zs, Y, beta, loss)[:4]


def certify_with_gradient(program: Program, Zs: list[np.ndarray], Y: np.ndarray, beta: float,
                          loss: str, single: bool = False):
    """:func:`certify` plus the gradient blocks ``A_j^*(grad f)`` it computed.

    ``single=True`` evaluates the operator in float32: an *estimate* used to schedule the
    float64 check (only float64 certificates are reported).
    """
    yhat = program.forward(Zs, single)
    primal = losses.value(loss, yhat, Y) + beta * penalty(Zs, estimate=single)
    grad = losses.gradient(loss, yhat, Y)
    G = program.adjoint(grad, single)
    gnorm = max(spectral_norm(Gj) for Gj in G)
    t = 1.0 if gnorm <= beta else beta / gnorm
    dual = losses.dual_value(loss, grad, Y, t)
    gap = max(primal - dual, 0.0)
    return primal, dual, gap / max(abs(primal), 1e-12), gnorm / beta, G


def operator_norm_sq(program: Program, rng: np.random.Generator, iters: int = 30,
                     single: bool = False) -> float:
    """``||A||_2^2`` by power iteration on ``A^* A`` (a slight overestimate is added by callers)."""
    x = rng.standard_normal(sum(p * q for p, q in program.zshapes()))
    lam = 0.0
    for _ in range(iters):
        nrm = float(np.linalg.norm(x))
        if nrm == 0:
            return 0.0
        x = x / nrm
        x_new = program.adjoint_flat(program.forward_flat(x, single), single)
        lam = float(np.dot(x, x_new))
        x = x_new
    return lam


def fista(program: Program, Y: np.ndarray, beta: float, loss: str, *, tol: float = 1e-6,
          max_iter: int = 5000, check_every: int = 10, Z0: list | None = None,
          rng: np.random.Generator | None = None, progress: bool = False,
          precision: str = "auto", lipschitz: float | None = None) -> ConvexResult:
    """Accelerated proximal gradient with restarts; see module docstring.

    ``lipschitz``: a known bound on the gradient's Lipschitz constant (skips the power
    iteration; a too small value is caught by the objective safeguard, which doubles it).
    ``precision``: "double", "mixed" (operator products in float32 with float64 iterates and
    accumulation, certificates estimated in float32 and confirmed in float64) or "auto":
    mixed while the certificate is above ``max(10 tol, 1e-3)``, then double (FISTA
    accumulates gradient errors: float32 products stall it near a 1e-4 relative gap).
    """
    start = time.perf_counter()
    rng = rng if rng is not None else np.random.default_rng(DEFAULT_SEED)
    single = precision in ("mixed", "auto")
    switch_at = max(10 * tol, 1e-3) if precision == "auto" else 0.0
    n = Y.shape[0]
    if lipschitz is None:
        lipschitz = lipschitz_bound(program, loss, n, rng, single)
    L = lipschitz
    Z = program.flatten(Z0 if Z0 is not None else program.zeros())  # flat iterates
    Yx = Z.copy()
    t = 1.0
    status, cert, it = Status.MAX_ITER, float("inf"), 0
    primal = dual = ratio = float("nan")
    prev_obj = np.inf
    misses = 0
    bar = _bar(progress, max_iter, "fista")
    for it in range(1, max_iter + 1):
        yhat = program.forward_flat(Yx, single)
        g = program.adjoint_flat(losses.gradient(loss, yhat, Y), single)
        Znew = svt_flat(program, Yx - g / L, beta / L)
        # gradient-based adaptive restart
        if np.dot(Yx - Znew, Znew - Z) > 0:
            t = 1.0
        t_new = 0.5 * (1 + np.sqrt(1 + 4 * t * t))
        Yx = Znew + ((t - 1) / t_new) * (Znew - Z)
        Z, t = Znew, t_new
        if it % check_every == 0 or it == max_iter:
            Zs = program.unflatten(Z)
            primal, dual, cert, ratio, _ = certify_with_gradient(program, Zs, Y, beta, loss,
                                                                 single)
            if primal > prev_obj * (1 + 1e-9) + 1e-15:  # safeguard: step too long
                L *= 2.0
                Yx, t = Z.copy(), 1.0
            prev_obj = min(prev_obj, primal)
            if single and cert <= switch_at:
                single = False  # the float32 phase is over
            if single and (cert <= tol or it == max_iter):  # confirm in float64
                est = cert
                primal, dual, cert, ratio, _ = certify_with_gradient(program, Zs, Y, beta, loss)
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
    if bar is not None:
        bar.close()
    Zs = [z.copy() for z in program.unflatten(Z)]
    if not np.isfinite(primal):
        primal, dual, cert, ratio = certify(program, Zs, Y, beta, loss)
    res = ConvexResult(objective=primal, status=status, certificate=cert, iterations=it,
                       seconds=time.perf_counter() - start, method="fista", Z=Zs,
                       duality_gap=primal - dual, dual_objective=dual, grad_ratio=ratio)
    res.lipschitz = L
    return res


def lipschitz_bound(program: Program, loss: str, n: int, rng: np.random.Generator,
                    single: bool = False) -> float:
    """``1.05 ||A||^2 curvature / n`` (power iteration) -- the FISTA step is its inverse."""
    lam = operator_norm_sq(program, rng, 20 if single else 30, single)
    return max(1.05 * lam * losses.curvature(loss) / n, 1e-12)


def fista_path(program: Program, Y: np.ndarray, beta: float, loss: str, *, tol: float = 1e-6,
               max_iter: int = 5000, rng: np.random.Generator | None = None,
               progress: bool = False, factor: float = 0.5, stage_tol: float = 3e-2,
               precision: str = "auto", min_ratio: float = 30.0) -> ConvexResult:
    """FISTA with continuation in ``beta`` (homotopy; e.g. Ma, Goldfarb & Chen 2011).

    Starts at ``beta_max = max_j ||A_j^*(grad f(0))||_2`` (where ``Z = 0`` is optimal), solves a
    geometric sequence ``beta_max * factor^k > beta`` loosely (``stage_tol``), each warm-started
    from the previous solution, then ``beta`` to ``tol``. Small ``beta`` on ill-conditioned
    data is where this pays (the early stages have low-rank solutions and converge fast); for
    ``beta >= beta_max / min_ratio`` it is plain FISTA (measured: at ``beta_max / 11`` the
    stages cost more than they save). The result's certificate is the final stage's, so the
    bound is the same as :func:`fista`'s.
    """
    start = time.perf_counter()
    rng = rng if rng is not None else np.random.default_rng(DEFAULT_SEED)
    n = Y.shape[0]
    single = precision in ("mixed", "auto")
    G0 = program.adjoint(losses.gradient(loss, np.zeros((n, program.n_outputs)), Y))
    bmax = max(spectral_norm(G) for G in G0)
    L = lipschitz_bound(program, loss, n, rng, single)
    Zs, used = None, 0
    stages = []
    b = bmax * factor if beta < bmax / min_ratio else 0.0
    while b > beta * 1.5:
        stages.append(b)
        b *= factor
    for bt in stages:
        res = fista(program, Y, bt, loss, tol=stage_tol, max_iter=max(max_iter - used, 1),
                    Z0=Zs, rng=rng, precision=precision, lipschitz=L)
        Zs, used, L = res.Z, used + res.iterations, res.lipschitz
        logger.info("fista path: beta %.3g done in %d it (cert %.2e)", bt, res.iterations,
                    res.certificate)
        if used >= max_iter:
            break
    res = fista(program, Y, beta, loss, tol=tol, max_iter=max(max_iter - used, 1), Z0=Zs,
                rng=rng, progress=progress, precision=precision, lipschitz=L)
    res.iterations += used
    res.seconds = time.perf_counter() - start
    res.method = "fista-path" if stages else "fista"
    return res


def _bar(progress: bool, total: int, desc: str):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False)


def burer_monteiro(program: Program, Y: np.ndarray, beta: float, loss: str, *,
                   tol: float = 1e-6, max_iter: int = 5000, rank: int | None = None,
                   max_rounds: int = 8, rng: np.random.Generator | None = None,
                   progress: bool = False) -> ConvexResult:
    """Factorized solver ``Z_j = U_j V_j^T`` (L-BFGS) with certified rank growth."""
    start = time.perf_counter()
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
    bar = _bar(progress, max_rounds, "burer-monteiro")
    for _round in range(max_rounds):
        per_round = max(50, max_iter // max_rounds)  # leave room for rank growth
        Us, Vs, nit = _bm_lbfgs(program, Y, beta, loss, Us, Vs, c,
                                max(min(per_round, max_iter - total_iter), 1), tol)
        total_iter += nit
        Zs = [U @ V.T for U, V in zip(Us, Vs, strict=True)]
        primal, dual, cert, ratio = certify(program, Zs, Y, beta, loss)
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
        grad = program.adjoint(losses.gradient(loss, program.forward(Zs), Y))
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


def _bm_lbfgs(program, Y, beta, loss, Us, Vs, c, max_iter, tol):
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
        val = losses.value(loss, yhat, Y)
        R = losses.gradient(loss, yhat, Y)
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


def default_solver(program: Program) -> str:
    """What ``solver="auto"`` runs: ``"relu"`` for ReLU programs, else ``"fista-path"``.

    (Measured: FISTA with continuation beats the Burer-Monteiro solver on every size tried,
    which stalls at too low a rank at small ``beta``; see docs/convex.md.)
    """
    from attnlens.convex.relu import ReluProgram

    return "relu" if isinstance(program, ReluProgram) else "fista-path"


#: operator applications below this many multiply-adds run on one BLAS thread: OpenBLAS's
#: threads spin-wait, and on a shared 2-core machine small GEMMs got 30-100x slower with two
#: (measured: a (1000, 36) x (36, 80) product pair 0.6 ms on 1 thread, 60 ms on 2 under load)
SMALL_OPERATOR = 2e8


def operator_cost(program: Program) -> float:
    """Multiply-adds of one forward application (the size that decides BLAS threading)."""
    c = program.n_outputs
    cost = 0.0
    for b in program.blocks:
        cols = b._Bc.shape[1] * b.p1 if hasattr(b, "_Bc") else b.p * b.q
        cost += float(b.n) * cols * c
    return cost


def solve(program: Program, Y: np.ndarray, beta: float, loss: str = "squared", *,
          solver: str = "auto", tol: float = 1e-6, max_iter: int = 5000,
          rng: np.random.Generator | None = None, progress: bool = False,
          warn: bool = True) -> ConvexResult:
    """Solve the block nuclear-norm program of ``program`` for targets ``Y`` (n, c).

    ``Y`` is one-hot for classification; any real targets work with ``loss="squared"``.
    Returns a :class:`ConvexResult`; warns (``ConvergenceWarning``) when ``tol`` is not reached.
    Small programs run on one BLAS thread (:data:`SMALL_OPERATOR`).
    """
    if solver != "cvxpy" and operator_cost(program) < SMALL_OPERATOR:
        with _THREADS.limit(limits=1, user_api="blas"):
            return _solve(program, Y, beta, loss, solver, tol, max_iter, rng, progress, warn)
    return _solve(program, Y, beta, loss, solver, tol, max_iter, rng, progress, warn)


def _solve(program, Y, beta, loss, solver, tol, max_iter, rng, progress, warn):
    from attnlens.convex.relu import ReluProgram, solve_relu

    if isinstance(program, ReluProgram):
        res = solve_relu(program, Y, beta, loss, solver=solver, tol=tol, max_iter=max_iter,
                         rng=rng, progress=progress)
        if warn:
            warn_on_status(res.status, res.certificate, tol, f"convex solver {res.method!r}")
        return res
    if solver == "auto":
        res = fista_path(program, Y, beta, loss, tol=tol, max_iter=max_iter, rng=rng,
                         progress=progress)
    elif solver == "fista":
        res = fista(program, Y, beta, loss, tol=tol, max_iter=max_iter, rng=rng,
                    progress=progress)
    elif solver == "bm":
        res = burer_monteiro(program, Y, beta, loss, tol=tol, max_iter=max_iter, rng=rng,
                             progress=progress)
    elif solver == "cvxpy":
        from attnlens.convex._reference import solve_cvxpy

        res = solve_cvxpy(program, Y, beta, loss)
        if res.certificate > tol and res.status is Status.OPTIMAL:
            res.status = Status.OPTIMAL_INACCURATE
    else:
        raise ValueError(f"solver must be one of {', '.join(map(repr, SOLVERS))}; got {solver!r}.")
    if warn:
        warn_on_status(res.status, res.certificate, tol, f"convex solver {res.method!r}")
    return res
