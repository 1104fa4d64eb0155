r"""The fused Primal-Attention core: a ``torch.autograd.Function`` that saves only its inputs.

Chen, Tao, Tonin, Suykens, NeurIPS 2023 (arXiv 2305.19798), eqs. 4-6. Per head ``h``,

.. math::

    e_i = \frac{W_{e|X}^\top q_i}{\lVert q_i \rVert}, \quad
    r_j = \frac{W_{r|X}^\top k_j}{\lVert k_j \rVert}, \quad
    y_i = M_e^\top \bar e_i + M_r^\top \bar r_i + c, \quad
    S^e = \sum_i e_i \odot e_i, \quad S^r = \sum_j r_j \odot r_j,

(``phi(x)^T W = x^T W / ||x||``, the cosine feature map without an ``(N, p)`` normalized copy;
``\bar e_i`` stacks the heads' scores). ``M_e``, ``M_r`` (H s, D) are the linear maps from
the scores to the output: block-diagonal copies of the per-head ``[e; r]`` map ``W_c`` for
per-head outputs, or that map composed with the layer's output projection (one product
instead of the per-head map, the (N, H p) head outputs and the projection). ``S^e``, ``S^r``
(B, H, s) are all the KSVD objective needs from the ``(B, N, H, s)`` scores
(``e^T Lambda e`` summed over tokens is ``<lambda, S^e>``), so the scores never outlive the
forward. Backward saves ``q``, ``k``, the small weights and the per-token ``1/||q||``,
``1/||k||``, and recomputes ``e``, ``r`` (two ``(N, H p) x (H p, H s)`` products): compared
with plain autograd it keeps no score tensor, no scaled copy, no normalization buffer and no
head-output tensor alive between forward and backward.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

_EPS = 1e-12  # as F.normalize


def block_diag(w: torch.Tensor) -> torch.Tensor:
    """(B, H, p, s) per-head weights -> (B, H*p, H*s) block-diagonal matrix."""
    b, h, p, s = w.shape
    eye = torch.eye(h, dtype=w.dtype, device=w.device)  # (H, H)
    return torch.einsum("bhps,hg->bhpgs", w, eye).reshape(b, h * p, h * s)


def _diag_blocks(full: torch.Tensor, h: int, p: int, s: int) -> torch.Tensor:
    """(B, H*p, H*s) -> its (B, H, p, s) diagonal blocks (inverse of :func:`block_diag`)."""
    b = full.shape[0]
    return torch.diagonal(full.view(b, h, p, h, s), dim1=1, dim2=3).permute(0, 3, 1, 2)


def _project(x: torch.Tensor, bd: torch.Tensor) -> torch.Tensor:
    """(B, N, H*p) @ (B or 1, H*p, H*s) -> (B, N, H*s), one GEMM when the weights are shared."""
    if bd.shape[0] == 1:
        return torch.matmul(x.reshape(-1, x.shape[-1]), bd[0]).view(*x.shape[:2], bd.shape[-1])
    return torch.matmul(x, bd)


def _weight_grad(x: torch.Tensor, g: torch.Tensor, batch: int) -> torch.Tensor:
    """Gradient of :func:`_project` w.r.t. the (batch, H*p, H*s) weights."""
    if batch == 1:
        return (x.reshape(-1, x.shape[-1]).T @ g.reshape(-1, g.shape[-1])).unsqueeze(0)
    return x.transpose(1, 2) @ g


def _inverse_norms(x: torch.Tensor, mask_f: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
    """``inv = 1/max(||x||, eps)`` (0 at padding) and ``inv**2`` where unclamped, (B, N, H, 1).

    ``d inv / d x = -x inv^3``, and with ``score = raw * inv`` the chain rule through ``inv`` is
    ``-x inv^2 sum_s g_s score_s``: the backward needs ``inv**2`` (0 at padding and where the
    norm is clamped), never a division by ``inv``.
    """
    norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)  # (B, N, H, 1)
    inv = norm.clamp_min(_EPS).reciprocal_()
    if mask_f is not None:
        inv.mul_(mask_f)
    coef = (inv * inv).masked_fill_(norm <= _EPS, 0.0)
    return inv, coef


class PrimalCore(torch.autograd.Function):
    """``(q, k, we, wr, m_e, m_r, bias, mask_f, save_scores) -> (y, e_sq, r_sq)``.

    q, k : (B, N, H, p) contiguous; we, wr : (B or 1, H, p, s); m_e, m_r : (H s, D) maps of
    the stacked scores to the output; bias : (D,) or None; mask_f : (B, N, 1, 1) 0/1 float or
    None; save_scores : keep ``e``, ``r`` (2 x (B, N, H, s)) for backward (faster) or recompute
    them there (less memory). y : (B, N, D); e_sq, r_sq : (B, H, s). See the module doc.
    """

    @staticmethod
    def forward(ctx, q, k, we, wr, m_e, m_r, bias, mask_f, save_scores=True):  # noqa: D102
        b, n_tok, h, p = q.shape
        s = we.shape[-1]
        inv_q, coef_q = _inverse_norms(q, mask_f)
        inv_k, coef_k = _inverse_norms(k, mask_f)
        e = _project(q.view(b, n_tok, h * p), block_diag(we)).view(b, n_tok, h, s).mul_(inv_q)
        r = _project(k.view(b, n_tok, h * p), block_diag(wr)).view(b, n_tok, h, s).mul_(inv_k)
        e_sq = (e * e).sum(dim=1)  # (B, H, s); much faster than vector_norm over dim 1
        r_sq = (r * r).sum(dim=1)  # (B, H, s)
        if bias is None:
            y = torch.matmul(r.view(-1, h * s), m_r)  # (B N, D)
        else:
            y = torch.addmm(bias, r.view(-1, h * s), m_r)  # (B N, D)
        y.addmm_(e.view(-1, h * s), m_e)
        scores = (e, r) if save_scores else ()
        ctx.save_for_backward(q, k, we, wr, m_e, m_r, inv_q, inv_k, coef_q, coef_k, *scores)
        ctx.has_bias = bias is not None
        ctx.set_materialize_grads(False)
        return y.view(b, n_tok, -1), e_sq, r_sq

    @staticmethod
    @once_differentiable
    def backward(ctx, g_y, g_esq, g_rsq):  # noqa: D102
        q, k, we, wr, m_e, m_r, inv_q, inv_k, coef_q, coef_k, *scores = ctx.saved_tensors
        e, r = scores if scores else (None, None)
        need = ctx.needs_input_grad
        b, n_tok, h, p = q.shape
        s = we.shape[-1]
        g2 = None if g_y is None else g_y.reshape(b * n_tok, -1)  # (B N, D)
        grads = []
        sides = ((q, we, m_e, inv_q, coef_q, g_esq, need[0], need[2], need[4], e),
                 (k, wr, m_r, inv_k, coef_k, g_rsq, need[1], need[3], need[5], r))
        for x, w, m, inv, coef, g_sq, need_x, need_w, need_m, score in sides:
            if g2 is None and g_sq is None:
                grads += [None, None, None]
                continue
            bd = block_diag(w)  # (B or 1, H p, H s)
            if score is None:  # recompute e (or r): one (N, H p) x (H p, H s) product
                score = _project(x.view(b, n_tok, h * p), bd).view(b, n_tok, h, s).mul_(inv)
            gm = None
            if need_m and g2 is not None:
                gm = score.view(-1, h * s).T @ g2  # (H s, D)
            g = (torch.zeros_like(score) if g2 is None else (g2 @ m.T).view(b, n_tok, h, s))
            if g_sq is not None:
                g.addcmul_(score, g_sq.unsqueeze(1), value=2.0)  # d S / d score = 2 score
            if scores:  # saved: leave it intact (a retained graph may run backward again)
                g_inv = (score * g).sum(dim=-1, keepdim=True)  # (B, N, H, 1)
            else:  # recomputed: reuse its buffer
                g_inv = score.mul_(g).sum(dim=-1, keepdim=True)
            g_inv.mul_(coef)
            del score
            g_raw = g.mul_(inv).view(b, n_tok, h * s)  # (B, N, H s), grad of W^T x
            gx = gw = None
            if need_x:
                gx = _project(g_raw, bd.transpose(1, 2)).view(b, n_tok, h, p)
                gx.addcmul_(x, g_inv, value=-1.0)  # through 1/||x||
            if need_w:
                gw = _diag_blocks(_weight_grad(x.view(b, n_tok, h * p), g_raw, w.shape[0]),
                                  h, p, s)
            del g, g_raw  # free before the other side's buffers
            grads += [gx, gw, gm]
        g_q, g_we, g_me, g_k, g_wr, g_mr = grads
        g_b = g2.sum(0) if (need[6] and ctx.has_bias and g2 is not None) else None
        return g_q, g_k, g_we, g_wr, g_me, g_mr, g_b, None, None


__all__ = ["PrimalCore", "block_diag"]
