r"""FISTA for block nuclear-norm programs in torch, on any device (``backend="torch"``).

The iterations of :func:`attnlens.convex.nuclear.fista_run` (accelerated proximal gradient,
gradient-based adaptive restarts, singular-value thresholding per block, objective
safeguard on the step) with the operator, the prox and the stopping certificate on a torch
device -- a GPU when one is given. The reported certificate is not the device's: the final
iterate is certified by :func:`attnlens.convex.certificate.certificate` in float64 numpy
(one forward and adjoint application on the CPU), and ``tol`` counts as reached only when
that certificate meets it.

The operator is :class:`TorchProgram`: the Kronecker block of the linear self-attention and
MLP-Mixer heads stays structured (the same reduced products as
:class:`~attnlens.convex.operators.KronBlock`, its Gram where the numpy path uses it), so does
the gated MLP (:class:`~attnlens.convex.operators.MaskedGroup`: pooled tokens and patterns);
every other program is applied through its dense per-block features, side by side on the device
(``n x m p q`` entries, size-checked: the matrix-free gated self-attention operator of the
numpy backend becomes dense here).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from attnlens._results import Status
from attnlens._validation import raise_invalid, resolve_device
from attnlens.convex._linalg import DEFAULT_SEED, SVT_GRAM_MIN, progress_bar
from attnlens.convex.certificate import certificate
from attnlens.convex.losses import Loss, get_loss
from attnlens.convex.operators import (
    KronBlock,
    MaskedGroup,
    Program,
    check_dense_size,
    lipschitz_bound,
)
from attnlens.convex.results import ConvexResult

#: the ``dtype`` values of the torch backend (float32 stalls near a 1e-4 relative gap)
DTYPES = {"float64": torch.float64, "float32": torch.float32}

_DENSE_ADVICE = ("use backend='numpy' (structured and matrix-free operators), fewer gates or "
                 "fewer samples.")


def svt(Z: torch.Tensor, tau: float) -> torch.Tensor:
    """Singular-value thresholding (the prox of ``tau ||.||_*``) of each matrix of ``Z`` (m, p, q).

    Vectors (``min(p, q) == 1``): ``max(0, 1 - tau / ||z||) z``. From
    :data:`~attnlens.convex._linalg.SVT_GRAM_MIN` on, through the eigendecomposition of the
    small Gram as :func:`attnlens.convex._linalg.svt`; else the SVD.
    """
    p, q = Z.shape[-2:]
    if min(p, q) == 1:
        nrm = torch.linalg.vector_norm(Z, dim=(-2, -1), keepdim=True)
        return Z * torch.clamp(1.0 - tau / nrm, min=0.0)  # nrm = 0: -inf, clamped to 0
    if min(p, q) >= SVT_GRAM_MIN:
        T = Z.transpose(-2, -1) if p < q else Z  # T^T T is the small Gram
        w, V = torch.linalg.eigh(T.transpose(-2, -1) @ T)
        shrink = torch.clamp(1.0 - tau / torch.sqrt(torch.clamp(w, min=0.0)), min=0.0)
        out = (T @ V) * shrink.unsqueeze(-2) @ V.transpose(-2, -1)
        return out.transpose(-2, -1) if p < q else out
    U, s, Vh = torch.linalg.svd(Z, full_matrices=False)
    return U * torch.clamp(s - tau, min=0.0).unsqueeze(-2) @ Vh


class TorchProgram:
    """The operator ``Z -> sum_j A_j(Z_j)`` of a :class:`Program` on a torch device.

    Flat iterates as in :class:`Program` (blocks concatenated, row-major); every block has the
    same shape (true of every program :func:`~attnlens.convex.programs.build_program` builds),
    so ``blocks(x)`` is a view (m, p, qc). ``program`` keeps the numpy operator (certificates).
    """

    def __init__(self, program: Program, device: str | None = None, dtype: str = "float64"):
        shapes = program.zshapes()
        if type(program) is not Program or len(set(shapes)) != 1:
            raise_invalid("backend", "'numpy' for this program", "torch",
                          "The torch backend solves linear and gated-ReLU heads (blocks of one "
                          "shape); ReLU programs run on numpy.", "solve")
        self.program = program
        self.device = torch.device(resolve_device(device, "solve"))
        self.dtype = DTYPES[dtype]
        self.c = program.n_outputs
        self.m, (self.p, self.qc) = len(shapes), shapes[0]
        self.size = self.m * self.p * self.qc
        first = program.blocks[0]
        self.kron = isinstance(first, KronBlock)
        self.masked = isinstance(program.fused, MaskedGroup)
        self.gram = None
        if self.masked:  # gated MLP: yhat = sum_j D_j * (X Z_j)
            self.X, self.D = self.tensor(program.fused.X), self.tensor(program.fused.D)
        elif self.kron:  # one block (linear self-attention / mixer): the reduced products
            self.p1, self.q, self.symmetric = first.p1, first.q, first.symmetric
            self.a = self.tensor(first.a)  # (n, p1)
            self.Bc = self.tensor(first._Bc)  # (n, P)
            if self.symmetric:
                self.up = torch.as_tensor(first._up, device=self.device)
                self.lo = torch.as_tensor(first._lo, device=self.device)
                self.off = self.tensor(first._off)
            self.gram = self.tensor(first.gram()) if program.has_normal() else None
        else:  # dense features of the blocks side by side, (n, m k): one GEMM per application
            n, k = program.n, self.p * self.qc // self.c
            check_dense_size(self.m * n * k, "the torch operator of this program", _DENSE_ADVICE)
            self.phi = torch.empty((n, self.m * k), device=self.device, dtype=self.dtype)
            for j, block in enumerate(program.blocks):
                self.phi[:, j * k:(j + 1) * k] = self.tensor(np.asarray(block.phi).reshape(n, k))

    def tensor(self, x) -> torch.Tensor:
        """``x`` (numpy or torch) as a tensor of this operator's device and dtype."""
        return torch.as_tensor(x, device=self.device, dtype=self.dtype)

    def blocks(self, x: torch.Tensor) -> torch.Tensor:
        """The flat vector ``x`` as its blocks (m, p, qc) (a view)."""
        return x.view(self.m, self.p, self.qc)

    def _reduce(self, x: torch.Tensor) -> torch.Tensor:
        """Kronecker block: (p, qc) -> (P, p1 c), as :meth:`KronBlock._reduce`."""
        p2 = self.p // self.p1
        Zt = x.view(self.p1, p2, self.q, self.c).permute(1, 2, 0, 3).reshape(p2 * self.q, -1)
        return Zt[self.up] + self.off * Zt[self.lo] if self.symmetric else Zt

    def _expand(self, Mc: torch.Tensor) -> torch.Tensor:
        """The adjoint of :meth:`_reduce`, flattened: (P, p1 c) -> (p qc,)."""
        p2 = self.p // self.p1
        if self.symmetric:
            M = Mc.new_zeros((p2 * self.q, self.p1 * self.c))
            M[self.up] = Mc
            M[self.lo] = Mc
        else:
            M = Mc
        return M.view(p2, self.q, self.p1, self.c).permute(2, 0, 1, 3).reshape(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Outputs (n, c) of the flat iterate ``x``."""
        if self.masked:
            XZ = self.X @ x.view(self.m, self.p, self.c).permute(1, 0, 2).reshape(self.p, -1)
            return (self.D[:, :, None] * XZ.view(-1, self.m, self.c)).sum(1)
        if self.kron:
            T = (self.Bc @ self._reduce(x)).view(-1, self.p1, self.c)  # (n, p1, c)
            return torch.einsum("nk,nkc->nc", self.a, T)
        return self.phi @ x.view(-1, self.c)

    def adjoint(self, R: torch.Tensor) -> torch.Tensor:
        """``A^* R`` as a flat vector, for ``R`` (n, c)."""
        if self.masked:
            W = (self.D[:, :, None] * R[:, None, :]).reshape(R.shape[0], -1)  # (n, m c)
            return (self.X.T @ W).view(self.p, self.m, self.c).permute(1, 0, 2).reshape(-1)
        if self.kron:
            aR = (self.a[:, :, None] * R[:, None, :]).reshape(R.shape[0], -1)  # (n, p1 c)
            return self._expand(self.Bc.T @ aR)
        return (self.phi.T @ R).reshape(-1)

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        """``A^* A x`` through the Gram (only where :meth:`Program.has_normal`)."""
        W = self.gram @ self._reduce(x).reshape(-1, self.c)  # (P p1, c)
        return self._expand(W.reshape(-1, self.p1 * self.c))

    # the flat interface of :func:`attnlens.convex.nuclear.operator_norm_sq`
    def zshapes(self) -> list[tuple[int, int]]:
        return [(self.p, self.qc)] * self.m

    def forward_flat(self, x: torch.Tensor, single: bool = False) -> torch.Tensor:
        return self.forward(x)

    def adjoint_flat(self, R: torch.Tensor, single: bool = False) -> torch.Tensor:
        return self.adjoint(R)


def device_certificate(op: TorchProgram, x: torch.Tensor, Yt: torch.Tensor, beta: float,
                       loss: Loss) -> tuple[float, float]:
    """``(primal, relative gap)`` at ``x`` on the device, in the formulas of
    :func:`attnlens.convex.certificate.certificate` (schedules the float64 numpy check)."""
    yhat = op.forward(x)
    Zb = op.blocks(x)
    vec = min(op.p, op.qc) == 1
    nuclear = (torch.linalg.vector_norm(Zb, dim=(-2, -1)) if vec
               else torch.linalg.svdvals(Zb)).sum()
    primal = float(loss.torch_value(yhat, Yt) + beta * nuclear)
    grad = loss.torch_gradient(yhat, Yt)
    G = op.blocks(op.adjoint(grad))
    gnorm = float(torch.linalg.vector_norm(G, dim=(-2, -1)).max() if vec
                  else torch.linalg.matrix_norm(G, ord=2).max())
    t = 1.0 if gnorm <= beta else beta / gnorm
    dual = float(loss.torch_dual_value(grad, Yt, t))
    return primal, max(primal - dual, 0.0) / max(abs(primal), 1e-12)


def fista_torch(program: Program | TorchProgram, Y: np.ndarray, beta: float, loss: str | Loss, *,
                tol: float = 1e-6, max_iter: int = 5000, check_every: int = 10,
                Z0: list | None = None, rng: np.random.Generator | None = None,
                progress: bool = False, lipschitz: float | None = None,
                device: str | None = None, dtype: str = "float64") -> tuple[ConvexResult, float]:
    """FISTA of :func:`attnlens.convex.nuclear.fista_run` on ``device``: ``(result, L)``.

    ``program``: a :class:`Program` (moved to ``device`` in ``dtype``) or a
    :class:`TorchProgram` already there (``device``/``dtype`` then unused). Every
    ``check_every`` iterations the certificate is evaluated on the device; when it meets
    ``tol`` the iterate is certified in float64 numpy, and only that certificate is reported.
    """
    start = time.perf_counter()
    loss = get_loss(loss, "fista")
    op = program if isinstance(program, TorchProgram) else TorchProgram(program, device, dtype)
    rng = rng if rng is not None else np.random.default_rng(DEFAULT_SEED)
    n = Y.shape[0]
    Yt = op.tensor(Y)
    L = lipschitz if lipschitz is not None else lipschitz_bound(
        op, loss, n, rng, x0=op.tensor(rng.standard_normal(op.size)))
    Z = op.tensor(np.concatenate([np.ravel(z) for z in Z0]) if Z0 is not None
                  else np.zeros(op.size))
    Yx = Z.clone()
    t = torch.ones((), device=op.device, dtype=op.dtype)
    status, it, checked = Status.MAX_ITER, 0, None
    prev_obj = np.inf
    bar = progress_bar(progress, max_iter, "fista (torch)")
    gram = loss.name == "squared" and op.gram is not None
    AtY = op.adjoint(Yt) if gram else None
    for it in range(1, max_iter + 1):
        g = ((op.normal(Yx) - AtY) / n if gram
             else op.adjoint(loss.torch_gradient(op.forward(Yx), Yt)))
        Znew = svt(op.blocks(Yx - g / L), beta / L).reshape(-1)
        # gradient-based adaptive restart, on the device (no host sync per iteration)
        t = torch.where(torch.dot(Yx - Znew, Znew - Z) > 0, torch.ones_like(t), t)
        t_new = 0.5 * (1 + torch.sqrt(1 + 4 * t * t))
        Yx = Znew + ((t - 1) / t_new) * (Znew - Z)
        Z, t = Znew, t_new
        if it % check_every == 0 or it == max_iter:
            primal, cert = device_certificate(op, Z, Yt, beta, loss)
            if primal > prev_obj * (1 + 1e-9) + 1e-15:  # safeguard: step too long
                L *= 2.0
                Yx, t = Z.clone(), torch.ones_like(t)
            prev_obj = min(prev_obj, primal)
            if bar is not None:
                bar.update(check_every)
                bar.set_postfix(cert=f"{cert:.2e}")
            if cert <= tol:  # confirm on the CPU in float64: only this one is reported
                checked = (it, _numpy_certificate(op, Z, Y, beta, loss))
                if checked[1].certificate <= tol:
                    status = Status.OPTIMAL
                    break
    if bar is not None:
        bar.close()
    if checked is None or checked[0] != it:
        checked = (it, _numpy_certificate(op, Z, Y, beta, loss))
    c = checked[1]
    Zs = [z.copy() for z in op.program.unflatten(Z.cpu().numpy().astype(np.float64))]
    res = ConvexResult(objective=c.primal, status=status, certificate=c.certificate,
                       iterations=it, seconds=time.perf_counter() - start, method="fista",
                       Z=Zs, duality_gap=c.primal - c.dual, dual_objective=c.dual,
                       grad_ratio=c.grad_ratio)
    return res, L


def _numpy_certificate(op: TorchProgram, x: torch.Tensor, Y: np.ndarray, beta: float,
                       loss: Loss):
    """The float64 numpy certificate of the device iterate ``x`` (the reported one)."""
    flat = x.detach().cpu().numpy().astype(np.float64)
    return certificate(op.program, op.program.unflatten(flat), Y, beta, loss)
