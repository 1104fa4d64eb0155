r"""The fused Primal-Attention core: a ``torch.autograd.Function`` that saves only its inputs.

Chen, Tao, Tonin, Suykens, NeurIPS 2023 (arXiv 2305.19798), eqs. 4-6. Per head ``h``,

.. math::

    e_i = \frac{W_{e|X}^\top q_i}{\lVert q_i \rVert}, \quad
    r_j = \frac{W_{r|X}^\top k_j}{\lVert k_j \rVert}, \quad
    o_i = W_c [e_i; r_i] + b, \quad
    S^e = \sum_i e_i \odot e_i, \quad S^r = \sum_j r_j \odot r_j,

(``phi(x)^T W = x^T W / ||x||``, the cosine feature map without an ``(N, p)`` normalized copy).
``S^e``, ``S^r`` (B, H, s) are all the KSVD objective needs from the ``(B, N, H, s)`` scores
(``e^T Lambda e`` summed over tokens is ``<lambda, S^e>``), so the scores never outlive the
forward. Backward saves ``q``, ``k``, the small weights and the per-token ``1/||q||``,
``1/||k||``, and recomputes ``e``, ``r`` (two ``(N, H p) x (H p, H s)`` products): compared
with plain autograd it keeps no score tensor, no scaled copy and no normalization buffer alive
between forward and backward.
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
    coef = torch.where(norm > _EPS, inv * inv, torch.zeros_like(inv))
    return inv, coef


class PrimalCore(torch.autograd.Function):
    """``(q, k, we, wr, w_concat, b_concat, mask_f) -> (out, e_sq, r_sq)``; see the module doc.

    q, k : (B, N, H, p) contiguous; we, wr : (B or 1, H, p, s); w_concat : (p_out, 2s);
    b_concat : (p_out,) or None; mask_f : (B, N, 1, 1) 0/1 float or None.
    out : (B, N, H, p_out); e_sq, r_sq : (B, H, s).
    """

    @staticmethod
    def forward(ctx, q, k, we, wr, w_concat, b_concat, mask_f):  # noqa: D102
        b, n_tok, h, p = q.shape
        s = we.shape[-1]
        p_out = w_concat.shape[0]
        inv_q, coef_q = _inverse_norms(q, mask_f)
        inv_k, coef_k = _inverse_norms(k, mask_f)
        e = _project(q.view(b, n_tok, h * p), block_diag(we)).view(b, n_tok, h, s).mul_(inv_q)
        r = _project(k.view(b, n_tok, h * p), block_diag(wr)).view(b, n_tok, h, s).mul_(inv_k)
        e_sq = torch.linalg.vector_norm(e, dim=1).square_()  # (B, H, s)
        r_sq = torch.linalg.vector_norm(r, dim=1).square_()  # (B, H, s)
        wc_t = w_concat.T  # (2s, p_out)
        if b_concat is None:
            out = torch.matmul(r.view(-1, s), wc_t[s:])  # (B N H, p_out)
        else:
            out = torch.addmm(b_concat, r.view(-1, s), wc_t[s:])  # (B N H, p_out)
        out.addmm_(e.view(-1, s), wc_t[:s])
        ctx.save_for_backward(q, k, we, wr, w_concat, inv_q, inv_k, coef_q, coef_k)
        ctx.has_bias = b_concat is not None
        ctx.set_materialize_grads(False)
        return out.view(b, n_tok, h, p_out), e_sq, r_sq

    @staticmethod
    @once_differentiable
    def backward(ctx, g_out, g_esq, g_rsq):  # noqa: D102
        q, k, we, wr, w_concat, inv_q, inv_k, coef_q, coef_k = ctx.saved_tensors
        need = ctx.needs_input_grad
        b, n_tok, h, p = q.shape
        s = we.shape[-1]
        p_out = w_concat.shape[0]
        g2 = None if g_out is None else g_out.reshape(-1, p_out)  # (B N H, p_out)
        grads, wc_grads = [], []
        sides = ((q, we, inv_q, coef_q, g_esq, w_concat[:, :s], need[0], need[2]),
                 (k, wr, inv_k, coef_k, g_rsq, w_concat[:, s:], need[1], need[3]))
        for x, w, inv, coef, g_sq, wc, need_x, need_w in sides:
            if g2 is None and g_sq is None:
                grads += [None, None]
                wc_grads.append(torch.zeros_like(wc))
                continue
            bd = block_diag(w)  # (B or 1, H p, H s)
            score = _project(x.view(b, n_tok, h * p), bd).view(b, n_tok, h, s).mul_(inv)
            wc_grads.append(torch.zeros_like(wc) if g2 is None else g2.T @ score.view(-1, s))
            g = (torch.zeros_like(score) if g2 is None else (g2 @ wc).view(b, n_tok, h, s))
            if g_sq is not None:
                g.addcmul_(score, g_sq.unsqueeze(1), value=2.0)  # d S / d score = 2 score
            g_inv = score.mul_(g).sum(dim=-1, keepdim=True).mul_(coef)  # (B, N, H, 1)
            del score  # buffer reused in place above: scores, then g * scores
            g_raw = g.mul_(inv).view(b, n_tok, h * s)  # (B, N, H s), grad of W^T x
            gx = gw = None
            if need_x:
                gx = _project(g_raw, bd.transpose(1, 2)).view(b, n_tok, h, p)
                gx.addcmul_(x, g_inv, value=-1.0)  # through 1/||x||
            if need_w:
                gw = _diag_blocks(_weight_grad(x.view(b, n_tok, h * p), g_raw, w.shape[0]),
                                  h, p, s)
            del g, g_raw  # free before the other side's buffers
            grads += [gx, gw]
        g_q, g_we, g_k, g_wr = grads
        g_wc = torch.cat(wc_grads, dim=1) if need[4] else None
        g_b = g2.sum(0) if (need[5] and ctx.has_bias and g2 is not None) else None
        return g_q, g_k, g_we, g_wr, g_wc, g_b, None


__all__ = ["PrimalCore", "block_diag"]
