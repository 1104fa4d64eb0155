r"""Semismooth Newton augmented Lagrangian (SSNAL) for squared-loss nuclear-norm programs.

Solves :math:`\min_Z \frac{1}{2n}\|\mathcal A(Z) - Y\|_F^2 + \beta\sum_j\|Z_j\|_*` (Sahiner et
al., ICML 2022, arXiv 2205.08078) by the augmented Lagrangian method on its dual, each
subproblem by a semismooth Newton method (Jiang, Sun & Toh, "A partial proximal point algorithm
for nuclear norm regularized matrix least squares problems", Math. Prog. Comp. 2014; Li, Sun &
Toh, "A highly efficient semismooth Newton augmented Lagrangian method for solving Lasso
problems", SIAM J. Optim. 2018).

With ``||A Z - Y||^2 = ||B Z - b||^2 + const`` (:func:`least_squares_form`: for one Kronecker
block ``B = C^T reduce`` with ``K = C C^T`` the Cholesky factor of the reduced features' Gram, so
the dual lives in ``R^{P p1 x c}`` instead of ``R^{n x c}``) and ``lam = n beta``, the dual is
:math:`\min_\xi h^*(\xi) + \delta_{\|\cdot\|_2\le\lambda}(-B^*\xi)` with
:math:`h^*(\xi) = \frac12\|\xi\|^2 + \langle\xi, b\rangle`. For multiplier ``X`` (the primal
iterate) and penalty ``sigma`` the augmented Lagrangian minimized over ``xi`` is

.. math:: \psi(\xi) = h^*(\xi) + \frac{1}{2\sigma}\|\mathrm{SVT}_{\sigma\lambda}(X - \sigma B^*\xi)\|^2,

smooth with the semismooth gradient :math:`\xi + b - B\,\mathrm{SVT}(X - \sigma B^*\xi)`; the
Newton system ``(I + sigma B J B^*) d = -grad psi`` (``J`` an element of the generalized Jacobian
of SVT, :class:`SvtJacobian`) is solved by conjugate gradients, the step by Armijo backtracking on
``psi``; then ``X <- SVT(X - sigma B^* xi)`` and ``sigma`` grows. The reported certificate is
the one of :mod:`attnlens.convex.certificate` at ``X`` (feasible dual from the residual), never
the method's own residuals.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from attnlens._results import Status
from attnlens._validation import raise_invalid
from attnlens.convex._linalg import one_blas_thread, progress_bar, svd
from attnlens.convex.certificate import certificate
from attnlens.convex.losses import Loss, get_loss
from attnlens.convex.operators import KronBlock, Program
from attnlens.convex.results import ConvexResult

logger = logging.getLogger(__name__)

#: Armijo constant and backtracking factor of the Newton line search (Li, Sun & Toh 2018)
ARMIJO = 1e-4
BACKTRACK = 0.5
#: growth of the penalty ``sigma`` per outer iteration, and its cap relative to the start
SIGMA_GROWTH = 5.0
SIGMA_MAX_RATIO = 1e6
#: once the certificate is below this multiple of ``tol``, every Newton step is certified
CHECK_INNER_BELOW = 1e3


class SvtJacobian:
    r"""An element of the generalized Jacobian of ``W -> SVT_tau(W)`` at ``W``.

    For ``W = U diag(s) V^T`` (thin SVD, ``W`` tall: a wide ``W`` is handled through its
    transpose), ``g(s) = max(s - tau, 0)`` and ``Ht = U^T H V``:

    .. math:: J(H) = U\big(\Omega_\alpha\circ\tfrac{Ht + Ht^T}{2} + \Omega_\beta\circ
              \tfrac{Ht - Ht^T}{2}\big)V^T + (I - UU^T) H V\,\mathrm{diag}(g(s)/s)\,V^T

    with :math:`(\Omega_\alpha)_{ij} = \frac{g(s_i)-g(s_j)}{s_i-s_j}` (``1[s_i > tau]`` on ties),
    :math:`(\Omega_\beta)_{ij} = \frac{g(s_i)+g(s_j)}{s_i+s_j}` (Jiang, Sun & Toh 2014; Ding,
    Sun & Toh 2014). It is symmetric with eigenvalues in [0, 1]; where no singular value equals
    ``tau`` and they are distinct it is the derivative.
    """

    def __init__(self, factors: tuple, tau: float, transposed: bool):
        """``factors``: the thin SVD ``(U, s, Vt)`` of ``W`` (or of ``W^T`` when ``transposed``,
        so that the factored matrix is tall)."""
        self.transposed = transposed
        U, s, Vt = factors
        self.U, self.s, self.Vt = U, s, Vt
        self.V = np.ascontiguousarray(Vt.T)
        g = np.maximum(s - tau, 0.0)
        act = s > tau
        both, none = act[:, None] & act[None, :], ~act[:, None] & ~act[None, :]
        ds = s[:, None] - s[None, :]
        with np.errstate(divide="ignore", invalid="ignore"):
            mixed = (g[:, None] - g[None, :]) / ds
            ssum = s[:, None] + s[None, :]
            self.omega_beta = np.where(ssum > 0, (g[:, None] + g[None, :]) / ssum, 0.0)
            self.gamma = np.where(s > 0, g / np.where(s > 0, s, 1.0), 0.0)
        self.omega_alpha = np.where(both, 1.0, np.where(none, 0.0, np.nan_to_num(mixed)))
        m, k = U.shape[0], s.size
        iu = np.triu_indices(k, 1)
        trace = (self.omega_alpha[iu].sum() + self.omega_beta[iu].sum()
                 + np.trace(self.omega_alpha) + (m - k) * self.gamma.sum())
        #: ``tr(J) / (m n)``: the mean eigenvalue of ``J`` (scales the preconditioner)
        self.mean_eigenvalue = float(trace) / (m * Vt.shape[1])

    def apply(self, H: np.ndarray) -> np.ndarray:
        """``J(H)`` for ``H`` of ``W``'s shape."""
        if self.transposed:
            H = H.T
        HV = H @ self.V  # (m, k)
        Ht = self.U.T @ HV  # (k, k)
        sym, skew = 0.5 * (Ht + Ht.T), 0.5 * (Ht - Ht.T)
        M = self.omega_alpha * sym + self.omega_beta * skew - Ht * self.gamma
        out = (self.U @ M + HV * self.gamma) @ self.Vt
        return out.T if self.transposed else out


def svt_jacobian(W: np.ndarray, tau: float) -> SvtJacobian:
    """:class:`SvtJacobian` of ``SVT_tau`` at ``W`` (one SVD)."""
    transposed = W.shape[0] < W.shape[1]
    return SvtJacobian(svd(W.T if transposed else W), tau, transposed)


def _prox(factors, tau: float, transposed: bool) -> np.ndarray:
    U, s, Vt = factors
    g = np.maximum(s - tau, 0.0)
    k = int(np.count_nonzero(g))
    out = (U[:, :k] * g[:k]) @ Vt[:k]
    return out.T if transposed else out


@dataclass(frozen=True)
class LeastSquaresForm:
    """``||A(Z) - Y||_F^2 = ||B(Z) - b||_F^2 + const`` with ``B`` a map to a smaller space.

    ``spectrum``: where ``B B^* = diag(spectrum)`` (rows of ``xi``), the preconditioner of the
    Newton systems is ``(I + sigma kappa diag(spectrum))^{-1}``; ``None``: no preconditioner.
    """

    forward: Callable[[list], np.ndarray]
    adjoint: Callable[[np.ndarray], list]
    b: np.ndarray
    const: float
    kind: str
    spectrum: np.ndarray | None = None
    #: the products inside CG (float32 in the eigenbasis: the inexact Newton direction only
    #: needs a relative accuracy of 1e-1..1e-3; halves the memory traffic of the (k, m) factor)
    forward_cg: Callable[[list], np.ndarray] | None = None
    adjoint_cg: Callable[[np.ndarray], list] | None = None


#: eigenvalues of the scaled Gram below this fraction of the largest are dropped (null space)
GRAM_RCOND = 1e-12


def least_squares_form(program: Program, Y: np.ndarray) -> LeastSquaresForm:
    """The squared loss in the eigenbasis of the Gram where there is one.

    One Kronecker block with a Gram (:meth:`Program.has_normal`): ``A Z = Phi W`` with
    ``W = reduce(Z)`` (P p1, c); ``D = reduce reduce^*`` is diagonal (1 or 2: symmetric pairs),
    ``D^{1/2} K D^{1/2} = Q diag(lam) Q^T`` (``K = Phi^T Phi``), and with
    ``B Z = lam^{1/2} Q^T D^{-1/2} reduce(Z)``, ``b = lam^{-1/2} Q^T D^{1/2} Phi^T Y``:
    ``||A Z - Y||^2 = ||B Z - b||^2 + ||Y||^2 - ||b||^2`` and ``B B^* = diag(lam)``.
    Otherwise ``B = A``, ``b = Y``.
    """
    c = program.n_outputs
    if program.has_normal():
        block: KronBlock = program.blocks[0]
        m = block.gram_size()
        dvec = block.reduce(block.expand(np.ones((m, 1)), 1), 1)[:, 0]
        dh = np.sqrt(dvec)
        with one_blas_thread():
            lam, Q = np.linalg.eigh(dh[:, None] * block.gram() * dh[None, :])
        keep = lam > GRAM_RCOND * max(lam[-1], 1e-300)
        lam, Q = lam[keep], Q[:, keep]
        sl = np.sqrt(lam)
        F = np.ascontiguousarray((Q / dh[:, None]).T * sl[:, None])  # (k, m): B = F reduce
        Ft = np.ascontiguousarray(F.T)
        F32, Ft32 = F.astype(np.float32), Ft.astype(np.float32)
        b = (Q.T @ (dh[:, None] * block.reduced_adjoint(Y))) / sl[:, None]

        def fwd32(Zs):
            return (F32 @ block.reduce(Zs[0], c).astype(np.float32)).astype(np.float64)

        def adj32(xi):
            return [block.expand((Ft32 @ xi.astype(np.float32)).astype(np.float64), c)]

        return LeastSquaresForm(
            forward=lambda Zs: F @ block.reduce(Zs[0], c),
            adjoint=lambda xi: [block.expand(Ft @ xi, c)],
            b=b, const=float(np.sum(Y**2) - np.sum(b**2)), kind="gram-eigenbasis",
            spectrum=lam, forward_cg=fwd32, adjoint_cg=adj32)
    return LeastSquaresForm(forward=program.forward, adjoint=program.adjoint, b=Y, const=0.0,
                            kind="operator", forward_cg=program.forward,
                            adjoint_cg=program.adjoint)


def _cg(matvec: Callable[[np.ndarray], np.ndarray], rhs: np.ndarray, tol: float,
        maxiter: int, precond: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Preconditioned conjugate gradients for ``matvec(x) = rhs`` (symmetric positive
    definite) to ``||r|| <= tol``; ``precond``: the inverse diagonal, per row of ``rhs``."""
    x = np.zeros_like(rhs)
    r = rhs.copy()
    z = r if precond is None else precond * r
    p = z.copy()
    rz = float(np.vdot(r, z))
    k = 0
    for k in range(1, maxiter + 1):
        if np.linalg.norm(r) <= tol:
            return x, k - 1
        Ap = matvec(p)
        a = rz / float(np.vdot(p, Ap))
        x += a * p
        r -= a * Ap
        z = r if precond is None else precond * r
        rz_new = float(np.vdot(r, z))
        p = z + (rz_new / rz) * p
        rz = rz_new
    return x, k


@dataclass
class _Point:
    """``xi`` with ``W = X - sigma B^* xi``, its SVDs, the prox ``P`` and ``psi``."""

    xi: np.ndarray
    factors: list
    P: list
    psi: float


def check_ssnal_loss(loss: str | Loss, caller: str) -> Loss:
    """The :class:`Loss`; ``InvalidParameterError`` naming ``loss`` unless it is squared."""
    loss = get_loss(loss, caller)
    if loss.name != "squared":
        raise_invalid("loss", "'squared' for solver='ssnal'", loss.name,
                      "Use solver='auto' (FISTA) for the cross-entropy loss.", caller)
    return loss


def ssnal(program: Program, Y: np.ndarray, beta: float, loss: str | Loss = "squared", *,
          tol: float = 1e-6, max_iter: int = 200, Z0: list | None = None,
          sigma0: float | None = None, max_cg: int = 500,
          rng: np.random.Generator | None = None, progress: bool = False) -> ConvexResult:
    """SSNAL (module doc) from ``Z0`` (zeros by default) until the certificate is ``<= tol``.

    ``max_iter`` bounds the Newton steps over all outer iterations; ``iterations`` of the result
    counts them. Squared loss only (``loss="cross_entropy"`` raises ``InvalidParameterError``).
    ``sigma0``: the first penalty (default ``||Z0|| / ||B^* xi0||``, or ``1 / (n beta)`` from
    zero); it grows by :data:`SIGMA_GROWTH` per outer iteration. Newton systems are solved by
    CG preconditioned with ``(I + sigma kappa B B^*)^{-1}`` (diagonal in the Gram eigenbasis;
    ``kappa = tr(J) / dim``), at most ``max_cg`` steps each. Deterministic (``rng`` unused).
    """
    start = time.perf_counter()
    loss = check_ssnal_loss(loss, "ssnal")
    n = Y.shape[0]
    lam = n * beta
    ls = least_squares_form(program, Y)
    Xs = [np.array(Z, dtype=np.float64) for Z in (Z0 if Z0 is not None else program.zeros())]
    trans = [Z.shape[0] < Z.shape[1] for Z in Xs]
    b = ls.b
    xi = ls.forward(Xs) - b
    if sigma0 is None:
        G = ls.adjoint(xi)
        xn = np.sqrt(sum(np.sum(Z**2) for Z in Xs))
        gn = np.sqrt(sum(np.sum(g**2) for g in G))
        sigma0 = xn / gn if xn > 0 and gn > 0 else 1.0 / max(lam, 1e-12)
    sigma = sigma0

    def point(xi_: np.ndarray) -> _Point:
        G = ls.adjoint(xi_)
        facs, P, nrm2 = [], [], 0.0
        for X, g, t in zip(Xs, G, trans, strict=True):
            W = X - sigma * g
            f = svd(W.T if t else W)
            facs.append(f)
            P.append(_prox(f, sigma * lam, t))
            nrm2 += float(np.sum(np.maximum(f[1] - sigma * lam, 0.0) ** 2))
        psi = 0.5 * float(np.vdot(xi_, xi_)) + float(np.vdot(xi_, b)) + 0.5 * nrm2 / sigma
        return _Point(xi_, facs, P, psi)

    status, newton, cg_total = Status.MAX_ITER, 0, 0
    cert = primal = dual = ratio = float("nan")
    bnorm = max(float(np.linalg.norm(b)), 1e-300)
    inner_tol = 1e-3
    bar = progress_bar(progress, max_iter, "ssnal")
    outer = 0
    while newton < max_iter:
        outer += 1
        pt = point(xi)
        gnorm = np.inf
        check_inner = cert <= CHECK_INNER_BELOW * tol
        while newton < max_iter:
            grad = pt.xi + b - ls.forward(pt.P)
            gnorm = float(np.linalg.norm(grad))
            if gnorm <= inner_tol * bnorm:
                break
            jac = [SvtJacobian(f, sigma * lam, t) for f, t in zip(pt.factors, trans, strict=True)]

            def matvec(d, jac=jac, sigma=sigma):
                H = ls.adjoint_cg(d)
                return d + sigma * ls.forward_cg([J.apply(h) for J, h in zip(jac, H, strict=True)])

            pre = None
            if ls.spectrum is not None:
                kappa = float(np.mean([J.mean_eigenvalue for J in jac]))  # J ~ kappa I
                pre = (1.0 / (1.0 + sigma * kappa * ls.spectrum))[:, None]
            d, ncg = _cg(matvec, -grad, min(0.1, gnorm ** 0.2) * gnorm, max_cg, pre)
            cg_total += ncg
            newton += 1
            slope = float(np.vdot(grad, d))
            step = 1.0
            for _ in range(40):
                trial = point(pt.xi + step * d)
                if trial.psi <= pt.psi + ARMIJO * step * slope + 1e-14 * abs(pt.psi):
                    break
                step *= BACKTRACK
            pt = trial
            if check_inner:  # the prox is a primal point: certify it (one forward + adjoint)
                c = certificate(program, pt.P, Y, beta, loss)
                if c.certificate <= tol:
                    break
            logger.debug("ssnal outer %d newton %d: |grad| %.3e cg %d step %.3g", outer,
                         newton, gnorm, ncg, step)
        xi = pt.xi
        Xs = pt.P
        c = certificate(program, Xs, Y, beta, loss)
        primal, dual, cert, ratio = c.primal, c.dual, c.certificate, c.grad_ratio
        logger.info("ssnal outer %d: sigma %.3g cert %.3e |grad| %.3e newton %d cg %d", outer,
                    sigma, cert, gnorm / bnorm, newton, cg_total)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(cert=f"{cert:.2e}")
        if cert <= tol:
            status = Status.OPTIMAL
            break
        inner_tol = max(inner_tol * 0.1, 1e-12)
        sigma = min(sigma * SIGMA_GROWTH, sigma0 * SIGMA_MAX_RATIO)
    if bar is not None:
        bar.close()
    return ConvexResult(objective=primal, status=status, certificate=cert, iterations=newton,
                        seconds=time.perf_counter() - start, method="ssnal",
                        Z=[np.array(Z) for Z in Xs], duality_gap=primal - dual,
                        dual_objective=dual, grad_ratio=ratio)

