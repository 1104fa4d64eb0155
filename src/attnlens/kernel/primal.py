r"""Primal-Attention: self-attention as an asymmetric kernel SVD in primal form, linear in N.

Chen, Tao, Tonin, Suykens, "Primal-Attention: Self-attention through Asymmetric Kernel SVD in
Primal Representation", NeurIPS 2023 (arXiv 2305.19798).

Canonical attention scores tokens by ``score_{ij} = x_i^T W z_j`` with ``W = K Q^T`` (here
``z_j = x_j``, self-attention) and normalizes them with a softmax; the N x N matrix is an
asymmetric kernel ``kappa(x_i, x_j) = <phi_q(x_i), phi_k(x_j)>``. Its kernel SVD has the primal
form

.. math::

    \max J = \tfrac12 \sum_i e_i^\top \Lambda e_i + \tfrac12 \sum_j r_j^\top \Lambda r_j
             - \operatorname{Tr}(W_{e|X}^\top W_{r|X}),\quad
    e_i = W_{e|X}^\top \phi_q(x_i),\; r_j = W_{r|X}^\top \phi_k(x_j),

whose ``s`` projection scores ``e`` (left) and ``r`` (right) cost ``O(N s d)``; the layer
outputs ``W_o [e; r]``. At a stationary point ``J = 0`` (see :mod:`attnlens.kernel.ksvd`), so
training adds ``eta * sum_layers J^2`` (:func:`attnlens.kernel.losses.ksvd_loss`).

Feature maps are cosine: ``phi(x) = normalize(W_q x)``. Data-dependent weights are
``W_{e|X} = X'^T W_e`` with ``X'`` the ``n = min(rank_multi * rank, N)`` evenly spaced valid
tokens of the sequence (padding skipped); the causal variant uses data-independent weights and
prefix means of queries and keys, so no output depends on a later token.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from numbers import Integral, Real
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from attnlens._validation import (
    Interval,
    Options,
    Tensor,
    raise_invalid,
    validate,
    validate_params,
)
from attnlens.errors import InvalidParameterError
from attnlens.kernel._primal_core import PrimalCore

logger = logging.getLogger(__name__)

WeightSource = Literal["input", "features"]


@dataclass
class KSVDTerms:
    """What one forward leaves behind to evaluate the KSVD objective ``J``.

    e_sq, r_sq : (B, H, s) sums over tokens of the squared projection scores,
        ``S^e_{hs} = sum_i e_{ihs}^2`` (padded tokens have zero scores, so they add nothing);
        ``sum_i e_i^T Lambda_h e_i = <lambda_h, S^e_h>``, so J never needs the (B, N, H, s)
        scores themselves (:meth:`from_scores` builds the terms from them).
    we, wr : (B, H, p, s) data-dependent weights ``W_{e|X}``, ``W_{r|X}`` (or (1, H, p, s)).
    we_param, wr_param : the raw parameters (H, n or p, s).
    lam : (H, s) the diagonal of Lambda.
    mask : (B, N) bool, True at real tokens, or None when all are real.
    n_tokens : N, the sequence length (real-token counts come from ``mask``).
    """

    e_sq: torch.Tensor
    r_sq: torch.Tensor
    we: torch.Tensor
    wr: torch.Tensor
    we_param: torch.Tensor
    wr_param: torch.Tensor
    lam: torch.Tensor
    mask: torch.Tensor | None
    n_tokens: int

    @classmethod
    def from_scores(cls, e: torch.Tensor, r: torch.Tensor, we: torch.Tensor, wr: torch.Tensor,
                    we_param: torch.Tensor, wr_param: torch.Tensor, lam: torch.Tensor,
                    mask: torch.Tensor | None = None) -> KSVDTerms:
        """Terms from full (B, N, H, s) scores ``e``, ``r`` (zero at padded tokens)."""
        return cls((e * e).sum(dim=1), (r * r).sum(dim=1), we, wr, we_param, wr_param, lam,
                   mask, e.shape[1])


def _on_host(t: torch.Tensor) -> bool:
    """Whether reading ``t``'s values costs no device synchronization (a CPU tensor)."""
    return t.device.type == "cpu"


def _require(cond: torch.Tensor, message: str) -> None:
    """Raise :class:`InvalidParameterError` (``message``) unless the 0-dim bool ``cond`` holds.

    On the CPU the check is immediate. On an accelerator it is queued with
    ``torch._assert_async``, so a forward pass never waits for the device to answer (the error
    surfaces at the next synchronization instead).
    """
    if _on_host(cond):
        if not bool(cond):
            raise InvalidParameterError(message)
    else:
        torch._assert_async(cond, message)


def _check_tensor(x: object, name: str, ndim: int) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise_invalid(name, "a torch.Tensor", type(x).__name__, caller="PrimalAttention")
    if x.ndim != ndim:
        raise_invalid(name, f"a tensor with {ndim} dimensions", f"got shape {tuple(x.shape)}",
                      caller="PrimalAttention")
    if x.is_floating_point():
        finite = torch.isfinite(x.detach().sum())  # one reduction: finite sum => finite entries
        if not _on_host(x) or not bool(finite):
            finite = torch.isfinite(x.detach()).all()  # (the sum may overflow; check each)
        _require(finite,
                 f"PrimalAttention: {name} must be finite; got NaN or inf values. "
                 "Clean the input first.")
    return x


def _check_mask(mask: torch.Tensor | None, b: int, n: int) -> torch.Tensor | None:
    """Validated (B, N) bool mask, or None when every token is real.

    On an accelerator the mask is kept even when it is all True (same result; deciding would
    need a host sync).
    """
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor):
        raise_invalid("mask", f"a bool torch.Tensor of shape ({b}, {n})", type(mask).__name__,
                      caller="PrimalAttention")
    if tuple(mask.shape) != (b, n):
        raise_invalid("mask", f"of shape (batch, tokens) = ({b}, {n})",
                      f"got shape {tuple(mask.shape)}",
                      "Pass True at real tokens and False at padding.", caller="PrimalAttention")
    mask = mask.to(dtype=torch.bool)
    _require(mask.any(dim=1).all(), "PrimalAttention: mask must have a real token in every "
             "sequence; got a sequence with none. Drop empty sequences first.")
    if _on_host(mask) and bool(mask.all()):
        return None
    return mask


def prefix_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of the real tokens up to and including each position: (B, N, H, p) -> same."""
    if mask is None:
        count = torch.arange(1, x.shape[1] + 1, dtype=x.dtype, device=x.device)  # (N,)
        return torch.cumsum(x, dim=1) / count[None, :, None, None]
    m = mask[:, :, None, None].to(x.dtype)  # (B, N, 1, 1)
    csum = torch.cumsum(x * m, dim=1)  # (B, N, H, p)
    return csum / torch.cumsum(m, dim=1).clamp_min(1.0)


def sample_indices(mask: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Evenly spaced real-token indices per sequence and their 0/1 weights.

    Sequence b with ``len_b >= n`` real tokens gets ``floor(linspace(0, len_b - 1, n))``
    (positions among its real tokens); one with ``len_b < n`` gets all its tokens followed
    by ``n - len_b`` zero-weighted slots. Returns (B, n) long indices and (B, n) weights.
    """
    b, _ = mask.shape
    lengths = mask.sum(dim=1)  # (B,)
    j = torch.arange(n, device=mask.device, dtype=torch.float64)  # (n,)
    denom = max(n - 1, 1)
    full = torch.floor(j[None, :] * (lengths[:, None].double() - 1) / denom).long()  # (B, n)
    short = torch.minimum(j[None, :].long(), (lengths[:, None] - 1).clamp_min(0))  # (B, n)
    is_short = lengths[:, None] < n  # (B, 1)
    rank_pos = torch.where(is_short, short, full)  # (B, n) rank among real tokens
    weight = torch.where(is_short, (j[None, :] < lengths[:, None]).double(),
                         torch.ones(b, n, dtype=torch.float64, device=mask.device))
    order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)  # real tokens first
    idx = torch.gather(order, 1, rank_pos)  # (B, n)
    return idx, weight


def sample_tokens(src: torch.Tensor, n: int, mask: torch.Tensor | None) -> torch.Tensor:
    """The ``n`` evenly spaced real tokens ``X'`` of each sequence: (B, N, H, p) -> (B, n, H, p).

    Zero-weighted slots (sequences shorter than ``n``, see :func:`sample_indices`) are zero
    rows. ``n`` must be <= N.
    """
    b, n_tok, h, p = src.shape
    if mask is None:  # same evenly spaced tokens for every sequence
        idx = torch.floor(torch.arange(n, dtype=torch.float64) * (n_tok - 1) / max(n - 1, 1))
        return src[:, idx.long().to(src.device)]  # (B, n, H, p)
    idx, weight = sample_indices(mask, n)  # (B, n), (B, n)
    xs = torch.gather(src, 1, idx[:, :, None, None].expand(b, n, h, p))  # (B, n, H, p)
    return xs * weight[:, :, None, None].to(src.dtype)


def data_dependent_weights(
    src: torch.Tensor, w_param: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """``W_{.|X} = X'^T W`` from evenly spaced real tokens.

    src : (B, N, H, p) token representations per head; w_param : (H, n, s); mask : (B, N)
    or None. Returns (B, H, p, s). When N < n only the first N rows of ``w_param`` are used.
    """
    n = min(w_param.shape[1], src.shape[1])
    return _weights_from_tokens(sample_tokens(src, n, mask), w_param)


def _weights_from_tokens(xs: torch.Tensor, w_param: torch.Tensor) -> torch.Tensor:
    """(B, n, H, p) sampled tokens and (H, >= n, s) parameters -> (B, H, p, s)."""
    w = w_param[:, : xs.shape[1]].to(xs.dtype)  # (H, n, s)
    return torch.einsum("bnhp,hns->bhps", xs, w)  # (B, H, p, s)


def _check_weights(w: torch.Tensor, name: str, b: int, h: int, p: int) -> torch.Tensor:
    if not isinstance(w, torch.Tensor) or w.ndim not in (3, 4) or tuple(w.shape[-3:-1]) != (h, p):
        got = tuple(w.shape) if isinstance(w, torch.Tensor) else type(w).__name__
        raise ValueError(f"{name} must have shape ({b} or 1, {h}, {p}, s) or ({h}, {p}, s) "
                         f"to match q of shape (B, N, H, p); got {got}.")
    w = w if w.ndim == 4 else w.unsqueeze(0)
    if w.shape[0] not in (1, b):
        raise ValueError(f"{name} must have batch size 1 or {b}, got shape {tuple(w.shape)}.")
    return w


@validate_params({
    "we": [Tensor(ndim=(3, 4))], "wr": [Tensor(ndim=(3, 4))], "w_concat": [Tensor(ndim=2)],
    "b_concat": [Tensor(ndim=1), None], "causal": ["boolean"], "save_scores": ["boolean"],
})
def primal_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    we: torch.Tensor,
    wr: torch.Tensor,
    w_concat: torch.Tensor,
    b_concat: torch.Tensor | None = None,
    *,
    mask: torch.Tensor | None = None,
    causal: bool = False,
    save_scores: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Primal-Attention head outputs and the score statistics of the KSVD objective.

    Convention: canonical scores are ``score_{ij} = x_i^T W z_j`` with ``W = K Q^T``; here the
    kernel ``kappa(x_i, x_j) = <phi_q(x_i), phi_k(x_j)>`` replaces them and is never formed.
    ``e_i = W_{e|X}^T phi_q(x_i)``, ``r_j = W_{r|X}^T phi_k(x_j)``, output ``W_c [e; r] + b``.
    The scores themselves are not returned (see :func:`primal_scores`): the forward and
    backward run in one fused autograd function (:mod:`attnlens.kernel._primal_core`) that
    keeps ``q``, ``k``, the weights and (``save_scores=True``) the scores ``e``, ``r`` for
    backward; ``save_scores=False`` recomputes the scores there (less memory, two more
    products). Math runs in float32 (at least) under autocast.

    Parameters
    ----------
    q, k : (B, N, H, p) projected queries and keys (before the cosine feature map),
        token-major so that a (B, N, H*p) projection is viewed without a copy.
    we, wr : (B, H, p, s) or (H, p, s) projection weights ``W_{e|X}``, ``W_{r|X}``.
    w_concat, b_concat : (p_out, 2s) and (p_out,) weights of the map ``[e; r] -> output``.
    mask : (B, N) bool, True at real tokens (default all). Padded tokens get zero scores.
    causal : prefix means of q and k before the feature map (token t sees tokens <= t only).
    save_scores : keep the (B, N, H, s) scores for backward (True) or recompute them.

    Returns
    -------
    out : (B, N, H, p_out); e_sq, r_sq : (B, H, s) sums over tokens of ``e**2`` and ``r**2``
    (what :class:`KSVDTerms` needs).
    """
    q = _check_tensor(q, "q", 4)
    k = _check_tensor(k, "k", 4)
    if q.shape != k.shape:
        raise ValueError(f"q and k must share their shape, got {tuple(q.shape)} and "
                         f"{tuple(k.shape)}.")
    b, n_tok, h, p = q.shape
    we = _check_weights(we, "we", b, h, p)
    wr = _check_weights(wr, "wr", b, h, p)
    if w_concat.ndim != 2 or w_concat.shape[1] != 2 * we.shape[-1]:
        raise ValueError(f"w_concat must have shape (p_out, 2s) = (p_out, {2 * we.shape[-1]}), "
                         f"got {tuple(w_concat.shape)}.")
    mask = _check_mask(mask, b, n_tok)
    with torch.autocast(device_type=q.device.type, enabled=False):
        dtype = torch.promote_types(q.dtype, torch.float32)
        m_e, m_r, bias = head_output_maps(w_concat.to(dtype), None if b_concat is None
                                          else b_concat.to(dtype), h)
        y, e_sq, r_sq = _primal_core(q, k, we, wr, m_e, m_r, bias, mask, causal, save_scores)
        return y.view(b, n_tok, h, -1), e_sq, r_sq


def head_output_maps(
    w_concat: torch.Tensor, b_concat: torch.Tensor | None, heads: int,
    w_out: torch.Tensor | None = None, b_out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The maps ``M_e, M_r`` (H s, D) and bias (D,) from the stacked scores to the output.

    Per head ``o_h = W_c [e_h; r_h] + b_c`` (``w_concat`` (p_out, 2s)); without ``w_out`` the
    output is the heads' ``o_h`` side by side (D = H p_out, block-diagonal maps); with the
    layer's output projection ``y = W_o [o_1; ...; o_H] + b_o`` (``w_out`` (D, H p_out)) the
    maps are composed with it, ``M_e = blockdiag(W_{c,e}^T) W_o^T``, so the head outputs are
    never formed.
    """
    p_out, two_s = w_concat.shape
    s = two_s // 2
    if w_out is None:
        eye = torch.eye(heads, dtype=w_concat.dtype, device=w_concat.device)
        m_e = torch.kron(eye, w_concat[:, :s].T.contiguous())  # (H s, H p_out)
        m_r = torch.kron(eye, w_concat[:, s:].T.contiguous())
        bias = None if b_concat is None else b_concat.repeat(heads)
        return m_e, m_r, bias
    wo = w_out.view(w_out.shape[0], heads, p_out)  # (D, H, p_out)
    m_e = torch.einsum("ps,dhp->hsd", w_concat[:, :s], wo).reshape(heads * s, -1)  # (H s, D)
    m_r = torch.einsum("ps,dhp->hsd", w_concat[:, s:], wo).reshape(heads * s, -1)
    bias = b_out
    if b_concat is not None:
        via = torch.einsum("dhp,p->d", wo, b_concat)  # (D,)
        bias = via if bias is None else bias + via
    return m_e, m_r, bias


def _primal_core(q, k, we, wr, m_e, m_r, bias, mask, causal, save_scores=True):
    """Validated inputs (mask None or with padding) -> (y, e_sq, r_sq), autocast off."""
    dtype = torch.promote_types(q.dtype, torch.float32)
    q, k = q.to(dtype), k.to(dtype)
    if causal:
        q = prefix_mean(q, mask)  # (B, N, H, p)
        k = prefix_mean(k, mask)  # (B, N, H, p)
    mask_f = None if mask is None else mask[:, :, None, None].to(dtype)  # (B, N, 1, 1)
    return PrimalCore.apply(q.contiguous(), k.contiguous(), we.to(dtype), wr.to(dtype),
                            m_e.to(dtype), m_r.to(dtype),
                            None if bias is None else bias.to(dtype), mask_f, save_scores)


@validate_params({"we": [Tensor(ndim=(3, 4))], "wr": [Tensor(ndim=(3, 4))],
                  "causal": ["boolean"]})
def primal_scores(
    q: torch.Tensor,
    k: torch.Tensor,
    we: torch.Tensor,
    wr: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    causal: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The (B, N, H, s) scores ``e_i = W_{e|X}^T phi_q(x_i)``, ``r_j = W_{r|X}^T phi_k(x_j)``.

    Plain autograd, for inspection and as the reference of :func:`primal_attention`; same
    arguments as it. Padded tokens get zero scores.
    """
    q = _check_tensor(q, "q", 4)
    k = _check_tensor(k, "k", 4)
    b, n_tok, h, p = q.shape
    we = _check_weights(we, "we", b, h, p).to(q.dtype)
    wr = _check_weights(wr, "wr", b, h, p).to(q.dtype)
    mask = _check_mask(mask, b, n_tok)
    if causal:
        q, k = prefix_mean(q, mask), prefix_mean(k, mask)
    e = torch.einsum("bnhp,bhps->bnhs", F.normalize(q, dim=-1), we)  # (B, N, H, s)
    r = torch.einsum("bnhp,bhps->bnhs", F.normalize(k, dim=-1), wr)  # (B, N, H, s)
    if mask is not None:
        e = e * mask[:, :, None, None].to(e.dtype)
        r = r * mask[:, :, None, None].to(r.dtype)
    return e, r


@validate_params({"terms": [KSVDTerms], "form": [Options("sum", "mean")]})
def ksvd_objective(terms: KSVDTerms, form: Literal["sum", "mean"] = "sum") -> torch.Tensor:
    r"""The KSVD objective ``J`` of one layer, one value per sequence: (B,).

    ``form="sum"`` (the paper, eq. 4): per sequence,
    ``J = sum_h [1/2 sum_i e_i^T Lambda_h e_i + 1/2 sum_j r_j^T Lambda_h r_j
    - Tr(W_{e|X}^T W_{r|X})]``, sums over real tokens and heads; ``J = 0`` at a KSVD
    stationary point.

    ``form="mean"`` (the reference code's loss): ``1/2 mean_{h,i} ||Lambda_h e_i||^2
    + 1/2 mean_{h,j} ||Lambda_h r_j||^2 - Tr(mean_h W_e^T W_r)`` with the data-independent
    parameters in the trace and ``Lambda^2`` (not ``Lambda``) in the quadratic terms. It is a
    scaled surrogate, not zero at the stationary point; kept for reproducing the paper's runs.

    Both use the token sums ``S^e = sum_i e_i**2`` of :class:`KSVDTerms`:
    ``sum_i e_i^T Lambda_h e_i = <lambda_h, S^e_h>``.
    """
    lam = terms.lam.to(terms.e_sq.dtype)  # (H, s)
    b, h, _ = terms.e_sq.shape
    if form == "sum":
        quad_e = torch.einsum("bhs,hs->b", terms.e_sq, lam)  # (B,)
        quad_r = torch.einsum("bhs,hs->b", terms.r_sq, lam)  # (B,)
        trace = torch.einsum("bhps,bhps->b", terms.we, terms.wr)  # (B,) or (1,)
        return 0.5 * quad_e + 0.5 * quad_r - trace.expand_as(quad_e)
    if terms.mask is None:
        count = torch.full((b,), float(terms.n_tokens * h), dtype=terms.e_sq.dtype,
                           device=terms.e_sq.device)
    else:
        count = terms.mask.sum(dim=1).to(terms.e_sq.dtype) * h  # (B,)
    lam2 = lam * lam  # (H, s)
    quad_e = torch.einsum("bhs,hs->b", terms.e_sq, lam2) / count  # (B,)
    quad_r = torch.einsum("bhs,hs->b", terms.r_sq, lam2) / count  # (B,)
    trace = torch.einsum("hps,hps->", terms.we_param, terms.wr_param.to(terms.we_param.dtype))
    return 0.5 * quad_e + 0.5 * quad_r - trace / h


class PrimalAttention(nn.Module):
    """Primal-Attention layer (projections included): ``(B, N, dim) -> (B, N, dim)``.

    Convention: canonical attention scores ``score_{ij} = x_i^T W z_j`` (``W = K Q^T``);
    this layer replaces their softmax with the primal KSVD scores of the cosine kernel, at
    ``O(N)`` cost. See :func:`primal_attention` for the math.

    Parameters
    ----------
    dim : model width; must be divisible by ``heads``.
    heads : number of heads.
    rank : ``s``, number of singular directions per head.
    rank_multi : ``n = rank_multi * rank`` sampled tokens for the data-dependent weights.
    data_dependent : ``W_{e|X} = X'^T W_e`` from sampled tokens (True) or plain parameters.
    causal : autoregressive variant (prefix means; needs ``data_dependent=False``).
    weight_source : tokens ``X'`` used for the data-dependent weights: ``"input"`` (the layer
        input split per head, as in the reference code) or ``"features"`` (``phi_k`` for
        ``W_e`` and ``phi_q`` for ``W_r``, the dual-consistent choice ``W_e = Phi_k^T H_r``).
    dropout : dropout on the output.
    ksvd_form : default form of :meth:`ksvd_objective` (``"sum"`` paper, ``"mean"`` code).
    max_len : longest sequence expected; caps ``n`` at it (the official LRA code does not cap
        ``n``: it samples repeated tokens when ``N < n``; here ``n = min(n, N)`` per forward).
    save_scores : keep the (B, N, H, s) scores ``e``, ``r`` for backward (default, faster) or
        recompute them in backward (two more (N, H p) x (H p, H s) products, less memory).

    device, dtype : factory arguments of the parameters (as ``nn.Linear``'s).

    ``layer(x, mask, return_terms=True)`` returns ``(out, terms)``: the :class:`KSVDTerms` of
    that forward, from which :meth:`ksvd_objective` (or :func:`ksvd_objective`) gives the
    layer's ``J`` per sequence; the module keeps no per-batch state. Math runs in float32
    under autocast. The forward pass never waits for an accelerator (input checks on a GPU
    are asynchronous).
    """

    _parameter_constraints: ClassVar[dict[str, list]] = {
        "dim": [Interval(Integral, 1, None)],
        "heads": [Interval(Integral, 1, None)],
        "rank": [Interval(Integral, 1, None)],
        "rank_multi": [Interval(Integral, 1, None)],
        "data_dependent": ["boolean"],
        "causal": ["boolean"],
        "weight_source": [Options("input", "features")],
        "dropout": [Interval(Real, 0.0, 1.0, closed="left")],
        "ksvd_form": [Options("sum", "mean")],
        "bias": ["boolean"],
        "max_len": [Interval(Integral, 1, None), None],
        "save_scores": ["boolean"],
    }

    def __init__(
        self,
        dim: int,
        heads: int,
        rank: int,
        *,
        rank_multi: int = 10,
        data_dependent: bool = True,
        causal: bool = False,
        weight_source: WeightSource = "input",
        dropout: float = 0.0,
        ksvd_form: Literal["sum", "mean"] = "sum",
        bias: bool = True,
        max_len: int | None = None,
        save_scores: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        validate(self._parameter_constraints, locals(), "PrimalAttention")
        dim, heads, rank, rank_multi = int(dim), int(heads), int(rank), int(rank_multi)
        if dim % heads:
            raise_invalid("heads", f"a divisor of dim={dim}", heads,
                          f"Try heads in {[h for h in range(1, min(dim, 16) + 1) if dim % h == 0]}.",
                          caller="PrimalAttention")
        if causal and data_dependent:
            raise_invalid("data_dependent", "False when causal=True", data_dependent,
                          "Weights sampled across the sequence would let every output see later "
                          "tokens. Pass data_dependent=False.", caller="PrimalAttention")
        self.dim, self.heads, self.rank = dim, heads, rank
        self.head_dim = dim // heads
        self.n_samples = rank_multi * rank
        if max_len is not None:
            self.n_samples = min(self.n_samples, int(max_len))
        self.data_dependent, self.causal = bool(data_dependent), bool(causal)
        self.weight_source = weight_source
        self.ksvd_form = ksvd_form
        self.save_scores = bool(save_scores)
        rows = self.n_samples if data_dependent else self.head_dim
        self.q_proj = nn.Linear(dim, dim, bias=bias, **factory)
        self.k_proj = nn.Linear(dim, dim, bias=bias, **factory)
        self.we = nn.Parameter(nn.init.orthogonal_(torch.empty(heads, rows, rank, **factory)))
        self.wr = nn.Parameter(nn.init.orthogonal_(torch.empty(heads, rows, rank, **factory)))
        self.lam = nn.Parameter(nn.init.uniform_(torch.empty(heads, rank, **factory)))
        self.concat = nn.Linear(2 * rank, self.head_dim, bias=bias, **factory)
        self.out_proj = nn.Linear(dim, dim, bias=bias, **factory)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, return_terms: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, KSVDTerms]:
        """x : (B, N, dim); mask : (B, N) bool, True at real tokens. Returns (B, N, dim).

        With ``return_terms=True`` returns ``(out, terms)``, ``terms`` the :class:`KSVDTerms`
        of this forward (for :meth:`ksvd_objective` / :func:`attnlens.kernel.ksvd_loss`).
        """
        x = _check_tensor(x, "x", 3)
        if x.shape[-1] != self.dim:
            raise ValueError(f"x must have last dimension dim={self.dim}, got shape "
                             f"{tuple(x.shape)}.")
        b, n_tok, _ = x.shape
        mask = _check_mask(mask, b, n_tok)
        dtype = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = x.to(dtype)
            h, p = self.heads, self.head_dim
            q = self.q_proj(x).view(b, n_tok, h, p)  # (B, N, H, p)
            k = self.k_proj(x).view(b, n_tok, h, p)  # (B, N, H, p)
            if self.data_dependent:
                n = min(self.n_samples, n_tok)
                if self.weight_source == "input":  # one gather serves W_e and W_r
                    xs = sample_tokens(x.view(b, n_tok, h, p), n, mask)  # (B, n, H, p)
                    xs_e = xs_r = xs
                else:  # phi_k for W_e, phi_q for W_r, normalized after sampling
                    xs_e = F.normalize(sample_tokens(k, n, mask), dim=-1)  # (B, n, H, p)
                    xs_r = F.normalize(sample_tokens(q, n, mask), dim=-1)  # (B, n, H, p)
                we = _weights_from_tokens(xs_e, self.we)  # (B, H, p, s)
                wr = _weights_from_tokens(xs_r, self.wr)  # (B, H, p, s)
            else:
                we = self.we.to(dtype).unsqueeze(0)  # (1, H, p, s)
                wr = self.wr.to(dtype).unsqueeze(0)  # (1, H, p, s)
            # the [e; r] map and the output projection composed: (H s, dim) maps, no head outputs
            m_e, m_r, bias = head_output_maps(self.concat.weight, self.concat.bias, h,
                                              self.out_proj.weight, self.out_proj.bias)
            out, e_sq, r_sq = _primal_core(
                q, k, we, wr, m_e, m_r, bias, mask, self.causal, self.save_scores
            )  # (B, N, dim), (B, H, s), (B, H, s)
            out = self.dropout(out)  # (B, N, dim)
        if not return_terms:
            return out
        return out, KSVDTerms(e_sq, r_sq, we, wr, self.we, self.wr, self.lam, mask, n_tok)

    def ksvd_objective(
        self, terms: KSVDTerms, form: Literal["sum", "mean"] | None = None
    ) -> torch.Tensor:
        """``J`` of one forward's ``terms``, one value per sequence (B,), in this layer's
        default form; see :func:`ksvd_objective`."""
        if not isinstance(terms, KSVDTerms):
            raise_invalid("terms", "the KSVDTerms of a forward pass", type(terms).__name__,
                          "Call layer(x, mask, return_terms=True) and pass its second output.",
                          caller="PrimalAttention.ksvd_objective")
        return ksvd_objective(terms, form or self.ksvd_form)

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, heads={self.heads}, rank={self.rank}, n={self.n_samples}, "
                f"data_dependent={self.data_dependent}, causal={self.causal}")


@validate_params({"q": [Tensor(ndim=(2, 3, 4))], "k": [Tensor(ndim=(2, 3, 4))]})
def cosine_kernel_matrix(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """The asymmetric kernel ``K_ij = <phi_q(x_i), phi_k(x_j)>``: (..., N, p) -> (..., N, N)."""
    return torch.matmul(F.normalize(q, dim=-1), F.normalize(k, dim=-1).transpose(-1, -2))


__all__ = [
    "KSVDTerms",
    "PrimalAttention",
    "cosine_kernel_matrix",
    "data_dependent_weights",
    "head_output_maps",
    "ksvd_objective",
    "prefix_mean",
    "primal_attention",
    "primal_scores",
    "sample_indices",
    "sample_tokens",
]
