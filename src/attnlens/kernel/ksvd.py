r"""Dual-form reference of Primal-Attention: the asymmetric kernel matrix and its SVD.

Suykens, "SVD revisited: a new variational principle, compatible feature maps and nonlinear
extensions", ACHA 2016; Chen, Tao, Tonin, Suykens, NeurIPS 2023 (arXiv 2305.19798), Thm. 3.2.

With ``Phi_q = [phi_q(x_i)]`` and ``Phi_k = [phi_k(x_j)]`` (N x p) the kernel is
``K = Phi_q Phi_k^T`` (``K_ij = kappa(x_i, x_j)``; for canonical attention the scores are
``score_ij = x_i^T W z_j`` with ``W = K Q^T``). The stationarity conditions of the primal
objective ``J`` (see :mod:`attnlens.kernel.primal`) are the dual equations

.. math:: K H_r = H_e \Sigma, \qquad K^\top H_e = H_r \Sigma, \qquad \Lambda = \Sigma^{-1},

so ``H_e, H_r`` are left/right singular vectors, and the primal weights at that point are
``W_e = Phi_k^T H_r``, ``W_r = Phi_q^T H_e``: then ``e_i = sigma * H_e[i]``,
``r_j = sigma * H_r[j]`` and ``J = Tr(Sigma)/2 + Tr(Sigma)/2 - Tr(Sigma) = 0``.
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral

import torch

from attnlens._validation import Interval, Tensor, check_int, raise_invalid, validate_params


@dataclass
class KernelSVD:
    """Top-``s`` SVD of an asymmetric kernel matrix and the primal point it defines.

    kernel : (N, N) ``K``; left, right : (N, s) ``H_e``, ``H_r``; singular_values : (s,)
    e_scores, r_scores : (N, s) dual scores ``K H_r`` and ``K^T H_e``;
    we, wr : (p, s) primal weights ``Phi_k^T H_r``, ``Phi_q^T H_e`` (None without features);
    lam : (s,) ``1 / sigma``.
    """

    kernel: torch.Tensor
    left: torch.Tensor
    right: torch.Tensor
    singular_values: torch.Tensor
    e_scores: torch.Tensor
    r_scores: torch.Tensor
    we: torch.Tensor | None
    wr: torch.Tensor | None
    lam: torch.Tensor


@validate_params({"phi_q": [Tensor(ndim=(2, 3, 4))], "phi_k": [Tensor(ndim=(2, 3, 4))]})
def asymmetric_kernel(phi_q: torch.Tensor, phi_k: torch.Tensor) -> torch.Tensor:
    """``K = Phi_q Phi_k^T``: (..., N, p), (..., N, p) -> (..., N, N)."""
    if phi_q.shape != phi_k.shape:
        raise_invalid("phi_k", f"of the shape of phi_q {tuple(phi_q.shape)}",
                      f"got shape {tuple(phi_k.shape)}", caller="asymmetric_kernel")
    return torch.matmul(phi_q, phi_k.transpose(-1, -2))


@validate_params({
    "phi_q": [Tensor(ndim=2), None],
    "phi_k": [Tensor(ndim=2), None],
    "rank": [Interval(Integral, 1, None)],
    "kernel": [Tensor(ndim=2), None],
})
def kernel_svd(
    phi_q: torch.Tensor | None = None,
    phi_k: torch.Tensor | None = None,
    rank: int = 1,
    *,
    kernel: torch.Tensor | None = None,
) -> KernelSVD:
    """Top-``rank`` SVD of ``K`` (from features, or a given ``kernel``), in float64.

    Returns the dual solution and, with features, the primal stationary point
    (``we``, ``wr``, ``lam``) at which the primal scores equal the dual ones and ``J = 0``.
    """
    if kernel is None:
        if phi_q is None or phi_k is None:
            raise ValueError("kernel_svd needs phi_q and phi_k, or kernel=.")
        phi_q, phi_k = phi_q.double(), phi_k.double()
        kernel = asymmetric_kernel(phi_q, phi_k)  # (N, N)
    kernel = kernel.double()
    if kernel.ndim != 2 or kernel.shape[0] != kernel.shape[1]:
        raise ValueError(f"kernel must be a square matrix, got shape {tuple(kernel.shape)}.")
    rank = check_int(rank, "rank", low=1, high=kernel.shape[0])
    u, sig, vh = torch.linalg.svd(kernel)
    u, sig, v = u[:, :rank], sig[:rank], vh[:rank].T  # (N, s), (s,), (N, s)
    if bool((sig <= 1e-12 * max(float(sig[0]), 1.0)).any()):
        raise ValueError(
            f"kernel has numerical rank below rank={rank} (singular values {sig.tolist()}); "
            "lower rank so that Lambda = 1/sigma stays finite."
        )
    we = wr = None
    if phi_q is not None and phi_k is not None:
        we = phi_k.T @ v  # (p, s)
        wr = phi_q.T @ u  # (p, s)
    return KernelSVD(kernel, u, v, sig, kernel @ v, kernel.T @ u, we, wr, 1.0 / sig)


def ksvd_objective_dual(svd: KernelSVD) -> torch.Tensor:
    """``J`` evaluated from the dual variables: ``Tr(Sigma)/2 + Tr(Sigma)/2 - Tr(H_e^T K H_r)``."""
    quad = 0.5 * torch.sum(svd.lam * (svd.e_scores**2).sum(0))  # 1/2 sum_i e_i^T Lam e_i
    quad_r = 0.5 * torch.sum(svd.lam * (svd.r_scores**2).sum(0))
    trace = torch.trace(svd.left.T @ svd.kernel @ svd.right)
    return quad + quad_r - trace


__all__ = ["KernelSVD", "asymmetric_kernel", "kernel_svd", "ksvd_objective_dual"]
